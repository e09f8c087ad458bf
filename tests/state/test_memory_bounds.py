"""The memory store's bounds: a flood of distinct limiter or cache keys (5x ``max_keys``) never
opens a forced breaker, forgets a revocation or lets a limited client through; replenished
limiter keys make room, and a new key that finds no room is refused (LimiterFull, whatever the
route's on_error); each limited route has a reserved share that no flood through another route
takes."""

from __future__ import annotations

import pytest

from spork_cli.config.model import State
from spork_cli.policies.breaker import BreakerPolicy
from spork_cli.state import (
    breaker_key,
    cache_key,
    cache_marker_key,
    cache_stats_key,
    limit_key,
)
from spork_cli.state.memory import MemoryStore
from spork_cli.state.memory_limiter import LimiterFull

MAX_KEYS = 1_000
FLOOD = 5_000
HOUR = 3600.0
ROUTE = "/api/limited/"
MARK = cache_marker_key("spork", ROUTE, "d")  # never set: nothing is invalidated
STATS = cache_stats_key("spork", ROUTE)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(i: int | str, route: str = ROUTE) -> str:
    return limit_key("spork", route, f"header:x-api-key={i}")


async def hit(store: MemoryStore, key: str, rate: int = 50, period: float = HOUR) -> bool:
    return (await store.rate_limit(key, "gcra", rate, period, 0)).allowed


async def flood_limiter(
    store: MemoryStore, period: float = HOUR, route: str = ROUTE, count: int = FLOOD
) -> int:
    """Distinct clients, one request each; how many the store refused."""
    refused = 0
    for i in range(count):
        try:
            await hit(store, client(f"flood-{i}", route), period=period)
        except LimiterFull:
            refused += 1
    return refused


