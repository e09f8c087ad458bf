"""Graceful shutdown: SIGTERM/SIGINT stop accepting, let in-flight requests finish, exit 0."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import StartSpork
from tests.support import (
    SporkServer,
    Upstream,
    eventually,
    free_ports,
    gateway_toml,
    refuses,
)


async def start_gateway(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, server_extra: str = ""
) -> SporkServer:
    """`spork serve` with every path routed to ``upstream``."""
    port, admin_port = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(
        gateway_toml(port, admin_port, {"up": upstream.url}, {"/": "up"}, server_extra=server_extra)
    )
    return await spork_server(config, port, admin_port)


async def slow_request_in_flight(
    http: aiohttp.ClientSession, url: str, upstream: Upstream, ms: int
) -> asyncio.Task[tuple[int, bytes]]:
    """Start GET /slow?ms=... through the gateway; return once the upstream has it."""

    async def fetch() -> tuple[int, bytes]:
        async with http.get(f"{url}/slow?ms={ms}") as response:
            return response.status, await response.read()

    task = asyncio.create_task(fetch())
    await eventually(
        lambda: any(r.path == "/slow" for r in upstream.requests) or task.done(),
        what="the slow request reaching the upstream",
    )
    assert not task.done(), task
    return task


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_drains_in_flight_requests_then_exits_0(
    tmp_path: Path,
    upstream: Upstream,
    spork_server: StartSpork,
    http: aiohttp.ClientSession,
    sig: signal.Signals,
) -> None:
    server = await start_gateway(tmp_path, upstream, spork_server)
    # An idle keep-alive connection must not hold the exit up.
    async with http.get(f"{server.url}/warm") as warm:
        assert warm.status == 200

    slow = await slow_request_in_flight(http, server.url, upstream, 1500)
    signalled = time.monotonic()
    server.send(sig)

    await eventually(lambda: refuses(server.port), timeout=1.0, what="new connections refused")
    assert not slow.done(), "the slow request ended before the listener closed"
    status, body = await slow
    assert status == 200
    assert orjson.loads(body)["path"] == "/slow"

    assert await server.wait(timeout=10) == 0, server.output()
    assert time.monotonic() - signalled < 5, "the exit waited for more than the slow request"
    assert await refuses(server.port)
    assert await refuses(server.admin_port)
    assert server.events("shutting down: draining in-flight requests")
    assert "Traceback" not in server.output()


@pytest.mark.observes("server.timeouts.shutdown")
async def test_drain_is_bounded_by_the_shutdown_timeout(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(
        tmp_path, upstream, spork_server, '[server.timeouts]\nshutdown = "500ms"'
    )

    slow = await slow_request_in_flight(http, server.url, upstream, 30_000)
    signalled = time.monotonic()
    server.send(signal.SIGTERM)

    assert await server.wait(timeout=10) == 0, server.output()
    assert time.monotonic() - signalled < 4
    # The request that outlived the drain is cut off, not answered.
    with pytest.raises(aiohttp.ClientError):
        await slow
    assert await refuses(server.port)
