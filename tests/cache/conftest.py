"""Helpers for the response cache tests: the origin (the suite's `Upstream`, shaped through the
query string), an in-process gateway with its admin API, and a short way to read what a
response said.

The origin counts the requests it answers per path, so a test can tell a cache hit (the origin
was not asked) from a miss.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
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
from spork_cli.gateway.keys import TABLE
from tests.support import Upstream

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]

ROUTE = "c"  # the cached route's name, so its state keys are {cache:c}


def at(name: str, *headers: str, status: int | None = None, kind: str = "r", **query: str) -> str:
    """``/<kind>/<name>`` asking the origin for ``headers`` ("Name: value") and ``status``.

    ``kind`` is a route of `Upstream`: ``r`` echoes, ``hold`` echoes once ``gate`` is set,
    ``bytes`` sends ``size=N`` bytes (with a Content-Length when ``length=1``). Each name is
    a resource of its own: ``origin.calls(at(name))`` (query aside) counts what reached it.
    """
    params: list[tuple[str, str]] = [("respond-header", h) for h in headers]
    if status is not None:
        params.append(("respond-status", str(status)))
    params += list(query.items())
    return f"/{kind}/{name}" + (f"?{urlencode(params)}" if params else "")


@pytest.fixture
async def origin() -> AsyncIterator[Upstream]:
    """The cached service: an `Upstream` that counts the requests for each path (``n``)."""
    server = Upstream("origin")
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
    """One service behind one cached route named ``c`` at ``/`` (``default_ttl`` 30 s unless
    ``cache`` says otherwise); ``route`` adds to the route, ``sections`` are top-level tables
    ([state], [auth], ...)."""
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
                # An explicit default freshness, as most of these tests are about what the
                # cache does with an entry, not whether a response gets one.
                "cache": {"ttl": "30s", "default_ttl": "30s", **(cache or {})},
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
        return await aiohttp_client(build_admin_app(gateway_client.app[TABLE]))

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
