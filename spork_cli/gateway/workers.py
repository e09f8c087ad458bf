"""`--workers N`: N processes share the port (SO_REUSEPORT), each reloading on its own.

The supervisor serves the admin listener and the demo service itself, and keeps a table of
its own (never bound to the request port) so health checks and reload results show there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from aiohttp import web

from spork_cli.config.model import GatewayConfig
from spork_cli.demo import start_demo
from spork_cli.gateway.admin import build_admin_app
from spork_cli.gateway.app import build_app
from spork_cli.gateway.heartbeat import SUPERVISOR_ENV
from spork_cli.gateway.keys import INSTANCE, RELOADER, TABLE, WORKERS
from spork_cli.gateway.metrics import MULTIPROCESS_ENV
from spork_cli.gateway.protocol import GatewayRunner
from spork_cli.gateway.server import _listen_error, _start_site
from spork_cli.gateway.startup import start_checks, stop_checks
from spork_cli.state.served import SOCKET_ENV, StoreServer

log = structlog.get_logger("spork.workers")

RESTARTS_PER_MINUTE = 5
START_GRACE = 10.0  # a worker failing with exit 2 this soon cannot start at all


def worker_command(
    config_file: Path, host: str | None, port: int | None, watch: bool, workers: int
) -> list[str]:
    # --workers too: a worker knows it has siblings (a reload that would give it state of its
    # own is refused in every worker, as in the supervisor).
    command = [sys.executable, "-m", "spork_cli", "serve", "-c", str(config_file), "--worker"]
    command += ["--workers", str(workers)]
    if host is not None:
        command += ["--host", host]
    if port is not None:
        command += ["--port", str(port)]
    if not watch:
        command.append("--no-reload")
    return command


def supervise(
    config: GatewayConfig,
    config_file: Path,
    host: str | None,
    port: int | None,
    watch: bool,
    prepare: Callable[[GatewayConfig], GatewayConfig] | None = None,
) -> None:
    _check_port(config.server.host, config.server.port)

    # Every worker writes its metrics snapshot here (inherited through the environment); the
    # supervisor's /metrics adds them up.
    with tempfile.TemporaryDirectory(prefix="spork-metrics-") as directory:
        os.environ[MULTIPROCESS_ENV] = directory
        try:
            code = asyncio.run(_supervise(config, config_file, host, port, watch, prepare))
        finally:
            os.environ.pop(MULTIPROCESS_ENV, None)
    if code:
        raise SystemExit(code)


def _check_port(host: str, port: int) -> None:
    """Fail before starting N workers that would each fail to bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise _listen_error("requests", host, port, exc) from exc


async def _supervise(
    config: GatewayConfig,
    config_file: Path,
    host: str | None,
    port: int | None,
    watch: bool,
    prepare: Callable[[GatewayConfig], GatewayConfig] | None,
) -> int:
    """Run the workers until SIGTERM/SIGINT; the exit code to end with."""

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    command = worker_command(config_file, host, port, watch, config.server.workers)
    children: list[asyncio.subprocess.Process] = []
    started: dict[int, float] = {}
    runners: list[web.AppRunner] = []
    checks: asyncio.Task[None] | None = None
    code = 0

    env = dict(os.environ)
    served: StoreServer | None = None

    async def spawn() -> asyncio.subprocess.Process:
        child = await asyncio.create_subprocess_exec(*command, env=env)
        started[child.pid] = time.monotonic()
        return child

    try:
        if config.demo.enabled:
            runners.append(await start_demo(config.demo.host, config.demo.port))
        # Not a serving instance: the workers serve, and write the metrics it adds up.
        shadow_app = build_app(config, config_file, watch=watch, prepare=prepare, snapshots=False)
        shadow_app[WORKERS] = config.server.workers  # ready once that many listen
        shadow = web.AppRunner(shadow_app, handle_signals=False)
        await shadow.setup()
        runners.insert(0, shadow)
        checks = start_checks(shadow_app)  # once here, not in every worker
        store = shadow_app[TABLE].resources.store
        if store is not None and store.backend == "memory":
            # The workers' one memory store: this process holds it, they call it.
            path = str(Path(os.environ[MULTIPROCESS_ENV]) / "state.sock")
            served = StoreServer(store, path, children_only=True)
            await served.start()
            env[SOCKET_ENV] = served.path
        env[SUPERVISOR_ENV] = shadow_app[INSTANCE]
        if config.admin.enabled:
            token = config.admin.token.get_secret_value() if config.admin.token else None
            admin = GatewayRunner(
                build_admin_app(shadow_app[TABLE], token, workers=config.server.workers),
                access_log=None,
            )
            await admin.setup()
            runners.insert(0, admin)
            await _start_site(admin, "the admin API", config.admin.host, config.admin.port)

        def on_hup() -> None:
            for child in children:
                if child.returncode is None:
                    child.send_signal(signal.SIGHUP)
            reloader = shadow_app.get(RELOADER)
            if reloader is not None:
                reloader.spawn(reloader.reload("SIGHUP"))

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        for _ in range(config.server.workers):
            children.append(await spawn())
        log.info("supervising workers", workers=len(children), pids=[c.pid for c in children])
        restarts: list[float] = []
        while not stop.is_set():
            waits = [asyncio.create_task(c.wait()) for c in children]
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([*waits, stopper], return_when="FIRST_COMPLETED")
            for task in (*waits, stopper):
                if task not in done:
                    task.cancel()
            if stop.is_set():
                break
            for i, child in enumerate(children):
                if child.returncode is None:
                    continue
                now = time.monotonic()
                if child.returncode == 2 and now - started.pop(child.pid, now) < START_GRACE:
                    log.error("a worker could not start; stopping", code=child.returncode)
                    code = 2
                    stop.set()
                    break
                restarts = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > RESTARTS_PER_MINUTE:
                    log.error("workers keep dying; giving up", code=child.returncode)
                    code = 1
                    stop.set()
                    break
                log.warning("worker exited; starting another", code=child.returncode)
                children[i] = await spawn()
    finally:
        await stop_checks(checks)
        try:
            loop.remove_signal_handler(signal.SIGHUP)
        except (NotImplementedError, RuntimeError):
            pass
        for child in children:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        deadline = config.server.timeouts.shutdown + 5
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), deadline)
            except TimeoutError:
                child.kill()
                await child.wait()
        if served is not None:
            await served.close()
        for runner in runners:
            await runner.cleanup()
    return code
