"""Rate limits at the gateway: headers on every response, 429 problems over the limit, tiers,
exempt roles, keys, trusted proxies, and each on_error policy when Redis is down."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spork_cli.auth.mint import build_claims, sign, signing_key
from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.app import build_app
from spork_cli.gateway.keys import METRICS
from tests.support import RedisServer, Upstream

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


async def test_header_key_limits_each_value_separately(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    cfg = config(upstream, {"requests": 1, "per": "1m", "key": ["header:X-Api-Key"]})
    client = await aiohttp_client(build_app(cfg))
    assert await statuses(client, 2, headers={"X-Api-Key": "a"}) == [200, 429]
    assert await statuses(client, 2, headers={"X-Api-Key": "b"}) == [200, 429]


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


@pytest.mark.parametrize("policy", ["open", "closed", "local"])
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
