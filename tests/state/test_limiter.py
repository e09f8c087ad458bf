"""The rate limiter contract on every backend (memory, a real redis-server, a real 3-node
cluster), a model test of the memory backend against plain reference implementations, and the
pure parts of spork_cli.policies.limiter (limits from config, client keys, headers)."""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spork_cli.config.model import RateLimit, State
from spork_cli.errors import StateError
from spork_cli.policies.limiter import Limit, acquire, client_key, headers
from spork_cli.state import ALGORITHMS, LimitResult, limit_key
from spork_cli.state.links import key_slot
from spork_cli.state.memory import MemoryStore
from spork_cli.state.open import store_from_config
from tests.state.conftest import Backend

PREFIX = "spork"


def key(client: str = "ip=10.0.0.1", route: str = "/api/limited/") -> str:
    return limit_key(PREFIX, route, client)


# The period is short so that Redis tests wait for real time only a few hundred ms.
PERIOD = 0.3
RATE = 3
BURST = 1


def capacity_of(algorithm: str) -> int:
    return RATE if algorithm == "sliding_window" else RATE + BURST


def first_retry(algorithm: str) -> float:
    """When a request denied right after an idle burst would pass."""
    return PERIOD if algorithm == "sliding_window" else PERIOD / RATE


# -- the contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_admits_the_burst_from_idle_then_denies_until_retry_after(
    backend: Backend, algorithm: str
) -> None:
    capacity = capacity_of(algorithm)
    results = [
        await backend.store.rate_limit(key(), algorithm, RATE, PERIOD, BURST)
        for _ in range(capacity)
    ]
    assert [r.allowed for r in results] == [True] * capacity
    assert [r.remaining for r in results] == list(range(capacity - 1, -1, -1))
    assert all(r.limit == capacity and r.retry_after == 0 for r in results)

    denied = await backend.store.rate_limit(key(), algorithm, RATE, PERIOD, BURST)
    assert not denied.allowed
    assert denied.remaining == 0
    assert denied.limit == capacity
    expected = first_retry(algorithm)
    assert expected - 0.1 < denied.retry_after <= expected + 1e-6
    full = PERIOD if algorithm == "sliding_window" else capacity * PERIOD / RATE
    assert 0 < denied.reset_after <= full + 1e-6

    # a denial changes nothing: the next one is denied too and waits no longer
    again = await backend.store.rate_limit(key(), algorithm, RATE, PERIOD, BURST)
    assert not again.allowed
    assert again.retry_after <= denied.retry_after

    await backend.wait(again.retry_after)
    after = await backend.store.rate_limit(key(), algorithm, RATE, PERIOD, BURST)
    assert after.allowed
    assert after.retry_after == 0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_no_burst_admits_exactly_rate(backend: Backend, algorithm: str) -> None:
    results = [
        await backend.store.rate_limit(key(), algorithm, RATE, 60, 0) for _ in range(RATE + 2)
    ]
    assert [r.allowed for r in results] == [True] * RATE + [False, False]
    assert results[0].limit == RATE


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_clients_are_independent(backend: Backend, algorithm: str) -> None:
    a, b = key("ip=10.0.0.1"), key("ip=10.0.0.2")
    for _ in range(RATE):
        assert (await backend.store.rate_limit(a, algorithm, RATE, 60, 0)).allowed
    assert not (await backend.store.rate_limit(a, algorithm, RATE, 60, 0)).allowed
    other = await backend.store.rate_limit(b, algorithm, RATE, 60, 0)
    assert other.allowed
    assert other.remaining == RATE - 1
    elsewhere = await backend.store.rate_limit(key(route="/other/"), algorithm, RATE, 60, 0)
    assert elsewhere.allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_cost_takes_several_units(backend: Backend, algorithm: str) -> None:
    first = await backend.store.rate_limit(key(), algorithm, 5, 60, 0, cost=3)
    assert (first.allowed, first.remaining) == (True, 2)
    too_much = await backend.store.rate_limit(key(), algorithm, 5, 60, 0, cost=3)
    assert (too_much.allowed, too_much.remaining) == (False, 2)
    assert too_much.retry_after > 0
    rest = await backend.store.rate_limit(key(), algorithm, 5, 60, 0, cost=2)
    assert (rest.allowed, rest.remaining) == (True, 0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_state_is_forgotten_once_replenished(backend: Backend, algorithm: str) -> None:
    result = await backend.store.rate_limit(key(), algorithm, 2, 0.2, 0)
    assert result.allowed
    assert 0 < result.reset_after <= 0.2 + 1e-6
    await backend.wait(0.2)
    if backend.memory is not None:
        assert backend.memory._limits.get(key()) is None
    else:
        assert not await backend.store.link.call(key(), "EXISTS", key())
    fresh = await backend.store.rate_limit(key(), algorithm, 2, 0.2, 0)
    assert fresh.remaining == 1


async def test_a_key_changing_algorithm_starts_afresh(backend: Backend) -> None:
    for algorithm in [*ALGORITHMS, "gcra"]:
        result = await backend.store.rate_limit(key(), algorithm, 3, 60, 0)
        assert (result.allowed, result.remaining) == (True, 2), algorithm


async def test_arguments_are_checked(backend: Backend) -> None:
    with pytest.raises(ValueError, match="algorithm"):
        await backend.store.rate_limit(key(), "leaky", 1, 1, 0)
    with pytest.raises(ValueError):
        await backend.store.rate_limit(key(), "gcra", 0, 1, 0)
    with pytest.raises(ValueError, match="never fit"):
        await backend.store.rate_limit(key(), "gcra", 2, 1, 1, cost=4)
    with pytest.raises(ValueError, match="never fit"):
        await backend.store.rate_limit(key(), "sliding_window", 2, 1, 5, cost=3)


async def test_a_zero_limit_denies_without_the_store(backend: Backend) -> None:
    result = await acquire(backend.store, key(), Limit(0, 60))
    assert result == LimitResult(False, 0, 0, 60, 60)
    assert headers(result, Limit(0, 60))["Retry-After"] == "60"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_concurrent_calls_admit_exactly_the_rate(backend: Backend, algorithm: str) -> None:
    limit = Limit(50, 60, 0, algorithm)  # type: ignore[arg-type]
    results = await asyncio.gather(*(acquire(backend.store, key(), limit) for _ in range(200)))
    assert sum(r.allowed for r in results) == 50
    assert sorted(r.remaining for r in results if r.allowed) == list(range(50))


async def test_cluster_keys_of_one_entity_share_a_slot(redis_cluster_url: str) -> None:
    store: Any = store_from_config(State(backend="redis", url=redis_cluster_url, timeout="1s"))
    try:
        routes = ["/api/limited/", "/api/other/", "/"]
        clients = ["ip=10.0.0.1", "user=alice|ip=10.0.0.2", "header:x-api-key=k1"]
        slots = set()
        for route in routes:
            for client in clients:
                composed = limit_key(PREFIX, route, client)
                tag = f"rl:{route}:{client}"
                assert composed == f"{PREFIX}:{{{tag}}}"
                slot = await store.link.call(composed, "CLUSTER", "KEYSLOT", composed)
                assert slot == await store.link.call(tag, "CLUSTER", "KEYSLOT", tag)
                other = f"other:{{{tag}}}:suffix"
                assert slot == await store.link.call(other, "CLUSTER", "KEYSLOT", other)
                assert slot == key_slot(composed)  # the gateway routes as the server does
                slots.add(slot)
                for algorithm in ALGORITHMS:
                    await store.rate_limit(composed, algorithm, 5, 60, 0)
                    assert await store.link.call(composed, "EXISTS", composed)
        assert len(slots) > 1  # entities spread over the cluster
    finally:
        await store.close()


async def test_memory_limiter_state_is_bounded_and_keeps_every_live_key() -> None:
    store = MemoryStore(State(max_keys=100))
    for i in range(100):
        await store.rate_limit(key(f"ip=10.0.{i}.1"), "gcra", 1, 60, 0)
    with pytest.raises(StateError):  # full of live keys: a new client is not counted
        await store.rate_limit(key("ip=10.0.250.1"), "gcra", 1, 60, 0)
    assert len(store._limits.entries) == 100
    assert not (await store.rate_limit(key("ip=10.0.0.1"), "gcra", 1, 60, 0)).allowed


# -- model test: the memory backend against plain reference implementations --------------------


class BucketReference:
    """A continuous token bucket in exact arithmetic: what gcra and token_bucket must decide."""

    def __init__(self, rate: int, period: Fraction, burst: int) -> None:
        self.capacity = rate + burst
        self.per_token = period / rate
        self.tokens = Fraction(self.capacity)
        self.last: Fraction | None = None

    def hit(self, now: Fraction, cost: int) -> tuple[bool, int, Fraction, Fraction]:
        if self.last is not None:
            refilled = self.tokens + (now - self.last) / self.per_token
            self.tokens = min(Fraction(self.capacity), refilled)
        self.last = now
        retry = Fraction(0)
        allowed = self.tokens >= cost
        if allowed:
            self.tokens -= cost
        else:
            retry = (cost - self.tokens) * self.per_token
        reset = (self.capacity - self.tokens) * self.per_token
        return allowed, math.floor(self.tokens), reset, retry


class LogReference:
    """Every admission remembered: never more than ``rate`` in any window of ``period``."""

    def __init__(self, rate: int, period: Fraction, burst: int) -> None:
        self.rate, self.period = rate, period
        self.log: list[Fraction] = []

    def hit(self, now: Fraction, cost: int) -> tuple[bool, int, Fraction, Fraction]:
        live = [t for t in self.log if t > now - self.period]
        if len(live) + cost <= self.rate:
            self.log = live + [now] * cost
            return True, self.rate - len(self.log), self.period, Fraction(0)
        retry = live[len(live) + cost - self.rate - 1] + self.period - now
        return False, self.rate - len(live), live[-1] + self.period - now, retry


steps = st.lists(
    st.tuples(
        st.one_of(st.just(0), st.integers(0, 50), st.integers(0, 3000)),  # ms of time passing
        st.integers(1, 4),  # cost, capped at the capacity below
    ),
    min_size=1,
    max_size=40,
)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=300, deadline=None)
@given(
    rate=st.integers(1, 100),
    period_ms=st.integers(1, 5000),
    burst=st.integers(0, 5),
    steps=steps,
)
def test_memory_limiter_matches_the_reference(
    algorithm: str, rate: int, period_ms: int, burst: int, steps: list[tuple[int, int]]
) -> None:
    # Times are whole milliseconds and rate <= 100, so every exact boundary the reference sees
    # is at least 10 µs away from any other: well clear of the implementation's 1 µs tolerance.
    period = Fraction(period_ms, 1000)
    reference = (LogReference if algorithm == "sliding_window" else BucketReference)(
        rate, period, burst
    )
    capacity = rate if algorithm == "sliding_window" else rate + burst
    clock = [1000.0]
    store = MemoryStore(State(), clock=lambda: clock[0])

    async def run() -> None:
        elapsed = 0
        for advance, cost in steps:
            elapsed += advance
            clock[0] = 1000 + elapsed / 1000
            cost = min(cost, capacity)
            got = await store.rate_limit("k", algorithm, rate, period_ms / 1000, burst, cost)
            allowed, remaining, reset, retry = reference.hit(Fraction(elapsed, 1000), cost)
            assert (got.allowed, got.remaining) == (allowed, remaining), (elapsed, cost)
            assert got.limit == capacity
            assert got.retry_after == pytest.approx(float(retry), abs=1e-6)
            assert got.reset_after == pytest.approx(float(reset), abs=1e-6)

    asyncio.run(run())


