"""JwksCache against a real JWKS server on loopback: TTL, rotation, cooldown, outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from spork_cli.auth import TokenRejected
from spork_cli.auth.jwks import JwksCache
from spork_cli.auth.verify import Verifier
from tests.auth.keyring import NOW, SECRET, Clock, auth, claims, jwk, rsa_key, sign
from tests.support import LOOPBACK, free_port


class Issuer:
    """A JWKS endpoint whose answer a test changes: keys, an error status, or no answer."""

    def __init__(self) -> None:
        self.hits = 0
        self.status = 200
        self.body: Any = {"keys": [jwk(rsa_key(0), "k1")]}
        self.hang = False
        self.release = asyncio.Event()
        self.url = ""
        self.server: Any = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if self.hang:
            await self.release.wait()
        if self.status != 200:
            return web.Response(status=self.status, text="unavailable")
        if isinstance(self.body, str):
            return web.Response(text=self.body)
        return web.json_response(self.body)


@pytest.fixture
async def issuer(aiohttp_server: AiohttpServer) -> AsyncIterator[Issuer]:
    state = Issuer()
    app = web.Application()
    app.router.add_get("/jwks", state.handle)
    state.server = await aiohttp_server(app)
    state.url = str(state.server.make_url("/jwks"))
    yield state
    state.release.set()  # lets a held request finish so the server can close promptly


@pytest.fixture
def clock() -> Clock:
    return Clock(1000.0)


def cache_for(url: str, clock: Clock, **options: Any) -> JwksCache:
    settings: dict[str, Any] = {"ttl": 60.0, "cooldown": 30.0, "timeout": 2.0, **options}
    return JwksCache(url, algorithms=["RS256"], clock=clock, **settings)


def rs256(kid: str, n: int = 0, **fields: Any) -> str:
    return sign(claims(**fields), "RS256", rsa_key(n), kid=kid)


def verifier(cache: JwksCache, tmp_path: Path, **fields: Any) -> Verifier:
    config = auth(algorithms=["RS256"], jwks_url=cache.url, **fields)
    return Verifier(config, tmp_path, cache, clock=Clock(NOW))


async def rejected(v: Verifier, token: str) -> TokenRejected:
    with pytest.raises(TokenRejected) as info:
        await v.verify(token)
    return info.value


async def test_keys_are_cached_for_the_ttl(issuer: Issuer, clock: Clock) -> None:
    async with cache_for(issuer.url, clock) as cache:
        keys = await cache.get()
        assert keys.kids == ["k1"]
        for _ in range(3):
            assert await cache.get() is keys
        clock.advance(59)
        assert cache.current() is keys
        assert issuer.hits == 1
        # Stale: the old set keeps serving while a refresh runs in the background.
        issuer.body = {"keys": [jwk(rsa_key(1), "k2")]}
        clock.advance(1)
        assert cache.current() is keys
        await cache.idle()
        assert issuer.hits == 2
        assert (await cache.get()).kids == ["k2"]


async def test_a_verifier_uses_the_fetched_keys(
    issuer: Issuer, clock: Clock, tmp_path: Path
) -> None:
    async with cache_for(issuer.url, clock) as cache:
        v = verifier(cache, tmp_path)
        assert (await v.verify(rs256("k1"))).sub == "alice"
        assert (await rejected(v, rs256("k1", n=1))).code == "bad_signature"


async def test_rotation_refetches_on_an_unknown_kid_with_a_cooldown(
    issuer: Issuer, clock: Clock, tmp_path: Path
) -> None:
    async with cache_for(issuer.url, clock) as cache:
        v = verifier(cache, tmp_path)
        await v.verify(rs256("k1"))
        assert issuer.hits == 1

        issuer.body = {"keys": [jwk(rsa_key(0), "k1"), jwk(rsa_key(1), "k2")]}
        assert (await v.verify(rs256("k2", n=1, sub="rotated"))).sub == "rotated"
        assert issuer.hits == 2

        # Within the cooldown an unknown kid costs no fetch at all.
        for _ in range(3):
            assert (await rejected(v, rs256("k3", n=1))).code == "unknown_kid"
        assert issuer.hits == 2

        clock.advance(30)
        assert (await rejected(v, rs256("k3", n=1))).code == "unknown_kid"
        assert issuer.hits == 3
        assert (await rejected(v, rs256("k3", n=1))).code == "unknown_kid"
        assert issuer.hits == 3
        assert (await v.verify(rs256("k1"))).sub == "alice"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, None, "HTTP 500"),
        (200, "<html>", "the answer is not JSON"),
        (200, {"keys": []}, "no usable signing key"),
    ],
)
async def test_a_failed_refetch_keeps_the_last_good_keys(
    issuer: Issuer, clock: Clock, tmp_path: Path, status: int, body: Any, error: str
) -> None:
    async with cache_for(issuer.url, clock) as cache:
        v = verifier(cache, tmp_path)
        keys = await cache.get()
        issuer.status = status
        issuer.body = body
        clock.advance(61)
        assert cache.current() is keys
        await cache.idle()
        assert issuer.hits == 2
        assert cache.keys is keys
        assert cache.last_error is not None and error in cache.last_error
        assert (await v.verify(rs256("k1"))).sub == "alice"
        assert (await rejected(v, rs256("k2", n=1))).code == "unknown_kid"
        assert issuer.hits == 3


async def test_keys_survive_the_server_going_away(
    issuer: Issuer, clock: Clock, tmp_path: Path
) -> None:
    async with cache_for(issuer.url, clock) as cache:
        v = verifier(cache, tmp_path)
        keys = await cache.get()
        await issuer.server.close()
        clock.advance(61)
        assert await cache.refresh() is None
        assert cache.keys is keys
        assert cache.last_error is not None and cache.last_error.startswith("cannot connect")
        assert (await v.verify(rs256("k1"))).sub == "alice"


async def test_recovery_after_an_outage(issuer: Issuer, clock: Clock) -> None:
    issuer.status = 503
    async with cache_for(issuer.url, clock, retry_after=1.0) as cache:
        with pytest.raises(TokenRejected) as info:
            await cache.get()
        assert info.value.reason == "the JWKS could not be fetched: HTTP 503"
        # Retries wait for retry_after: requests in between fail at once, without a fetch.
        issuer.status = 200
        with pytest.raises(TokenRejected):
            await cache.get()
        assert issuer.hits == 1
        clock.advance(1)
        assert (await cache.get()).kids == ["k1"]
        assert cache.last_error is None


async def test_unreachable_at_start_fails_closed_at_once(clock: Clock, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    cache = cache_for(f"http://{LOOPBACK}:{free_port()}/jwks", clock, timeout=0.5)
    try:
        await cache.start()
        v = verifier(cache, tmp_path)
        started = loop.time()
        error = await rejected(v, rs256("k1"))
        assert error.code == "jwks_unavailable"
        assert error.reason.startswith("the JWKS could not be fetched: cannot connect")
        assert loop.time() - started < 0.5
    finally:
        await cache.close()


async def test_a_silent_server_blocks_neither_start_nor_requests(
    issuer: Issuer, clock: Clock, tmp_path: Path
) -> None:
    issuer.hang = True
    loop = asyncio.get_running_loop()
    cache = cache_for(issuer.url, clock, timeout=0.3)
    try:
        started = loop.time()
        await cache.start()
        assert cache.fetching and cache.keys is None
        v = verifier(cache, tmp_path)
        error = await rejected(v, rs256("k1"))
        elapsed = loop.time() - started
        assert error.code == "jwks_unavailable"
        assert 0.25 <= elapsed < 1.5
        await cache.idle()
        assert cache.last_error == "no answer within 0.3s"
    finally:
        await cache.close()


async def test_static_keys_do_not_wait_for_the_jwks(
    issuer: Issuer, clock: Clock, tmp_path: Path
) -> None:
    issuer.hang = True
    cache = cache_for(issuer.url, clock, timeout=5.0)
    try:
        await cache.start()
        config = auth(algorithms=["HS256", "RS256"], secret=SECRET, jwks_url=issuer.url)
        v = Verifier(config, tmp_path, cache, clock=Clock(NOW))
        identity = await asyncio.wait_for(v.verify(sign(claims(), "HS256", SECRET.encode())), 1)
        assert identity.sub == "alice"
        assert cache.fetching
    finally:
        await cache.close()


async def test_close_cancels_a_fetch_and_a_passed_session_stays_open(
    issuer: Issuer, clock: Clock
) -> None:
    issuer.hang = True
    async with aiohttp.ClientSession() as session:
        cache = JwksCache(issuer.url, session=session, clock=clock)
        await cache.start()
        assert cache.fetching
        await cache.close()
        assert not session.closed
        assert cache.current() is None and not cache.fetching
        assert await cache.refresh() is None


async def test_from_config_takes_url_and_ttl(issuer: Issuer) -> None:
    config = auth(algorithms=["RS256"], jwks_url=issuer.url, jwks_cache_ttl="10m")
    async with JwksCache.from_config(config) as cache:
        assert (cache.url, cache.ttl) == (issuer.url, 600.0)
        assert (await cache.get()).kids == ["k1"]
    with pytest.raises(ValueError, match="jwks_url"):
        JwksCache.from_config(auth(secret=SECRET))


async def test_a_reload_keeps_the_jwks_cache_only_while_its_settings_hold(
    issuer: Issuer, tmp_path: Path
) -> None:
    from spork_cli.config.model import GatewayConfig
    from spork_cli.gateway.compile import Resources, close_table, compile_table

    def config(**fields: Any) -> GatewayConfig:
        settings = {"algorithms": ["RS256"], "jwks_url": issuer.url, **fields}
        return GatewayConfig.model_validate({"auth": settings})

    resources = Resources(base_dir=tmp_path)
    first = await compile_table(config(), None, resources)
    same = await compile_table(config(), first, resources)
    ttl = await compile_table(config(jwks_cache_ttl="1m"), same, resources)
    widened = await compile_table(config(algorithms=["RS256", "ES256"]), ttl, resources)
    try:
        assert same.jwks is first.jwks  # nothing changed: the fetched keys are kept
        assert ttl.jwks is not same.jwks and ttl.jwks is not None and ttl.jwks.ttl == 60.0
        assert widened.jwks is not None and "ES256" in widened.jwks.algorithms
    finally:
        for table in (same, ttl, widened):
            await close_table(table, 0)
