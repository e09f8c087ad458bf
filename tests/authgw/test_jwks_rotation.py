"""JWKS URL through the gateway with a real local JWKS server: rotation by kid, an outage, a
server that never answers, and a gateway that starts before its JWKS server does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from spork_cli.config.model import GatewayConfig
from tests.authgw.conftest import (
    Client,
    auth_section,
    bearer,
    claims,
    echoed,
    gateway_config,
    jwk,
    problem,
    rsa_key,
    sign,
)
from tests.support import Upstream, eventually, free_port

Gateway = Callable[[GatewayConfig], Awaitable[Client]]

# JwksCache waits this long for a fetch (spork_cli.auth.jwks default); a request that needs
# a fetch must be answered within it, plus scheduling slack.
FETCH_TIMEOUT = 2.0


class JwksServer:
    """A JWKS endpoint on a fixed loopback port that a test can change, stop and restart."""

    def __init__(self, factory: AiohttpServer, port: int) -> None:
        self.factory = factory
        self.port = port
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        self.hang = False
        self.release = asyncio.Event()
        self.server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    def publish(self, *kids: str) -> None:
        """Serve the keys named (kid "a" is rsa_key(0), "b" rsa_key(1), ...)."""
        self.keys = [jwk(key(kid), kid) for kid in kids]

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.hang:
            await self.release.wait()
        return web.json_response({"keys": self.keys})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/jwks", self.handle)
        self.server = await self.factory(app, port=self.port)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None


def key(kid: str) -> Any:
    """Kid "a" is rsa_key(0), "b" rsa_key(1), and so on."""
    return rsa_key("abc".index(kid))


def token(kid: str, **changes: Any) -> str:
    return sign(claims(**changes), key(kid), "RS256", kid=kid)


@pytest.fixture
async def jwks(aiohttp_server: AiohttpServer) -> AsyncIterator[JwksServer]:
    server = JwksServer(aiohttp_server, free_port())
    try:
        yield server
    finally:
        server.release.set()  # a held request ends, so the server closes promptly


def jwks_config(upstream: Upstream, url: str, **fields: Any) -> GatewayConfig:
    auth = auth_section(algorithms=["RS256"], secret=None, jwks_url=url, **fields)
    return gateway_config(upstream.url, auth=auth)


async def timed(client: Client, jwt: str, path: str = "/private") -> tuple[Any, float]:
    started = time.monotonic()
    response = await client.get(path, headers=bearer(jwt))
    await response.read()
    return response, time.monotonic() - started


@pytest.mark.observes("auth.jwks_url")
async def test_new_kid_is_fetched_on_first_sight(
    gateway: Gateway, upstream: Upstream, jwks: JwksServer
) -> None:
    jwks.publish("a")
    await jwks.start()
    client = await gateway(jwks_config(upstream, jwks.url))

    echo = await echoed(await client.get("/private", headers=bearer(token("a", sub="one"))))
    assert echo["headers"]["x-user-id"] == "one"
    fetched = jwks.hits
    assert fetched == 1

    jwks.publish("a", "b")
    echo = await echoed(await client.get("/private", headers=bearer(token("b", sub="two"))))
    assert echo["headers"]["x-user-id"] == "two"
    assert jwks.hits == fetched + 1
    # The old key keeps working next to the new one, without another fetch.
    await echoed(await client.get("/private", headers=bearer(token("a"))))
    await echoed(await client.get("/private", headers=bearer(token("b"))))
    assert jwks.hits == fetched + 1


@pytest.mark.observes("auth.jwks_cache_ttl")
async def test_retired_kid_stops_verifying_after_the_cache_ttl(
    gateway: Gateway, upstream: Upstream, jwks: JwksServer
) -> None:
    jwks.publish("a", "b")
    await jwks.start()
    client = await gateway(jwks_config(upstream, jwks.url, jwks_cache_ttl="200ms"))
    await echoed(await client.get("/private", headers=bearer(token("a"))))
    jwks.publish("b")

    async def retired() -> bool:
        # Fresh tokens each time: a verified token may be served from the cache for longer.
        response, _ = await timed(client, token("a"))
        assert response.status in (200, 401)
        return response.status == 401

    await eventually(retired, timeout=10.0, interval=0.1, what="kid a to be refused")
    response, _ = await timed(client, token("a"))
    assert (await problem(response, 401))["reason"] == "unknown_kid"
    # The key that stayed was served throughout, and still is.
    await echoed(await client.get("/private", headers=bearer(token("b"))))


async def test_outage_keeps_known_kids_and_rejects_unknown_fast(
    gateway: Gateway, upstream: Upstream, jwks: JwksServer
) -> None:
    jwks.publish("a")
    await jwks.start()
    client = await gateway(jwks_config(upstream, jwks.url))
    await echoed(await client.get("/private", headers=bearer(token("a"))))
    await jwks.stop()

    # A fresh token (not in the verified-token cache) still needs the kept key set.
    response, _ = await timed(client, token("a", sub="during-outage"))
    assert response.status == 200
    for kid in ("b", "c"):  # the first tries a refetch that fails, the second hits the cooldown
        response, seconds = await timed(client, token(kid))
        assert response.status == 401
        assert (await problem(response, 401))["reason"] == "unknown_kid"
        assert seconds < FETCH_TIMEOUT - 0.5, f"kid {kid} took {seconds:.2f}s"
    response, _ = await timed(client, token("a"))
    assert response.status == 200


async def test_hanging_jwks_never_hangs_a_request(
    gateway: Gateway, upstream: Upstream, jwks: JwksServer
) -> None:
    jwks.publish("a")
    await jwks.start()
    client = await gateway(jwks_config(upstream, jwks.url))
    await echoed(await client.get("/private", headers=bearer(token("a"))))
    jwks.hang = True

    unknown = asyncio.create_task(timed(client, token("b")))
    await eventually(lambda: jwks.hits == 2, what="the refetch for kid b to reach the server")
    # While that refetch hangs, known kids are served at once.
    response, seconds = await timed(client, token("a", sub="meanwhile"))
    assert response.status == 200
    assert seconds < FETCH_TIMEOUT - 1.0
    response, seconds = await unknown
    assert response.status == 401
    assert (await problem(response, 401))["reason"] == "unknown_kid"
    assert seconds < FETCH_TIMEOUT + 1.0


async def test_gateway_starts_while_jwks_is_unreachable_and_recovers(
    gateway: Gateway, upstream: Upstream, jwks: JwksServer
) -> None:
    started = time.monotonic()
    client = await gateway(jwks_config(upstream, jwks.url))
    assert time.monotonic() - started < FETCH_TIMEOUT - 0.5, "start-up waited on the JWKS"

    response, seconds = await timed(client, token("a"))
    body = await problem(response, 401)
    assert body["reason"] == "jwks_unavailable"
    assert seconds < FETCH_TIMEOUT + 1.0
    # Routes without auth are not affected at all.
    await echoed(await client.get("/open"))

    jwks.publish("a")
    await jwks.start()

    async def accepted() -> bool:
        response, _ = await timed(client, token("a"))
        return response.status == 200

    await eventually(accepted, timeout=10.0, interval=0.1, what="a token accepted after recovery")
