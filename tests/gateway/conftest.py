"""Helpers for gateway tests: configs, a gateway behind `aiohttp_client`, and `stub`.

`tests.support.Upstream` is the upstream of these tests (failing, streaming, event streams,
chosen response headers); `stub` serves an app a test builds when what it checks is the app's
own protocol behaviour (a WebSocket that closes, a body sent compressed, bytes kept as they
arrived) that no option of the echo server should grow into.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.app import build_app
from spork_cli.gateway.keys import TABLE
from spork_cli.gateway.upstream import ServicePool
from tests.support import LOOPBACK, assert_problem, eventually, serve_app

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]
Gateway = Callable[[dict[str, Any]], Awaitable[Client]]


def config_of(data: dict[str, Any]) -> GatewayConfig:
    """A validated config; the admin listener and access log are off in tests."""
    data = dict(data)
    data.setdefault("admin", {"enabled": False})
    data.setdefault("logging", {"access_log": False})
    return GatewayConfig.model_validate(data)


def single_service(
    *urls: str,
    route: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    **service: Any,
) -> dict[str, Any]:
    """Config data for one service `svc` behind one route (`/` unless `route` says otherwise)."""
    route_data = {"path": "/", "service": "svc", **(route or {})}
    data: dict[str, Any] = {
        "services": [{"name": "svc", "endpoints": list(urls), **service}],
        "routes": [route_data],
    }
    if server is not None:
        data["server"] = server
    return data


@pytest.fixture
def gateway(aiohttp_client: ClientFactory) -> Gateway:
    """`await gateway(data)` serves `build_app` of that config on loopback and returns a client."""

    async def start(data: dict[str, Any]) -> Client:
        return await aiohttp_client(build_app(config_of(data)))

    return start


def pool_of(client: Client, service: str = "svc") -> ServicePool:
    return client.app[TABLE].current.pools[service]


async def json_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(await response.read())
    return data


expect_problem = assert_problem  # the name these tests know it by


async def wait_until(
    condition: Callable[[], bool], timeout: float = 5.0, message: str = "condition"
) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    await eventually(condition, timeout=timeout, what=message)


# --- small upstream apps -----------------------------------------------------------------------


@dataclass
class Stub:
    """A real server on loopback for an app built by the test; stop and start on the same port.

    Counts requests and names itself in `X-Upstream`, as `Upstream` does."""

    app: web.Application
    name: str
    host: str = LOOPBACK
    port: int = 0
    paths: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def hits(self) -> int:
        """Requests seen, active health probes left out."""
        return sum(1 for path in self.paths if path != "/health")

    async def start(self) -> None:
        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            self.paths.append(request.path)
            response: web.StreamResponse = await handler(request)
            response.headers["X-Upstream"] = self.name
            return response

        self.app.middlewares.append(count)
        self._runner, self.port = await serve_app(self.app, self.host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


StubFactory = Callable[[web.Application, str], Awaitable[Stub]]


@pytest.fixture
async def stub() -> AsyncIterator[StubFactory]:
    """`await stub(app, name)` serves `app` on a loopback port until the test ends."""
    started: list[Stub] = []

    async def start(app: web.Application, name: str) -> Stub:
        server = Stub(app, name)
        await server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            await server.stop()
