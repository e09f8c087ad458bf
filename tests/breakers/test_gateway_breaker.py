"""Circuit breakers at the gateway: open after failures and answer 503 without calling the
upstream, probe after the cooldown, count only what the config calls failure, and share one
state between gateways through Redis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.app import build_app
from tests.support import Upstream, eventually

Client = TestClient[Any, Any]
Factory = Callable[..., Awaitable[Client]]


def config(upstream: Upstream, breaker: dict[str, Any], **extra: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "services": [
                {
                    "name": "u",
                    "endpoints": [upstream.url],
                    "retries": {"attempts": 0},
                    "breaker": breaker,
                }
            ],
            "routes": [{"path": "/", "service": "u"}],
            **extra,
        }
    )


async def status_of(client: Client, path: str) -> int:
    async with client.get(path) as response:
        await response.read()
        return response.status


async def test_opens_after_consecutive_failures_and_stops_calling_the_upstream(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    client = await aiohttp_client(build_app(config(upstream, {"failures": 3, "cooldown": "1m"})))
    assert [await status_of(client, "/status/500") for _ in range(3)] == [500] * 3
    calls = len(upstream.requests)
    async with client.get("/fine") as response:
        assert response.status == 503
        assert response.content_type == "application/problem+json"
        body = await response.json()
        assert body["type"].endswith("breaker-open") and body["service"] == "u"
        assert 50 <= int(response.headers["Retry-After"]) <= 60
    assert len(upstream.requests) == calls


async def test_half_open_probe_success_closes_it(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    client = await aiohttp_client(
        build_app(config(upstream, {"failures": 2, "cooldown": "300ms", "max_cooldown": "1s"}))
    )
    assert [await status_of(client, "/status/502") for _ in range(2)] == [502, 502]
    assert await status_of(client, "/fine") == 503

    # The first request let through after the cooldown is the probe; it succeeds.
    async def let_through() -> bool:
        return await status_of(client, "/fine") != 503

    await eventually(let_through, timeout=3, what="the breaker to half-open")
    assert [await status_of(client, "/fine") for _ in range(5)] == [200] * 5


async def test_only_configured_failures_count(aiohttp_client: Factory, upstream: Upstream) -> None:
    client = await aiohttp_client(
        build_app(config(upstream, {"failures": 2, "failure_statuses": [503], "cooldown": "1m"}))
    )
    assert [await status_of(client, "/status/500") for _ in range(4)] == [500] * 4
    assert [await status_of(client, "/status/404") for _ in range(4)] == [404] * 4
    assert [await status_of(client, "/status/503") for _ in range(3)] == [503, 503, 503]
    assert len([r for r in upstream.requests if r.path == "/status/503"]) == 2


async def test_connect_errors_count_when_configured(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    client = await aiohttp_client(
        build_app(config(upstream, {"failures": 2, "failure_on": ["connect"], "cooldown": "1m"}))
    )
    await upstream.stop()
    async with client.get("/x") as first, client.get("/x") as second:
        assert (first.status, second.status) == (502, 502)
    await upstream.start()
    async with client.get("/x") as response:
        assert response.status == 503
        assert (await response.json())["type"].endswith("breaker-open")


async def test_two_gateways_share_one_breaker_through_redis(
    aiohttp_client: Factory, upstream: Upstream, redis_url: str
) -> None:
    state = {"backend": "redis", "url": redis_url, "timeout": "500ms"}
    cfg = config(upstream, {"failures": 2, "cooldown": "1m"}, state=state)
    first = await aiohttp_client(build_app(cfg))
    second = await aiohttp_client(build_app(cfg))
    assert await status_of(second, "/fine") == 200  # seen closed, cached for up to 250 ms
    assert [await status_of(first, "/status/500") for _ in range(2)] == [500, 500]

    async def open_there() -> bool:
        return await status_of(second, "/fine") == 503

    await eventually(open_there, timeout=1.0, what="the other gateway to see the breaker open")
