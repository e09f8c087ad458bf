"""Endpoint health: passive ejection by real traffic, active probes, and 503 when none is left."""

from __future__ import annotations

import time
from typing import Any

import pytest

from spork_cli.gateway.balancer import EndpointState
from tests.gateway.conftest import (
    Client,
    Gateway,
    expect_problem,
    pool_of,
    single_service,
    wait_until,
)
from tests.support import Upstream, UpstreamFactory

NO_RETRIES = {"attempts": 0}


def passive(failures: int, cooldown: str = "300ms") -> dict[str, Any]:
    return {"failures": failures, "cooldown": cooldown}


def active(**overrides: Any) -> dict[str, Any]:
    return {
        "interval": "100ms",
        "timeout": "500ms",
        "healthy_threshold": 2,
        "unhealthy_threshold": 2,
        **overrides,
    }


def state(client: Client, url: str) -> EndpointState:
    return next(e for e in pool_of(client).endpoints if e.url == url)


async def statuses(client: Client, count: int) -> list[tuple[int, str | None]]:
    seen = []
    for _ in range(count):
        async with client.get("/x") as response:
            await response.read()
            seen.append((response.status, response.headers.get("X-Upstream")))
    return seen


async def hit_until(client: Client, server: Upstream, hits: int, limit: int = 10) -> None:
    """Send requests until `server` has seen `hits` of them; fail after `limit` requests."""
    for _ in range(limit):
        if server.hits >= hits:
            return
        await statuses(client, 1)
    assert server.hits >= hits, f"{server.name} saw {server.hits} requests, expected {hits}"


# --- passive ---------------------------------------------------------------------------------


@pytest.mark.observes("services.passive.failures")
async def test_endpoint_is_ejected_after_consecutive_failures(
    gateway: Gateway, upstream: Upstream, upstream_factory: UpstreamFactory
) -> None:
    bad = await upstream_factory("bad", status=503)
    client = await gateway(
        single_service(bad.url, upstream.url, retries=NO_RETRIES, passive=passive(2, "1h"))
    )
    await hit_until(client, bad, 2)
    assert not state(client, bad.url).available(time.monotonic())
    assert await statuses(client, 6) == [(200, "upstream")] * 6
    assert bad.hits == 2


@pytest.mark.observes("services.passive.cooldown")
async def test_ejected_endpoint_returns_after_the_cooldown(
    gateway: Gateway, upstream: Upstream, upstream_factory: UpstreamFactory
) -> None:
    bad = await upstream_factory("bad", status=503)
    client = await gateway(
        single_service(bad.url, upstream.url, retries=NO_RETRIES, passive=passive(2, "300ms"))
    )
    await hit_until(client, bad, 2)
    ejected = state(client, bad.url)
    assert not ejected.available(time.monotonic())
    await wait_until(lambda: ejected.available(time.monotonic()), message="end of the cooldown")
    await hit_until(client, bad, 3, limit=3)


async def test_success_between_failures_prevents_ejection(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, retries=NO_RETRIES, passive=passive(2)))
    for path in ("/status/503", "/x", "/status/503", "/x", "/status/503"):
        async with client.get(path) as response:
            await response.read()
    assert state(client, upstream.url).available(time.monotonic())
    # Never ejected: another request still reaches it.
    assert await statuses(client, 1) == [(200, "upstream")]


async def test_last_available_endpoint_is_never_ejected(
    gateway: Gateway, upstream_factory: UpstreamFactory
) -> None:
    first = await upstream_factory("first", status=503)
    second = await upstream_factory("second", status=503)
    client = await gateway(
        single_service(first.url, second.url, retries=NO_RETRIES, passive=passive(1, "1h"))
    )
    seen = await statuses(client, 8)
    # Every request reached an upstream: none was a gateway 503 for want of an endpoint.
    assert all(status == 503 and name in ("first", "second") for status, name in seen)
    assert first.hits + second.hits == 8
    now = time.monotonic()
    assert sorted(state(client, s.url).available(now) for s in (first, second)) == [False, True]
    assert pool_of(client).snapshot()["healthy"] is True


async def test_single_endpoint_is_never_ejected(
    gateway: Gateway, upstream_factory: UpstreamFactory
) -> None:
    bad = await upstream_factory("bad", status=503)
    client = await gateway(single_service(bad.url, retries=NO_RETRIES, passive=passive(1, "1h")))
    assert await statuses(client, 5) == [(503, "bad")] * 5
    assert bad.hits == 5


# --- active ----------------------------------------------------------------------------------


@pytest.mark.observes("services.health.interval")
async def test_active_check_marks_unhealthy_after_threshold_and_healthy_after_restart(
    gateway: Gateway, upstream_factory: UpstreamFactory
) -> None:
    a, b = await upstream_factory.many("a", "b")
    client = await gateway(single_service(a.url, b.url, retries=NO_RETRIES, health=active()))
    b_state = state(client, b.url)
    await b.stop()
    await wait_until(lambda: not b_state.healthy, message="b marked unhealthy")
    assert state(client, a.url).healthy
    assert await statuses(client, 4) == [(200, "a")] * 4

    await b.start()
    await wait_until(lambda: b_state.healthy, message="b marked healthy again")
    await hit_until(client, b, 1, limit=3)


