"""What `spork serve` checks as it starts: that each service endpoint accepts a TCP connection
and that the state store answers (connection, login, one command). Each failure is one warning
naming the thing and why; none stops the gateway. Endpoints are then left to health checks,
passive ejection and retries as always, the store to ``state.on_error`` (its outage tracker
reports when it answers again). All checks run at once, each bounded by `CHECK_TIMEOUT`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import structlog
from aiohttp import web
from yarl import URL

from spork_cli.config.model import GatewayConfig
from spork_cli.config.redact import redact_url
from spork_cli.gateway.keys import TABLE
from spork_cli.health import seconds
from spork_cli.state import StateStore
from spork_cli.state.diagnose import CHECK_TIMEOUT, check
from spork_cli.state.outage import StateOutage

log = structlog.get_logger("spork.serve")


async def endpoint_problem(url: str, timeout: float = CHECK_TIMEOUT) -> str | None:
    """None when ``url``'s host accepts a TCP connection within ``timeout``; else why not."""
    target = URL(url)
    host, port = target.host or "", target.port
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"no connection within {seconds(timeout)}"
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror or exc}"
    except OSError as exc:
        # asyncio words a refusal "Connect call failed ('127.0.0.1', 1)"; errno says it plainly.
        if exc.errno:
            return os.strerror(exc.errno).lower()
        return " ".join(str(exc).split()) or type(exc).__name__
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def _endpoint(service: str, url: str) -> None:
    problem = await endpoint_problem(url)
    if problem is not None:
        log.warning(
            f"service endpoint unreachable: {problem}", service=service, endpoint=redact_url(url)
        )


async def _store(store: StateStore, outage: StateOutage) -> None:
    problem = await check(store)
    if problem is not None:
        outage.began(problem)  # its line says so, and it reports when the store is back


async def check_reachable(
    config: GatewayConfig, store: StateStore | None, outage: StateOutage | None
) -> None:
    """Try every endpoint of every service, and the store unless it is process memory; one
    warning per thing that cannot be reached."""
    checks = [
        _endpoint(service.name, url)
        for service in config.services
        for url in dict.fromkeys(endpoint.url for endpoint in service.endpoints)
    ]
    if store is not None and outage is not None and store.backend != "memory":
        checks.append(_store(store, outage))
    await asyncio.gather(*checks)


# How long start-up waits for the checks before it says it is serving: loopback answers are
# in by then; a slow one is reported when it comes, without holding up readiness.
REPORT_WAIT = 0.25


def start_checks(gateway: web.Application) -> asyncio.Task[None]:
    """The checks for ``gateway`` (set up: its table compiled), running in the background."""

    holder = gateway[TABLE]
    resources = holder.resources
    work = check_reachable(holder.current.config, resources.store, resources.outage)
    return asyncio.get_running_loop().create_task(work, name="start-up checks")


async def stop_checks(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