async def flood_cache(store: MemoryStore) -> None:
    for i in range(FLOOD):
        await store.cache_set(cache_key("spork", ROUTE, f"d{i}"), b"x" * 100, HOUR, MARK, 0.0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(State(max_keys=MAX_KEYS), clock=clock)


async def test_a_forced_open_breaker_stays_open_through_a_flood(store: MemoryStore) -> None:
    key = breaker_key("spork", "flaky")
    await store.breaker_force(key, "open")
    await flood_limiter(store)
    await flood_cache(store)
    decision = await store.breaker_allow(key, BreakerPolicy(cooldown=HOUR))
    assert (decision.state, decision.allowed) == ("open", False)


async def test_a_tripped_breaker_keeps_its_cooldown_through_a_flood(
    store: MemoryStore, clock: Clock
) -> None:
    key = breaker_key("spork", "flaky")
    policy = BreakerPolicy(failures=1, cooldown=HOUR, max_cooldown=HOUR)
    await store.breaker_record(key, policy, False, False)
    await flood_limiter(store)
    await flood_cache(store)
    clock.now += 60
    assert not (await store.breaker_allow(key, policy)).allowed


async def test_a_revoked_jti_stays_revoked_through_a_flood(store: MemoryStore) -> None:
    await store.revoke("jti-revoked", ttl=HOUR)
    await flood_limiter(store)
    await flood_cache(store)
    assert await store.is_revoked("jti-revoked")


async def test_a_client_over_its_limit_stays_refused_through_a_flood(
    store: MemoryStore, clock: Clock
) -> None:
    over = client("over")
    for _ in range(50):
        assert await hit(store, over)
    assert not await hit(store, over)
    await flood_limiter(store)
    await flood_cache(store)
    clock.now += 60  # one of 50 per hour is back after 72 s, not yet
    assert not await hit(store, over)


async def test_new_keys_past_capacity_are_refused_and_known_keys_stay_exact(
    store: MemoryStore,
) -> None:
    for i in range(MAX_KEYS):
        assert await hit(store, client(i), rate=2)
    with pytest.raises(LimiterFull, match="max_keys"):
        await hit(store, client("new"), rate=2)
    assert len(store._limits.entries) == MAX_KEYS
    assert await hit(store, client(0), rate=2)  # the second of two
    assert not await hit(store, client(0), rate=2)  # and no third


async def test_replenished_keys_make_room_for_new_ones(store: MemoryStore, clock: Clock) -> None:
    over = client("over")
    for _ in range(50):
        await hit(store, over)
    assert await flood_limiter(store, period=1.0) == FLOOD - (MAX_KEYS - 1)
    clock.now += 2.0  # every flood key is replenished (idle); the limited one is not
    assert await flood_limiter(store, period=1.0) == FLOOD - (MAX_KEYS - 1)
    assert not await hit(store, over)


async def test_reading_a_limit_does_not_take_a_key(store: MemoryStore) -> None:
    for i in range(MAX_KEYS):
        await hit(store, client(i))
    for algorithm in ("gcra", "token_bucket", "sliding_window"):
        result = await store.rate_limit(client("reader"), algorithm, 5, HOUR, 0, cost=0)
        assert (result.allowed, result.remaining) == (True, 5)


async def test_the_cache_evicts_its_least_recently_used_entries_only(store: MemoryStore) -> None:
    await hit(store, client("kept"))
    kept = cache_key("spork", ROUTE, "kept")
    await store.cache_set(kept, b"hot", HOUR, MARK, 0.0)
    for i in range(FLOOD):
        await store.cache_set(cache_key("spork", ROUTE, f"d{i}"), b"x", HOUR, MARK, 0.0)
        if i % 100 == 0:
            # read: recently used
            assert await store.cache_get(kept, STATS + ":marker") is not None
    assert len(store._cache.entries) == MAX_KEYS
    assert await store.cache_get(cache_key("spork", ROUTE, "d0"), STATS + ":marker") is None
    assert client("kept") in store._limits.entries


async def test_a_fallback_store_admits_new_keys_past_capacity_uncounted(clock: Clock) -> None:
    # Under a Redis store (on_error = "local") the memory store is already the error path.
    fallback = MemoryStore(State(backend="redis", max_keys=MAX_KEYS), clock=clock)
    for i in range(MAX_KEYS):
        await hit(fallback, client(i))
    assert await hit(fallback, client("new"))
    assert client("new") not in fallback._limits.entries


LOGIN = "/login"
PUBLIC = "/public"


async def test_a_flood_through_one_route_leaves_another_its_share(store: MemoryStore) -> None:
    store.share_limits([LOGIN, PUBLIC])
    over = client("over", LOGIN)
    for _ in range(50):
        assert await hit(store, over)
    # /public takes its reserve (a quarter: half of max_keys shared by two routes) and the
    # common half, never the room reserved for /login's new clients.
    assert await flood_limiter(store, route=PUBLIC) == FLOOD - 3 * MAX_KEYS // 4
    assert await flood_limiter(store, route=LOGIN, count=MAX_KEYS // 4 - 1) == 0
    assert not await hit(store, over)
    with pytest.raises(LimiterFull):
        await hit(store, client("one-more", LOGIN))


async def test_each_tier_of_a_route_has_its_own_share(store: MemoryStore) -> None:
    # The authenticated tier's keys also start with the route's prefix: the longest wins.
    store.share_limits([LOGIN, LOGIN + ":auth"])
    assert await flood_limiter(store, route=LOGIN) == FLOOD - 3 * MAX_KEYS // 4
    assert await flood_limiter(store, route=LOGIN + ":auth") == FLOOD - MAX_KEYS // 4


async def test_a_route_alone_may_use_all_the_room(store: MemoryStore) -> None:
    store.share_limits([LOGIN, PUBLIC])
    assert await flood_limiter(store, route=PUBLIC) == FLOOD - 3 * MAX_KEYS // 4
    store.share_limits([PUBLIC])  # a reload left /public the only limited route
    assert await flood_limiter(store, route=PUBLIC) == FLOOD - MAX_KEYS


async def test_a_route_given_a_share_gets_its_room_as_other_keys_lapse(
    store: MemoryStore, clock: Clock
) -> None:
    store.share_limits([PUBLIC])
    assert await flood_limiter(store, route=PUBLIC, period=60.0) == FLOOD - MAX_KEYS
    store.share_limits([LOGIN, PUBLIC])
    with pytest.raises(LimiterFull):
        await hit(store, client("first", LOGIN))
    clock.now += 61.0
    assert await flood_limiter(store, route=LOGIN, count=MAX_KEYS // 4) == 0
    assert await flood_limiter(store, route=PUBLIC) == FLOOD - 3 * MAX_KEYS // 4


async def test_the_refusal_says_when_the_soonest_entry_lapses(
    store: MemoryStore, clock: Clock
) -> None:
    for i in range(MAX_KEYS):
        await hit(store, client(i), rate=1, period=HOUR if i else 30.0)
        clock.now += 0.001
    with pytest.raises(LimiterFull) as refused:
        await hit(store, client("new"))
    assert 29.0 <= refused.value.retry_after <= 31.0
    clock.now += 28.5  # half a second before the first entry lapses
    with pytest.raises(LimiterFull) as refused:
        await hit(store, client("new"))
    assert refused.value.retry_after == 1.0  # at least a second
    clock.now += 1.0
    assert await hit(store, client("new"))


async def test_a_fallback_store_keeps_a_route_s_clients_counted_through_another_s_flood(
    clock: Clock,
) -> None:
    fallback = MemoryStore(State(backend="redis", max_keys=MAX_KEYS), clock=clock)
    fallback.share_limits([LOGIN, PUBLIC])
    assert await flood_limiter(fallback, route=PUBLIC) == 0  # admitted, not all counted
    assert len(fallback._limits.entries) == 3 * MAX_KEYS // 4
    login = client("new", LOGIN)
    for _ in range(50):
        assert await hit(fallback, login)
    assert not await hit(fallback, login)