@pytest.mark.observes("services.health.unhealthy_threshold")
async def test_unhealthy_threshold_needs_consecutive_failed_probes(
    gateway: Gateway, upstream: Upstream, upstream_factory: UpstreamFactory
) -> None:
    sick = await upstream_factory("sick")
    sick.answer(503, "/health")
    client = await gateway(
        single_service(upstream.url, sick.url, health=active(unhealthy_threshold=4))
    )
    sick_state = state(client, sick.url)
    observed: list[tuple[int, bool]] = []

    def marked() -> bool:
        observed.append((sick.calls("/health"), sick_state.healthy))
        return not sick_state.healthy

    await wait_until(marked, message="sick marked unhealthy")
    assert all(healthy for count, healthy in observed if count < 4)
    assert observed[-1][0] >= 4  # not before the fourth failed probe (the default is 3)
    assert sick_state.last_error == "unexpected status 503"


async def test_all_endpoints_unhealthy_gives_503_problem(
    gateway: Gateway, upstream_factory: UpstreamFactory
) -> None:
    a, b = await upstream_factory.many("a", "b")
    client = await gateway(single_service(a.url, b.url, health=active()))
    await a.stop()
    await b.stop()
    pool = pool_of(client)
    await wait_until(lambda: not any(e.healthy for e in pool.endpoints), message="all unhealthy")
    async with client.get("/x") as response:
        body = await expect_problem(response, 503)
    assert body["type"] == "urn:spork:problem:no-healthy-endpoint"
    assert pool.snapshot()["healthy"] is False

    await a.start()
    await wait_until(lambda: state(client, a.url).healthy, message="a healthy again")
    assert await statuses(client, 2) == [(200, "a")] * 2


async def test_single_unhealthy_endpoint_gives_503_problem(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, health=active()))
    await upstream.stop()
    only = state(client, upstream.url)
    await wait_until(lambda: not only.healthy, message="endpoint unhealthy")
    async with client.get("/x") as response:
        await expect_problem(response, 503)


async def test_passing_probe_ends_a_passive_ejection(
    gateway: Gateway, upstream_factory: UpstreamFactory
) -> None:
    a, b = await upstream_factory.many("a", "b")
    client = await gateway(
        single_service(a.url, b.url, retries=NO_RETRIES, health=active(), passive=passive(1, "1h"))
    )
    # One failed request ejects whichever endpoint served it, for an hour; its probes pass.
    async with client.get("/status/503") as response:
        assert response.status == 503
        failed = state(client, a.url if response.headers["X-Upstream"] == "a" else b.url)
    assert not failed.available(time.monotonic())
    await wait_until(lambda: failed.available(time.monotonic()), message="probe ends ejection")


@pytest.mark.observes("services.health.path", "services.health.expected_status")
async def test_probes_ask_the_configured_path_for_an_expected_status(
    gateway: Gateway, upstream_factory: UpstreamFactory
) -> None:
    ready, other = await upstream_factory.many("ready", "other")
    ready.answer(202, "/ready")  # other answers /ready with the echo's 200
    check = active(path="/ready", expected_status=[202], unhealthy_threshold=1)
    client = await gateway(single_service(ready.url, other.url, health=check))
    other_state = state(client, other.url)
    await wait_until(lambda: not other_state.healthy, message="other marked unhealthy")
    assert other_state.last_error == "unexpected status 200"
    await wait_until(lambda: ready.calls("/ready") >= 2, message="ready probed twice")
    assert state(client, ready.url).healthy
    assert ready.calls("/health") == other.calls("/health") == 0


@pytest.mark.observes("services.health.timeout")
async def test_a_probe_slower_than_the_timeout_fails(gateway: Gateway, upstream: Upstream) -> None:
    check = active(path="/slow?ms=400", timeout="100ms", unhealthy_threshold=1)
    client = await gateway(single_service(upstream.url, health=check))
    only = state(client, upstream.url)
    await wait_until(lambda: not only.healthy, message="the slow endpoint marked unhealthy")
    assert only.last_error == "timed out after 100ms"


@pytest.mark.observes("services.health.healthy_threshold")
async def test_healthy_threshold_needs_consecutive_passed_probes(
    gateway: Gateway, upstream: Upstream
) -> None:
    upstream.answer(503, "/health")
    check = active(interval="50ms", unhealthy_threshold=1, healthy_threshold=4)
    client = await gateway(single_service(upstream.url, health=check))
    only = state(client, upstream.url)
    await wait_until(lambda: not only.healthy, message="endpoint marked unhealthy")
    upstream.answer(200, "/health")
    passing_from = upstream.calls("/health")
    observed: list[tuple[int, bool]] = []

    def marked() -> bool:
        observed.append((upstream.calls("/health") - passing_from, only.healthy))
        return only.healthy

    await wait_until(marked, message="endpoint marked healthy again")
    assert all(not healthy for count, healthy in observed if count < 4)
    assert observed[-1][0] >= 4  # not before the fourth passed probe (the default is 2)
