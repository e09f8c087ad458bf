"""The outage tracker against a real redis-server: an outage is one warning when it begins
and one when the store answers again, with how many operations failed, however many fail;
every failure is still counted; and why the store failed is said in words."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from spork_cli.config.model import State
from spork_cli.errors import StateError
from spork_cli.state import StateStore, limit_key
from spork_cli.state.diagnose import check
from spork_cli.state.open import store_from_config
from spork_cli.state.outage import StateOutage
from tests.support import (
    LOOPBACK,
    RedisServer,
    eventually,
    free_ports,
    refuses,
    require_binary,
    start_redis_server,
)

WHERE = "redis://test"
KEY = limit_key("outage-test", "r", "client")


async def open_store(url: str) -> StateStore:
    store = store_from_config(State(backend="redis", url=url, timeout="100ms"))
    await store.start()
    return store


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own: the outage test kills it, and no other test may
    lose its store to that."""
    server = start_redis_server(require_binary("redis-server"), tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[StateStore]:
    store = await open_store(redis_server.url)
    try:
        yield store
    finally:
        await store.close()


async def hit(store: StateStore, outage: StateOutage) -> bool:
    """One limiter call as the gateway makes it: a failure goes to the tracker."""
    try:
        await store.rate_limit(KEY, "gcra", 1000, 3600.0, 0)
    except StateError as exc:
        outage.failed("ratelimit", exc)
        return False
    return True


def outage_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if str(e["event"]).startswith("state store ")]


async def test_an_outage_is_one_line_when_it_begins_and_one_when_it_ends(
    store: StateStore, redis_server: RedisServer
) -> None:
    counted: list[str] = []
    outage = StateOutage(store, WHERE, counted.append, probe_interval=0.05)
    try:
        with capture_logs() as logs:
            assert await hit(store, outage)
            try:
                await asyncio.to_thread(redis_server.stop, kill=True)
                results = [await hit(store, outage) for _ in range(30)]
                assert outage.down
            finally:
                await asyncio.to_thread(redis_server.start)
            await eventually(lambda: not outage.down, what="the end of the outage")
            assert await hit(store, outage)
    finally:
        await outage.close()

    assert results == [False] * 30
    assert counted == ["ratelimit"] * 30
    began, ended = outage_lines(logs)
    assert (began["log_level"], began["store"], began["op"]) == ("warning", WHERE, "ratelimit")
    assert began["event"].startswith("state store unreachable: ")
    assert (ended["log_level"], ended["failed_operations"]) == ("warning", 30)
    assert ended["event"].endswith("; 30 operations failed")
    assert ended["event"].startswith("state store reachable again after ")


async def test_nothing_listening_is_said_as_connection_refused() -> None:
    (port,) = free_ports(1)
    assert await refuses(port)
    store = await open_store(f"redis://{LOOPBACK}:{port}/0")
    try:
        assert await check(store) == "connection refused"
    finally:
        await store.close()


async def test_a_store_that_answers_is_no_problem(store: StateStore) -> None:
    assert await check(store) is None
