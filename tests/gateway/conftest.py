"""Helpers for gateway tests: configs, a gateway behind `aiohttp_client`, and small upstreams.

The echo upstreams of `tests.support` cover most cases; the apps here do what an echo server
cannot: fail every request, stream large bodies without buffering them, hold an event stream
open until the test says so, and send hop-by-hop response headers.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.app import TABLE, build_app
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
    """A real server on loopback for an app built by the test; stop and start on the same port."""

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


def failing_app(status: int = 503) -> web.Application:
    """Answers every request, `/health` included, with `status` (after reading the body)."""

    async def fail(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"failed": True}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fail)
    return app


PATTERN = bytes(range(256)) * 256  # 64 KiB that is not all one byte


def pattern_bytes(size: int) -> bytes:
    repeats, rest = divmod(size, len(PATTERN))
    return PATTERN * repeats + PATTERN[:rest]


@dataclass
class StreamingApp:
    """Streams bodies both ways without holding them, and an event stream the test paces."""

    release_sse: asyncio.Event = field(default_factory=asyncio.Event)
    sse_events_sent: int = 0

    def build(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/upload", self.upload)
        app.router.add_get("/download", self.download)
        app.router.add_get("/sse", self.sse)
        app.router.add_get("/hop", self.hop)
        return app

    async def upload(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            digest.update(chunk)
            size += len(chunk)
        return web.json_response(
            {"sha256": digest.hexdigest(), "size": size, "chunked": request.content_length is None}
        )

    async def download(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        response = web.StreamResponse()
        response.content_type = "application/octet-stream"
        if request.query.get("length") == "1":
            response.content_length = size
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        while sent < size:
            part = PATTERN[: min(len(PATTERN), size - sent)]
            await response.write(part)
            sent += len(part)
        await response.write_eof()
        return response

    async def sse(self, request: web.Request) -> web.StreamResponse:
        """One event, then wait for `release_sse`, then two more."""
        response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        response.content_type = "text/event-stream"
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        self.sse_events_sent = 1
        await self.release_sse.wait()
        for name in (b"second", b"third"):
            await response.write(b"data: " + name + b"\n\n")
            self.sse_events_sent += 1
        await response.write_eof()
        return response

    async def hop(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": True},
            headers={
                "Connection": "X-Resp-Hop",
                "X-Resp-Hop": "secret",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
                "Trailer": "X-Checksum",
                "X-End-To-End": "kept",
            },
        )
