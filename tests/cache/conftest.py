"""Helpers for the response cache tests: an origin the test shapes through the query string,
an in-process gateway with its admin API, and a short way to read what a response said.

The origin is a real HTTP server on loopback. It counts the requests it answers per path and
query, so a test can tell a cache hit (the origin was not asked) from a miss.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy

from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.admin import build_admin_app
from spork_cli.gateway.app import build_app
from tests.support import LOOPBACK, serve_app

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]

ROUTE = "c"  # the cached route's name, so its state keys are {cache:c}
PATTERN = bytes(range(256)) * 64  # 16 KiB that is not all one byte


def pattern_bytes(size: int) -> bytes:
    repeats, rest = divmod(size, len(PATTERN))
    return PATTERN * repeats + PATTERN[:rest]


def at(name: str, *headers: str, status: int | None = None, kind: str = "r", **query: str) -> str:
    """``/<kind>/<name>`` asking the origin for ``headers`` ("Name: value") and ``status``."""
    params: list[tuple[str, str]] = [("h", h) for h in headers]
    if status is not None:
        params.append(("status", str(status)))
    params += list(query.items())
    return f"/{kind}/{name}" + (f"?{urlencode(params)}" if params else "")


@dataclass
class Origin:
    """A real server on loopback whose answers the test shapes.

    ``/r/<name>``: status from ``status=``, one response header per ``h=Name:value``, and a
    JSON body with the request's path, how many times ``name`` was asked (``n``) and the
    headers a variant or a user is told apart by. ``/big/<name>?size=N&mode=length|chunked``:
    N bytes, with a Content-Length or chunked. ``/hold/<name>``: like ``/r/<name>``, once
    ``gate`` is set. ``/sse/<name>``: an event stream (``no-cache``), one event at once and
    the last once ``gate`` is set. Requests are counted per ``name``, whatever the query.
    """

    host: str = LOOPBACK
    port: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def asked(self, name: str) -> int:
        """Requests for ``/<kind>/<name>`` that reached the origin."""
        return self.calls[name]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/r/{tail:.*}", self.shaped)
        app.router.add_get("/big/{tail:.*}", self.big)
        app.router.add_route("*", "/hold/{tail:.*}", self.hold)
        app.router.add_get("/sse/{tail:.*}", self.sse)
        self._runner, self.port = await serve_app(app, self.host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _count(self, request: web.Request) -> int:
        name = request.match_info["tail"]
        self.calls[name] += 1
        return self.calls[name]

    async def shaped(self, request: web.Request) -> web.Response:
        return self._answer(request, self._count(request))

    def _answer(self, request: web.Request, n: int) -> web.Response:
        headers: list[tuple[str, str]] = []
        for spec in request.query.getall("h", ()):
            name, _, value = spec.partition(":")
            headers.append((name.strip(), value.strip()))
        body = {
            "path": request.path_qs,
            "n": n,
            "method": request.method,
            "user": request.headers.get("X-User-Id"),
            "roles": request.headers.get("X-User-Roles"),
            "lang": request.headers.get("Accept-Language"),
        }
        response = web.Response(
            status=int(request.query.get("status", "200")),
            body=orjson.dumps(body),
            content_type="application/json",
        )
        for name, value in headers:
            response.headers.add(name, value)
        return response

    async def big(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        size = int(request.query["size"])
        response = web.StreamResponse()
        response.content_type = "application/octet-stream"
        if request.query.get("mode") == "length":
            response.content_length = size
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        body = pattern_bytes(size)
        for start in range(0, size, 4096):
            await response.write(body[start : start + 4096])
        await response.write_eof()
        return response

    async def hold(self, request: web.Request) -> web.Response:
        n = self._count(request)
        await self.gate.wait()
        return self._answer(request, n)

    async def sse(self, request: web.Request) -> web.StreamResponse:
        n = self._count(request)
        response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        response.content_type = "text/event-stream"
        await response.prepare(request)
        await response.write(f"data: {n}\n\n".encode())
        await self.gate.wait()
        await response.write(b"data: last\n\n")
        await response.write_eof()
        return response


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    server = Origin()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def cached_config(
    origin_url: str,
    cache: Mapping[str, Any] | None = None,
    route: Mapping[str, Any] | None = None,
    **sections: Any,
) -> GatewayConfig:
    """One service behind one cached route named ``c`` at ``/``; ``route`` adds to the route,
    ``sections`` are top-level tables ([state], [auth], ...)."""
    data: dict[str, Any] = {
        "admin": {"enabled": False},
        "logging": {"access_log": False},
        "services": [
            {"name": "svc", "endpoints": [origin_url], "retries": {"attempts": 0}},
        ],
        "routes": [
            {
                "path": "/",
                "service": "svc",
                "name": ROUTE,
                "cache": {"ttl": "30s", **(cache or {})},
                **(route or {}),
            }
        ],
        **sections,
    }
    return GatewayConfig.model_validate(data)


Gateway = Callable[..., Awaitable[Client]]


@pytest.fixture
def gateway(aiohttp_client: ClientFactory) -> Gateway:
    """`await gateway(config)`: `build_app(config)` served on loopback, and its client."""

    async def start(config: GatewayConfig) -> Client:
        return await aiohttp_client(build_app(config))

    return start


@pytest.fixture
def admin_api(aiohttp_client: ClientFactory) -> Callable[[Client], Awaitable[Client]]:
    """`await admin_api(gateway_client)`: that gateway's admin app, served on loopback."""

    async def start(gateway_client: Client) -> Client:
        return await aiohttp_client(build_admin_app(gateway_client.app))

    return start


@dataclass(frozen=True)
class Answer:
    """What the client got: status, headers, the raw body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def cache(self) -> str | None:
        return self.headers.get("X-Cache")

    @property
    def age(self) -> int | None:
        value = self.headers.get("Age")
        return None if value is None else int(value)

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.body)
        return data


async def fetch(
    client: Client | aiohttp.ClientSession,
    path: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
) -> Answer:
    async with client.request(method, path, headers=dict(headers or {})) as response:
        body = await response.read()
        return Answer(response.status, response.headers, body)