# -- limits from config, client keys, headers ---------------------------------------------------


def test_limits_from_config() -> None:
    config = RateLimit.model_validate(
        {
            "requests": 5,
            "per": "1m",
            "algorithm": "token_bucket",
            "authenticated": {"requests": 100, "per": "1m", "burst": 20},
        }
    )
    assert Limit.from_config(config) == Limit(5, 60.0, 0, "token_bucket")
    assert Limit.from_config(config, authenticated=True) == Limit(100, 60.0, 20, "token_bucket")
    plain = RateLimit.model_validate({"requests": 5, "per": "1m", "burst": 2})
    assert Limit.from_config(plain, authenticated=True) == Limit(5, 60.0, 2, "gcra")
    assert Limit.from_config(plain).capacity == 7
    assert Limit(5, 60.0, 2, "sliding_window").capacity == 5


def test_client_keys() -> None:
    hdrs = {"X-Api-Key": "k-123", "X-Odd": "a}b|c"}
    assert client_key(["ip"], "10.0.0.1", None, hdrs, "/r/") == "ip=10.0.0.1"
    assert client_key(["user"], "10.0.0.1", "alice", hdrs, "/r/") == "user=alice"
    assert client_key(["user"], "10.0.0.1", None, hdrs, "/r/") == "ip=10.0.0.1"
    assert client_key(["user", "ip"], "10.0.0.1", None, hdrs, "/r/") == "ip=10.0.0.1"
    assert client_key(["route"], "10.0.0.1", "alice", hdrs, "/r/") == "route=/r/"
    assert (
        client_key(["ip", "header:x-api-key"], "::1", None, hdrs, "/r/")
        == "ip=::1|header:x-api-key=k-123"
    )
    assert client_key(["header:X-Missing"], "::1", None, hdrs, "/r/") == "header:x-missing="
    odd = client_key(["header:X-Odd"], "::1", None, hdrs, "/r/")
    assert odd.startswith("header:x-odd=~") and not set("{}|") & set(odd.split("=", 1)[1])
    assert odd == client_key(["header:X-Odd"], "::2", "bob", hdrs, "/x/")  # stable
    long_sub = client_key(["user"], "::1", "u" * 200, hdrs, "/r/")
    assert len(long_sub) < 64
    assert client_key(["user"], "::1", "10.0.0.1", hdrs, "/r/") != client_key(
        ["ip"], "10.0.0.1", None, hdrs, "/r/"
    )
    with pytest.raises(ValueError):
        client_key(["cookie"], "::1", None, hdrs, "/r/")


