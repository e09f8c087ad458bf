"""Running the gateway as a process: listeners, the demo service, signals, graceful drain."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
from collections.abc import Callable
from pathlib import Path

import structlog
from aiohttp import web

from spork_cli.config.model import GatewayConfig
from spork_cli.demo import start_demo
from spork_cli.errors import SporkError, UsageError
from spork_cli.gateway.accesslog import AccessLog
from spork_cli.gateway.admin import build_admin_app
from spork_cli.gateway.app import build_app
from spork_cli.gateway.bounds import Bounds
from spork_cli.gateway.keys import TABLE
from spork_cli.gateway.listening import mark_listening, unmark_listening
from spork_cli.gateway.protocol import GatewayRunner
from spork_cli.gateway.startup import REPORT_WAIT, start_checks, stop_checks

log = structlog.get_logger("spork.serve")


def _listen_error(what: str, host: str, port: int, exc: OSError) -> UsageError:
    if exc.errno == errno.EADDRINUSE:
        reason = "the address is already in use"
    elif exc.errno == errno.EACCES:
        reason = "permission denied"
    else:
        reason = exc.strerror or str(exc)
    return UsageError(f"cannot listen for {what} on {host}:{port}: {reason}")


async def _start_site(
    runner: web.AppRunner,
    what: str,
    host: str,
    port: int,
    reuse_port: bool = False,
    shutdown_timeout: float = 30.0,
) -> None:
    site = web.TCPSite(
        runner,
        host,
        port,
        reuse_port=reuse_port or None,
        backlog=1024,
        shutdown_timeout=shutdown_timeout,
    )
    try:
        await site.start()
    except OSError as exc:
        raise _listen_error(what, host, port, exc) from exc


async def run(
    config: GatewayConfig,
    config_file: Path,
    *,
    watch: bool = True,
    worker: bool = False,
    serve_admin: bool = True,
    serve_demo: bool = True,
    prepare: Callable[[GatewayConfig], GatewayConfig] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight requests and close everything."""

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    drain = config.server.timeouts.shutdown
    demo: web.AppRunner | None = None
    gateway: web.AppRunner | None = None
    admin: web.AppRunner | None = None
    checks: asyncio.Task[None] | None = None
    try:
        if serve_demo and config.demo.enabled:
            demo = await start_demo(config.demo.host, config.demo.port)
        console = {"json": False, "console": True}.get(config.logging.format)
        app = build_app(
            config,
            config_file,
            watch=watch,
            access_log=AccessLog(console=console),
            prepare=prepare,
        )
        gateway = GatewayRunner(
            app,
            bounds=Bounds.of(config.server),
            access_log=None,
            shutdown_timeout=drain,
            keepalive_timeout=config.server.timeouts.keepalive,
            handle_signals=False,
        )
        try:
            await gateway.setup()
        except SporkError as exc:
            raise UsageError(f"cannot start: {exc.message}") from exc
        if not worker:  # with --workers N the supervisor checks, once
            checks = start_checks(app)
        _descriptors_for(config.server.max_connections)
        await _start_site(
            gateway,
            "requests",
            config.server.host,
            config.server.port,
            reuse_port=worker,
            shutdown_timeout=drain,
        )
        if worker:
            mark_listening()  # the supervisor's readiness counts it
        admin_url = None
        if serve_admin and config.admin.enabled:
            token = config.admin.token.get_secret_value() if config.admin.token else None
            # Its own errors (a malformed request) are problem+json without aiohttp's Server.
            admin = GatewayRunner(
                build_admin_app(app[TABLE], token), access_log=None, shutdown_timeout=1
            )
            await admin.setup()
            await _start_site(admin, "the admin API", config.admin.host, config.admin.port)
            admin_url = f"http://{_host(config.admin.host)}:{config.admin.port}"
        if checks is not None:
            await asyncio.wait([checks], timeout=REPORT_WAIT)
        log.info(
            "spork is serving",
            url=f"http://{_host(config.server.host)}:{config.server.port}",
            admin=admin_url,
            routes=len(config.routes),
            pid=os.getpid(),
        )
        orphan = asyncio.create_task(_stop_when_orphaned(stop)) if worker else None
        await stop.wait()
        if orphan is not None:
            orphan.cancel()
        if worker:
            unmark_listening()  # draining: no longer counted as serving
        log.info("shutting down: draining in-flight requests", timeout=drain)
    finally:
        await stop_checks(checks)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        # The gateway first, so its in-flight requests can still reach the demo service.
        for runner in (gateway, admin, demo):
            if runner is not None:
                await runner.cleanup()


# Descriptors beyond two per client connection (it and its upstream one): the listeners, the
# state store, log and config files, the connections being refused.
SPARE_DESCRIPTORS = 512


def _descriptors_for(connections: int) -> None:
    """Raise the soft limit on open files toward what ``max_connections`` needs (as Go and
    nginx's worker_rlimit_nofile do), and say so when the hard limit stops short of it."""
    import resource

    want = 2 * connections + SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    ceiling = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if ceiling > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        except (ValueError, OSError):
            ceiling = soft
    if ceiling < want:
        log.warning(
            "the open-file limit is below what server.max_connections needs",
            max_connections=connections,
            limit=ceiling,
            needed=want,
        )


ORPHAN_CHECK = 1.0  # seconds between a worker's looks at whether its supervisor is alive


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    """A worker whose supervisor died drains and exits, rather than keep the port without the
    admin listener, the health checks and (with memory state) the store it shared."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(ORPHAN_CHECK)  # polling the parent: there is no event to await
    log.error("the supervisor is gone; this worker stops", supervisor=parent)
    stop.set()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def install_loop() -> None:
    """uvloop when the `fast` extra is installed."""
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()
