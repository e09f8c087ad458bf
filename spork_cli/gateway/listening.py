"""With ``--workers N``, readiness waits for every worker to listen.

Each worker, once its request listener is bound, leaves a marker named after its pid in the
directory the supervisor shares with its workers (the metrics snapshots' one). The supervisor's
``/health/ready`` counts the markers of workers still alive and answers 503 ``starting`` until
there are N, so a load balancer sends nothing before the port is really served.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

from spork_cli.gateway.metrics import MULTIPROCESS_ENV, process_alive

# Set on the supervisor's app: how many workers must listen before it is ready.
WORKERS = web.AppKey("spork.workers", int)
SUFFIX = ".listening"


def shared_directory() -> Path | None:
    found = os.environ.get(MULTIPROCESS_ENV)
    return Path(found) if found else None


def mark_listening() -> None:
    """A worker's request listener is bound (nothing to do outside ``--workers``)."""
    directory = shared_directory()
    if directory is not None:
        (directory / f"{os.getpid()}{SUFFIX}").touch()


def listening() -> int:
    """How many live workers have said they listen."""
    directory = shared_directory()
    if directory is None:
        return 0
    count = 0
    for marker in directory.glob(f"*{SUFFIX}"):
        pid = marker.name.removesuffix(SUFFIX)
        if pid.isdigit() and process_alive(int(pid)):
            count += 1
    return count