def test_limit_key_layout() -> None:
    assert (
        limit_key("spork", "/api/limited/", "ip=1.2.3.4") == "spork:{rl:/api/limited/:ip=1.2.3.4}"
    )


def test_headers_when_allowed() -> None:
    limit = Limit(5, 60.0)
    result = LimitResult(True, 5, 3, 41.2, 0.0)
    assert headers(result, limit) == {
        "RateLimit-Policy": "5;w=60",
        "RateLimit": "limit=5, remaining=3, reset=42",
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "3",
        "X-RateLimit-Reset": "42",
    }


def test_headers_when_denied() -> None:
    limit = Limit(100, 60.0, 20, "token_bucket")
    result = LimitResult(False, 120, 0, 72.0, 0.0001)
    assert headers(result, limit) == {
        "RateLimit-Policy": "100;w=60;burst=20",
        "RateLimit": "limit=120, remaining=0, reset=72",
        "X-RateLimit-Limit": "120",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "72",
        "Retry-After": "1",
    }
    window = Limit(10, 0.5, 3, "sliding_window")
    denied = LimitResult(False, 10, 0, 0.5, 0.25)
    got = headers(denied, window)
    assert got["RateLimit-Policy"] == "10;w=1"
    assert got["Retry-After"] == "1"
    assert headers(LimitResult(False, 5, 1, 30.0, 12.01), Limit(5, 60))["Retry-After"] == "13"
