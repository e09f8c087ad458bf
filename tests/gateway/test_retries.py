"""Retries: which failures are retried, where, how often, and the budget that caps them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from spork_cli.gateway import proxy
from spork_cli.gateway.upstream import MIN_RETRIES_PER_WINDOW, RetryBudget
from tests.gateway.conftest import (
    Gateway,
    expect_problem,
    json_of,
    pool_of,
    single_service,
)
from tests.support import LOOPBACK, Upstream, UpstreamFactory, free_port

FAST = {"backoff": "1ms", "max_backoff": "2ms"}


def retries(**overrides: Any) -> dict[str, Any]:
    return {**FAST, **overrides}


# --- RetryBudget -------------------------------------------------------------------------------


def test_budget_floor_allows_a_few_retries_without_traffic() -> None:
    budget = RetryBudget(0.2, window=10.0)
    assert [budget.try_retry(now=0.0) for _ in range(MIN_RETRIES_PER_WINDOW)] == [True] * 3
    assert budget.try_retry(now=0.0) is False


def test_budget_allows_ratio_of_recent_requests() -> None:
    budget = RetryBudget(0.2, window=10.0)
    for i in range(100):
        budget.record_request(now=i * 0.01)
    allowed = [budget.try_retry(now=1.0) for _ in range(25)]
    assert allowed.count(True) == 20
    assert allowed[:20] == [True] * 20
    assert allowed[20:] == [False] * 5


def test_budget_forgets_requests_and_retries_outside_the_window() -> None:
    budget = RetryBudget(0.5, window=10.0)
    for _ in range(20):
        budget.record_request(now=0.0)
    assert [budget.try_retry(now=1.0) for _ in range(11)].count(True) == 10
    # Still inside the window: spent.
    assert budget.try_retry(now=9.9) is False
    # Past the window both the requests and the retries are gone: only the floor is left.
    assert [budget.try_retry(now=11.5) for _ in range(4)] == [True, True, True, False]


def test_zero_budget_never_retries() -> None:
    budget = RetryBudget(0.0)
    for _ in range(100):
        budget.record_request(now=0.0)
    assert budget.try_retry(now=0.0) is False


# --- retried through the gateway ---------------------------------------------------------------


async def test_503_from_one_endpoint_is_retried_on_another(
    gateway: Gateway, upstream: Upstream, upstream_factory: UpstreamFactory
) -> None:
    bad = await upstream_factory("bad", status=503)
    client = await gateway(single_service(bad.url, upstream.url, retries=retries()))
    for _ in range(2):
        async with client.get("/x") as response:
            assert response.status == 200
            assert response.headers["X-Upstream"] == "upstream"
    # Round robin sent one of the two first attempts to the failing endpoint.
    assert bad.hits == 1
    assert len(upstream.requests) == 2


async def test_status_not_in_on_status_is_not_retried(
    gateway: Gateway, upstream: Upstream, upstream_factory: UpstreamFactory
) -> None:
    bad = await upstream_factory("bad", status=500)
    client = await gateway(single_service(bad.url, upstream.url, retries=retries()))
    statuses = []
    for _ in range(2):
        async with client.get("/x") as response:
            statuses.append(response.status)
    assert sorted(statuses) == [200, 500]
    assert bad.hits == 1


@pytest.mark.observes("services.retries.on_status")
async def test_status_listed_in_on_status_is_retried(
    gateway: Gateway, upstream: Upstream, upstream_factory: UpstreamFactory
) -> None:
    bad = await upstream_factory("bad", status=500)
    client = await gateway(single_service(bad.url, upstream.url, retries=retries(on_status=[500])))
    for _ in range(2):
        async with client.get("/x") as response:
            assert response.status == 200
            assert response.headers["X-Upstream"] == "upstream"
    assert bad.hits == 1
    assert len(upstream.requests) == 2


@pytest.mark.observes("services.retries.backoff", "services.retries.max_backoff")
@pytest.mark.parametrize(
    ("backoff", "max_backoff", "at_least", "below"),
    [("300ms", "10s", 0.3, 5.0), ("10s", "50ms", 0.05, 0.5)],
    ids=["backoff", "max_backoff"],
)
async def test_the_wait_before_a_retry_is_the_backoff_capped_by_max_backoff(
    gateway: Gateway,
    upstream_factory: UpstreamFactory,
    monkeypatch: pytest.MonkeyPatch,
    backoff: str,
    max_backoff: str,
    at_least: float,
    below: float,
) -> None:
    # Full jitter waits a random share of the ceiling; pinned to the whole of it here, the
    # wait before the one retry is exactly min(backoff, max_backoff).
    monkeypatch.setattr(proxy.random, "uniform", lambda low, high: high)
    bad = await upstream_factory("bad", status=503)
    client = await gateway(
        single_service(
            bad.url, retries={"attempts": 1, "backoff": backoff, "max_backoff": max_backoff}
        )
    )
    started = time.monotonic()
    async with client.get("/x") as response:
        assert response.status == 503
    elapsed = time.monotonic() - started
    assert bad.hits == 2
    assert at_least <= elapsed < below


async def test_post_is_not_retried(
    gateway: Gateway, upstream: Upstream, upstream_factory: UpstreamFactory
) -> None:
    bad = await upstream_factory("bad", status=503)
    client = await gateway(single_service(bad.url, upstream.url, retries=retries()))
    statuses = []
    for _ in range(2):
        async with client.post("/x", data=b"{}") as response:
            statuses.append(response.status)
    assert sorted(statuses) == [200, 503]
    assert bad.hits == 1
    assert len(upstream.requests) == 1


@pytest.mark.observes("routes.retry_non_idempotent")
async def test_post_is_retried_when_the_route_opts_in(
    gateway: Gateway, upstream: Upstream, upstream_factory: UpstreamFactory
) -> None:
    bad = await upstream_factory("bad", status=503)
    client = await gateway(
        single_service(
            bad.url, upstream.url, route={"retry_non_idempotent": True}, retries=retries()
        )
    )
    for _ in range(2):
        async with client.post("/x", data=b'{"n": 1}') as response:
            assert response.status == 200
            assert (await json_of(response))["body"] == '{"n": 1}'
    assert bad.hits == 1
    assert len(upstream.requests) == 2


async def streamed(total: int, chunk: int = 1024) -> AsyncIterator[bytes]:
    for _ in range(total // chunk):
        yield b"y" * chunk


@pytest.mark.parametrize("body", ["large", "chunked"])
async def test_streamed_request_body_is_never_replayed(
    gateway: Gateway, upstream: Upstream, upstream_factory: UpstreamFactory, body: str
) -> None:
    bad = await upstream_factory("bad", status=503)
    client = await gateway(
        single_service(
            bad.url, upstream.url, route={"retry_non_idempotent": True}, retries=retries()
        )
    )
    statuses = []
    for _ in range(2):
        data = b"y" * (100 * 1024) if body == "large" else streamed(100 * 1024)
        async with client.put("/x", data=data) as response:
            statuses.append(response.status)
    assert sorted(statuses) == [200, 503]
    assert bad.hits == 1
    assert [len(r.body) for r in upstream.requests] == [100 * 1024]


async def test_refused_connection_is_retried_on_another_endpoint(
    gateway: Gateway, upstream_factory: UpstreamFactory
) -> None:
    alive, dead = await upstream_factory.many("alive", "dead")
    client = await gateway(single_service(alive.url, dead.url, retries=retries()))
    await dead.stop()
    for _ in range(3):
        async with client.get("/x") as response:
            assert response.status == 200
            assert response.headers["X-Upstream"] == "alive"


async def test_refused_connection_everywhere_is_502_after_every_attempt(
    gateway: Gateway,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = await gateway(single_service(dead, retries=retries(attempts=2)))
    async with client.get("/x") as response:
        body = await expect_problem(response, 502)
    assert body["type"] == "urn:spork:problem:upstream-unreachable"
    # One first try and two retries, each a failure on the only endpoint.
    assert pool_of(client).endpoints[0].failures == 3


@pytest.mark.observes("services.timeout")
async def test_timeout_is_504_and_not_retried(
    gateway: Gateway, upstream_factory: UpstreamFactory
) -> None:
    a, b = await upstream_factory.many("a", "b")
    client = await gateway(single_service(a.url, b.url, timeout="200ms", retries=retries()))
    started = time.monotonic()
    async with client.get("/slow?ms=2000") as response:
        body = await expect_problem(response, 504)
    assert time.monotonic() - started < 1.5
    assert body["type"] == "urn:spork:problem:upstream-timeout"
    assert len(a.requests) + len(b.requests) == 1


@pytest.mark.observes("routes.timeout")
async def test_route_timeout_overrides_the_service_timeout(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, route={"timeout": "200ms"}, timeout="30s"))
    async with client.get("/slow?ms=2000") as response:
        await expect_problem(response, 504)


@pytest.mark.observes("server.timeouts.request")
async def test_server_request_timeout_bounds_the_whole_request(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(
        single_service(upstream.url, timeout="30s", server={"timeouts": {"request": "300ms"}})
    )
    started = time.monotonic()
    async with client.get("/slow?ms=1500") as response:
        await expect_problem(response, 504)
    assert time.monotonic() - started < 1.2


async def test_upstream_not_reading_a_streamed_body_gives_504(gateway: Gateway) -> None:
    release = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await release.wait()  # never reads the body
        writer.close()

    server = await asyncio.start_server(stall, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await gateway(
            single_service(
                f"http://{LOOPBACK}:{port}",
                timeout="300ms",
                server={"max_body": "256MiB", "timeouts": {"shutdown": "1s"}},
            )
        )
        # Far more than the socket buffers between the gateway and the upstream can hold.
        async with asyncio.timeout(3):
            async with client.post("/x", data=streamed(64 * 1024 * 1024, 64 * 1024)) as response:
                await expect_problem(response, 504)
    finally:
        release.set()
        server.close()
        await server.wait_closed()


@pytest.mark.observes("services.retries.budget")
async def test_budget_exhaustion_stops_retries(
    gateway: Gateway, upstream_factory: UpstreamFactory
) -> None:
    bad = await upstream_factory("bad", status=503)
    client = await gateway(single_service(bad.url, retries=retries(attempts=10, budget=0.2)))
    async with client.get("/x") as response:
        assert response.status == 503
        assert response.headers["X-Upstream"] == "bad"  # the last upstream answer is relayed
    # First try plus the floor of the budget, not ten retries.
    assert bad.hits == 1 + MIN_RETRIES_PER_WINDOW
    async with client.get("/x") as response:
        assert response.status == 503
    assert bad.hits == 1 + MIN_RETRIES_PER_WINDOW + 1


@pytest.mark.observes("services.retries.budget")
async def test_zero_budget_disables_retries(
    gateway: Gateway, upstream: Upstream, upstream_factory: UpstreamFactory
) -> None:
    bad = await upstream_factory("bad", status=503)
    client = await gateway(single_service(bad.url, upstream.url, retries=retries(budget=0)))
    statuses = []
    for _ in range(2):
        async with client.get("/x") as response:
            statuses.append(response.status)
    assert sorted(statuses) == [200, 503]


@pytest.mark.observes("services.retries.attempts")
async def test_attempts_zero_disables_retries(
    gateway: Gateway, upstream: Upstream, upstream_factory: UpstreamFactory
) -> None:
    bad = await upstream_factory("bad", status=503)
    client = await gateway(single_service(bad.url, upstream.url, retries=retries(attempts=0)))
    statuses = []
    for _ in range(2):
        async with client.get("/x") as response:
            statuses.append(response.status)
    assert sorted(statuses) == [200, 503]
