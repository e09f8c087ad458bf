"""Circuit breakers at the gateway: open after failures and answer 503 without calling the
upstream, probe after the cooldown, count only what the config calls failure, and share one
state between gateways through Redis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.app import build_app
from spork_cli.gateway.keys import TABLE
from spork_cli.state import breaker_key
from tests.support import LOOPBACK, Upstream, eventually, free_port

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


@pytest.mark.observes("services.breaker.failures", "services.breaker.cooldown", "services.name")
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


@pytest.mark.observes("services.breaker.failure_statuses")
async def test_only_configured_failures_count(aiohttp_client: Factory, upstream: Upstream) -> None:
    client = await aiohttp_client(
        build_app(config(upstream, {"failures": 2, "failure_statuses": [503], "cooldown": "1m"}))
    )
    assert [await status_of(client, "/status/500") for _ in range(4)] == [500] * 4
    assert [await status_of(client, "/status/404") for _ in range(4)] == [404] * 4
    assert [await status_of(client, "/status/503") for _ in range(3)] == [503, 503, 503]
    assert len([r for r in upstream.requests if r.path == "/status/503"]) == 2


@pytest.mark.observes("services.breaker.failure_on")
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


@pytest.mark.observes("services.breaker.failure_on")
async def test_connect_errors_do_not_count_when_left_out(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    client = await aiohttp_client(
        build_app(config(upstream, {"failures": 2, "failure_on": ["timeout"], "cooldown": "1m"}))
    )
    await upstream.stop()
    assert [await status_of(client, "/x") for _ in range(3)] == [502] * 3
    await upstream.start()
    assert await status_of(client, "/x") == 200  # the default counts connect errors too


@pytest.mark.observes("services.breaker.failure_ratio", "services.breaker.min_requests")
async def test_the_failure_ratio_opens_it_once_min_requests_are_seen(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    breaker = {"failures": 100, "failure_ratio": 0.5, "min_requests": 4, "cooldown": "1m"}
    client = await aiohttp_client(build_app(config(upstream, breaker)))
    # Three failures of three: over the ratio, but fewer requests than min_requests.
    assert [await status_of(client, "/status/500") for _ in range(3)] == [500] * 3
    assert await status_of(client, "/fine") == 200
    # The fifth request fails: four of five failed, and the window holds enough requests.
    assert await status_of(client, "/status/500") == 500
    calls = len(upstream.requests)
    assert await status_of(client, "/fine") == 503
    assert len(upstream.requests) == calls


@pytest.mark.observes("services.breaker.window")
async def test_failures_that_left_the_window_no_longer_count(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    breaker = {"failures": 100, "failure_ratio": 0.5, "min_requests": 4, "window": "400ms"}
    client = await aiohttp_client(build_app(config(upstream, breaker)))
    assert [await status_of(client, "/status/500") for _ in range(3)] == [500] * 3
    store = client.app[TABLE].resources.store
    assert store is not None

    async def window_empty() -> bool:
        state = await store.breaker_read(breaker_key("spork", "u"))
        return state is not None and state.window_requests == 0

    await eventually(window_empty, timeout=3, what="the failures to leave the window")
    # One failure in the window now, not four (the default window of 30 s would hold them).
    assert await status_of(client, "/status/500") == 500
    assert await status_of(client, "/fine") == 200


async def _half_open(client: Client, path: str) -> int:
    """Ask ``path`` until the breaker lets the request through (the first probe)."""
    statuses: list[int] = []

    async def let_through() -> bool:
        statuses.append(await status_of(client, path))
        return statuses[-1] != 503

    await eventually(let_through, timeout=3, what="the breaker to half-open")
    return statuses[-1]


@pytest.mark.observes("services.breaker.half_open_probes")
async def test_every_probe_must_pass_before_it_closes(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    breaker = {"failures": 3, "cooldown": "300ms", "half_open_probes": 2}
    client = await aiohttp_client(build_app(config(upstream, breaker)))
    assert [await status_of(client, "/status/500") for _ in range(3)] == [500] * 3
    assert await _half_open(client, "/fine") == 200
    # One probe of two passed: still half-open, so the next request is the second probe, and
    # its failure opens the breaker again (with one probe it would be closed by now, and one
    # failure of three would leave it closed).
    assert await status_of(client, "/status/500") == 500
    assert await status_of(client, "/fine") == 503


@pytest.mark.observes("services.breaker.cooldown_multiplier", "services.breaker.max_cooldown")
async def test_the_cooldown_grows_on_a_failed_probe_up_to_max_cooldown(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    breaker = {
        "failures": 1,
        "cooldown": "300ms",
        "cooldown_multiplier": 10,
        "max_cooldown": "1500ms",
    }
    client = await aiohttp_client(build_app(config(upstream, breaker)))
    assert await status_of(client, "/status/500") == 500
    async with client.get("/fine") as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
    assert await _half_open(client, "/status/500") == 500  # the probe fails: open again
    async with client.get("/fine") as response:
        assert response.status == 503
        # 300 ms x 10 = 3 s, capped at 1.5 s (rounded up): not 1 (no growth) nor 3 (no cap).
        assert response.headers["Retry-After"] == "2"


@pytest.mark.observes("services.breaker.on_error")
async def test_the_breaker_on_error_overrides_the_state_on_error(
    aiohttp_client: Factory, upstream: Upstream
) -> None:
    unreachable = f"redis://{LOOPBACK}:{free_port()}/0"
    data = {
        "state": {"backend": "redis", "url": unreachable, "timeout": "200ms", "on_error": "open"},
        "services": [
            {"name": name, "endpoints": [upstream.url], "breaker": breaker}
            for name, breaker in (("strict", {"on_error": "closed"}), ("lenient", {}))
        ],
        "routes": [
            {"path": "/strict", "service": "strict"},
            {"path": "/lenient", "service": "lenient"},
        ],
    }
    client = await aiohttp_client(build_app(GatewayConfig.model_validate(data)))
    assert await status_of(client, "/lenient") == 200  # state.on_error = "open"
    assert await status_of(client, "/strict") == 503
    assert [r.path for r in upstream.requests] == ["/lenient"]


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
