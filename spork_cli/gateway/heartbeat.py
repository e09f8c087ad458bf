"""Each running gateway announces itself in the state store, so `spork instances` can list
every instance sharing it. An entry lives three beats; a stopped gateway removes nothing and
simply ages out."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from spork_cli import __version__
from spork_cli.errors import StateError
from spork_cli.gateway.keys import INSTANCE, TABLE, WORKERS

BEAT = 5.0
# A worker of `spork serve --workers N` names its supervisor's instance id here.
SUPERVISOR_ENV = "SPORK_SUPERVISOR"


def instance_info(app: web.Application, started: float) -> bytes:

    holder = app[TABLE]
    config = holder.current.config
    return orjson.dumps(
        {
            "id": app[INSTANCE],
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "listen": f"{config.server.host}:{config.server.port}",
            "admin": f"{config.admin.host}:{config.admin.port}" if config.admin.enabled else None,
            "version": __version__,
            "started": started,
            "seen": time.time(),
            "routes": len(holder.current.routes),
            "config": str(holder.config_file) if holder.config_file else None,
            # The supervisor of --workers N says how many it runs; each worker names it.
            "workers": app.get(WORKERS),
            "supervisor": os.environ.get(SUPERVISOR_ENV),
        }
    )


async def heartbeat_ctx(app: web.Application) -> AsyncIterator[None]:

    app[INSTANCE] = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    started = time.time()

    async def beat() -> None:
        while True:
            resources = app[TABLE].resources
            if resources.store is not None:
                try:
                    info = instance_info(app, started)
                    await resources.store.heartbeat(app[INSTANCE], info, BEAT * 3)
                except StateError as exc:
                    if resources.outage is not None:
                        resources.outage.failed("heartbeat", exc)
            await asyncio.sleep(BEAT)

    task = asyncio.create_task(beat(), name="heartbeat")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
