"""Rate limits at the gateway: headers on every response, 429 problems over the limit, tiers,
exempt roles, keys, trusted proxies, and each on_error policy when Redis is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spork_cli.auth.mint import build_claims, sign, signing_key
from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.app import build_app
from spork_cli.gateway.keys import METRICS
from tests.support import LOOPBACK, RedisServer, Upstream, eventually

Client = TestClient[Any, Any]
Factory = Callable[..., Awaitable[Client]]
SECRET = "r" * 32


def config(upstream: Upstream, limit: dict[str, Any], **extra: Any) -> GatewayConfig:
    route = {"path": "/", "service": "u", "rate_limit": limit, **extra.pop("route", {})}
    return GatewayConfig.model_validate(
        {
            "services": [{"name": "u", "endpoints": [upstream.url]}],
            "routes": [route],
            **extra,
        }
    )


def token(cfg: GatewayConfig, sub: str, roles: tuple[str, ...] = ()) -> dict[str, str]:
    assert cfg.auth is not None
    claims = build_claims(cfg.auth, sub=sub, roles=roles)
    return {"Authorization": f"Bearer {sign(claims, signing_key(cfg.auth, Path('.')))}"}


async def statuses(client: Client, n: int, **kwargs: Any) -> list[int]:
    out = []
    for _ in range(n):
        async with client.get("/x", **kwargs) as response:
            out.append(response.status)
    return out


@pytest.mark.observes("routes.rate_limit.requests")
async def test_limit_headers_count_down_then_429_problem_with_retry_after(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    client = await aiohttp_client(build_app(config(upstream, {"requests": 3, "per": "1m"})))
    remaining = []
    for _ in range(3):
        async with client.get("/x") as response:
            assert response.status == 200
            assert response.headers["RateLimit-Policy"] == "3;w=60"
            assert response.headers["X-RateLimit-Limit"] == "3"
            remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    async with client.get("/x") as response:
        assert response.status == 429
        assert response.content_type == "application/problem+json"
        body = await response.json()
        assert body["status"] == 429 and body["request_id"]
        assert 1 <= int(response.headers["Retry-After"]) <= 20
        assert response.headers["RateLimit"].startswith("limit=3, remaining=0")
    assert len(upstream.requests) == 3


@pytest.mark.observes("routes.rate_limit.authenticated.requests", "routes.rate_limit.exempt_roles")
async def test_authenticated_tier_and_exempt_roles(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    cfg = config(
        upstream,
        {
            "requests": 2,
            "per": "1m",
            "key": ["user"],
            "authenticated": {"requests": 4, "per": "1m"},
            "exempt_roles": ["ops"],
        },
        auth={"secret": SECRET},
        route={"auth": "optional"},
    )
    client = await aiohttp_client(build_app(cfg))
    assert await statuses(client, 3) == [200, 200, 429]
    assert await statuses(client, 5, headers=token(cfg, "ann")) == [200] * 4 + [429]
    # Another user has a bucket of their own.
    assert await statuses(client, 1, headers=token(cfg, "bob")) == [200]
    assert await statuses(client, 10, headers=token(cfg, "ops-person", ("ops",))) == [200] * 10


@pytest.mark.observes("routes.rate_limit.key")
async def test_header_key_limits_each_value_separately(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    cfg = config(upstream, {"requests": 1, "per": "1m", "key": ["header:X-Api-Key"]})
    client = await aiohttp_client(build_app(cfg))
    assert await statuses(client, 2, headers={"X-Api-Key": "a"}) == [200, 429]
    assert await statuses(client, 2, headers={"X-Api-Key": "b"}) == [200, 429]


@pytest.mark.observes("routes.rate_limit.burst", "routes.rate_limit.algorithm")
@pytest.mark.parametrize(
    ("algorithm", "admitted", "policy", "retry_after"),
    # 2 per minute and a burst of 2: GCRA and the token bucket admit 4 at once, then one every
    # 30 s; the sliding window ignores the burst and admits 2, then waits the whole minute.
    [
        ("gcra", 4, "2;w=60;burst=2", 30),
        ("token_bucket", 4, "2;w=60;burst=2", 30),
        ("sliding_window", 2, "2;w=60", 60),
    ],
)
async def test_burst_and_algorithm_decide_what_passes_at_once(
    aiohttp_client: Factory,
    upstream: Upstream,
    algorithm: str,
    admitted: int,
    policy: str,
    retry_after: int,
) -> None:
    limit = {"requests": 2, "per": "1m", "burst": 2, "algorithm": algorithm}
    client = await aiohttp_client(build_app(config(upstream, limit)))
    assert await statuses(client, 6) == [200] * admitted + [429] * (6 - admitted)
    async with client.get("/x") as response:
        assert response.status == 429
        assert response.headers["RateLimit-Policy"] == policy
        assert retry_after - 1 <= int(response.headers["Retry-After"]) <= retry_after
    assert len(upstream.requests) == admitted


@pytest.mark.observes("routes.rate_limit.per")
async def test_the_period_is_when_a_spent_limit_admits_again(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    client = await aiohttp_client(build_app(config(upstream, {"requests": 1, "per": "300ms"})))
    assert await statuses(client, 2) == [200, 429]
    started = time.monotonic()

    async def admitted() -> bool:
        return await statuses(client, 1) == [200]

    await eventually(admitted, timeout=3, interval=0.05, what="the limit admitting again")
    assert time.monotonic() - started >= 0.2


@pytest.mark.observes(
    "routes.rate_limit.authenticated.requests",
    "routes.rate_limit.authenticated.per",
    "routes.rate_limit.authenticated.burst",
)
async def test_the_authenticated_tier_has_its_own_rate_period_and_burst(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    cfg = config(
        upstream,
        {"requests": 5, "per": "1m", "authenticated": {"requests": 1, "per": "1h", "burst": 2}},
        auth={"secret": SECRET},
        route={"auth": "optional"},
    )
    client = await aiohttp_client(build_app(cfg))
    ann = token(cfg, "ann")
    # 1 per hour and a burst of 2: three at once, then one an hour.
    assert await statuses(client, 4, headers=ann) == [200, 200, 200, 429]
    async with client.get("/x", headers=ann) as response:
        assert response.status == 429
        assert response.headers["RateLimit-Policy"] == "1;w=3600;burst=2"
        assert 3590 <= int(response.headers["Retry-After"]) <= 3600
    async with client.get("/x") as response:  # the anonymous tier is untouched
        assert response.status == 200
        assert response.headers["RateLimit-Policy"] == "5;w=60"


@pytest.mark.observes("routes.rate_limit.on_error")
async def test_a_routes_on_error_overrides_the_states_when_redis_is_down(
    aiohttp_client: Factory, upstream: Upstream, redis_server: RedisServer, redis_url: str
) -> None:
    cfg = GatewayConfig.model_validate(
        {
            "state": {"backend": "redis", "url": redis_url, "timeout": "100ms", "on_error": "open"},
            "services": [{"name": "u", "endpoints": [upstream.url]}],
            "routes": [
                {
                    "path": "/closed",
                    "service": "u",
                    "rate_limit": {"requests": 1, "per": "1m", "on_error": "closed"},
                },
                {"path": "/open", "service": "u", "rate_limit": {"requests": 1, "per": "1m"}},
            ],
        }
    )
    client = await aiohttp_client(build_app(cfg))
    redis_server.stop()
    try:
        closed = []
        for _ in range(2):
            async with client.get("/closed") as response:
                closed.append(response.status)
                if response.status == 503:
                    assert b"state-unavailable" in await response.read()
        opened = []
        for _ in range(2):
            async with client.get("/open") as response:
                opened.append(response.status)
    finally:
        redis_server.start()
    assert closed == [503, 503]  # the route's own policy
    assert opened == [200, 200]  # the state's: let through uncounted
    assert [r.path for r in upstream.requests] == ["/open", "/open"]


@pytest.mark.parametrize("trusted", [True, False])
async def test_forwarded_client_address_counts_only_from_trusted_proxies(
    aiohttp_client: Factory, upstream: Upstream, trusted: bool
) -> None:
    server = {"trusted_proxies": ["127.0.0.1/32"]} if trusted else {}
    cfg = config(upstream, {"requests": 1, "per": "1m"}, server=server)
    client = await aiohttp_client(build_app(cfg))
    first = await statuses(client, 1, headers={"X-Forwarded-For": "198.51.100.7"})
    second = await statuses(client, 1, headers={"X-Forwarded-For": "198.51.100.8"})
    # Trusted: two clients, one request each. Untrusted: one client (the peer), over its limit.
    assert first + second == ([200, 200] if trusted else [200, 429])


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("open", [200, 200, 200]), ("closed", [503, 503, 503]), ("local", [200, 429, 429])],
)
@pytest.mark.observes("state.on_error")
async def test_each_policy_when_redis_is_down(
    aiohttp_client: Factory,
    upstream: Upstream,
    redis_server: RedisServer,
    redis_url: str,
    policy: str,
    expected: list[int],
) -> None:
    cfg = config(
        upstream,
        {"requests": 1, "per": "1m"},
        state={"backend": "redis", "url": redis_url, "timeout": "100ms", "on_error": policy},
    )
    client = await aiohttp_client(build_app(cfg))
    redis_server.stop()
    try:
        assert await statuses(client, 3) == expected
    finally:
        redis_server.start()
    # Back on Redis once it answers: the shared limit applies again, whatever the policy was.
    assert await statuses(client, 2) == [200, 429]


@pytest.mark.observes("state.prefix")
async def test_every_key_written_to_redis_begins_with_the_state_prefix(
    aiohttp_client: Factory, upstream: Upstream, redis_server: RedisServer, redis_url: str
) -> None:
    state = {"backend": "redis", "url": redis_url, "prefix": "tenant-a"}
    client = await aiohttp_client(
        build_app(config(upstream, {"requests": 5, "per": "1m"}, state=state))
    )
    assert await statuses(client, 1) == [200]
    with redis_server.client(socket_timeout=5, decode_responses=True) as probe:
        keys = probe.keys("*")
    assert any(key.startswith("tenant-a:{rl:") for key in keys), keys
    assert all(key.startswith("tenant-a:") for key in keys), keys


@pytest.mark.observes("state.pool_size")
async def test_the_gateway_talks_to_redis_over_pool_size_connections(
    aiohttp_client: Factory, upstream: Upstream, redis_server: RedisServer, redis_url: str
) -> None:
    state = {"backend": "redis", "url": redis_url, "pool_size": 5}
    with redis_server.client(socket_timeout=5) as admin:
        before = admin.info("stats")["total_connections_received"]
        cfg = config(upstream, {"requests": 100, "per": "1m"}, state=state)
        client = await aiohttp_client(build_app(cfg))
        assert await statuses(client, 20) == [200] * 20
        after = admin.info("stats")["total_connections_received"]
    assert after - before == 5  # the default is 2


@pytest.mark.observes("state.timeout")
async def test_a_store_that_never_answers_is_given_up_on_after_state_timeout(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts, reads, never answers: a stalled Redis host
        await reader.read()

    store = await asyncio.start_server(silent, LOOPBACK, 0)
    url = f"redis://{LOOPBACK}:{store.sockets[0].getsockname()[1]}"
    state = {"backend": "redis", "url": url, "timeout": "400ms", "on_error": "closed"}
    try:
        client = await aiohttp_client(
            build_app(config(upstream, {"requests": 5, "per": "1m"}, state=state))
        )
        started = time.monotonic()
        async with client.get("/x") as response:
            await response.read()
        waited = time.monotonic() - started
        assert response.status == 503
        # Far longer than the default (50 ms), and not much longer than the setting.
        assert 0.4 <= waited < 1.5, waited
    finally:
        store.close()
        for writer in held:
            writer.transport.abort()
        await store.wait_closed()


@pytest.mark.parametrize("policy", ["open", "closed", "local"])
@pytest.mark.observes("state.max_keys")
async def test_a_full_memory_store_refuses_new_clients_whatever_on_error_says(
    aiohttp_client: Factory, upstream: Upstream, policy: str
) -> None:
    cfg = GatewayConfig.model_validate(
        {
            "server": {"trusted_proxies": ["127.0.0.1/32"]},
            "state": {"max_keys": 100, "on_error": policy},
            "services": [{"name": "u", "endpoints": [upstream.url]}],
            "routes": [
                {"path": "/login", "service": "u", "rate_limit": {"requests": 3, "per": "1m"}},
                {
                    "path": "/public",
                    "service": "u",
                    "rate_limit": {"requests": 10, "per": "1m", "key": ["header:X-Api-Key"]},
                },
            ],
        }
    )
    app = build_app(cfg)
    client = await aiohttp_client(app)
    answers = []
    for i in range(120):
        async with client.get("/public", headers={"X-Api-Key": f"k{i}"}) as response:
            body = await response.read()
            answers.append(response.status)
            if response.status == 503:
                # when the soonest entry lapses: a /public client's after one request, 6 s
                assert 1 <= int(response.headers["Retry-After"]) <= 7
                assert b"urn:spork:problem:limiter-full" in body
    # /public holds its reserve (a quarter of max_keys) and the common half; the rest is
    # refused, not let through uncounted, and the store is not reported failing.
    assert answers == [200] * 75 + [503] * 45
    assert app[METRICS].counters["state_errors"] == {}
    for i in range(5):  # /login's new clients have room, and are counted
        login = []
        for _ in range(4):
            forwarded = {"X-Forwarded-For": f"198.51.100.{i}"}
            async with client.get("/login", headers=forwarded) as response:
                login.append(response.status)
        assert login == [200, 200, 200, 429]
