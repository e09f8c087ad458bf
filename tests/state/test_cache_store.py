"""The cache primitives on every backend (memory with an injected clock, a real redis-server, a
real 3-node cluster): get, set, age, expiry, invalidation markers, counters, purge; and the
memory backend's byte bound."""

from __future__ import annotations

import asyncio

import pytest

from spork_cli.config.model import GatewayConfig, State
from spork_cli.policies.cache import purge
from spork_cli.state import CacheHit, cache_key, cache_marker_key, cache_stats_key
from spork_cli.state.memory import MemoryStore
from tests.state.conftest import Backend

PREFIX = "spork"
ROUTE = "/api/cached/"
STATS = cache_stats_key(PREFIX, ROUTE)
URL = "0123456789abcdef"
MARKER = cache_marker_key(PREFIX, ROUTE, URL)


def key(digest: str = f"{URL}:fedcba9876543210", route: str = ROUTE) -> str:
    return cache_key(PREFIX, route, digest)


def test_keys_follow_the_documented_layout() -> None:
    assert key("u:v") == "spork:{cache:/api/cached/}:u:v"
    assert STATS == "spork:{cache:/api/cached/}:stats"
    assert MARKER == "spork:{cache:/api/cached/}:0123456789abcdef"


async def test_a_miss_then_a_stored_entry_is_a_hit(backend: Backend) -> None:
    store = backend.store
    assert await store.cache_get(key(), MARKER) is None
    await store.cache_set(key(), b"head\nbody\x00\xff", 30.0, MARKER, 0.0)
    hit = await store.cache_get(key(), MARKER)
    assert isinstance(hit, CacheHit)
    assert hit.value == b"head\nbody\x00\xff"
    assert 0.0 <= hit.age < 1.0
    assert await store.cache_get(key("0:1"), MARKER) is None


async def test_the_age_is_the_time_since_it_was_stored(backend: Backend) -> None:
    store = backend.store
    await store.cache_set(key(), b"v", 30.0, MARKER, 0.0)
    await backend.wait(0.2)
    hit = await store.cache_get(key(), MARKER)
    assert hit is not None
    assert 0.2 <= hit.age < 1.2


async def test_a_new_value_replaces_the_old_and_restarts_the_age(backend: Backend) -> None:
    store = backend.store
    await store.cache_set(key(), b"old", 30.0, MARKER, 0.0)
    await backend.wait(0.2)
    await store.cache_set(key(), b"new", 30.0, MARKER, 0.0)
    hit = await store.cache_get(key(), MARKER)
    assert hit is not None and hit.value == b"new"
    assert hit.age < 0.2


async def test_an_entry_expires_after_its_ttl(backend: Backend) -> None:
    store = backend.store
    await store.cache_set(key(), b"v", 0.15, MARKER, 0.0)
    await store.cache_set(key("long:1"), b"w", 30.0, MARKER, 0.0)
    assert await store.cache_get(key(), MARKER) is not None
    await backend.wait(0.15)
    assert await store.cache_get(key(), MARKER) is None
    assert await store.cache_get(key("long:1"), MARKER) is not None


async def test_counters_add_up_per_route(backend: Backend) -> None:
    store = backend.store
    assert await store.cache_stats(STATS) == {}
    await store.cache_count(STATS, {"hits": 3, "misses": 1})
    await store.cache_count(STATS, {"hits": 2, "stores": 1, "stale": 4})
    assert await store.cache_stats(STATS) == {"hits": 5, "misses": 1, "stores": 1, "stale": 4}
    other = cache_stats_key(PREFIX, "other")
    assert await store.cache_stats(other) == {}


async def test_concurrent_counts_are_all_kept(backend: Backend) -> None:
    store = backend.store
    await asyncio.gather(*(store.cache_count(STATS, {"hits": 1}) for _ in range(50)))
    assert (await store.cache_stats(STATS))["hits"] == 50


async def test_an_invalidated_url_serves_none_of_its_entries_stored_before(
    backend: Backend,
) -> None:
    store = backend.store
    alice, bob = key(f"{URL}:{1:016x}"), key(f"{URL}:{2:016x}")
    elsewhere = key(f"{'f' * 16}:{1:016x}")
    for stored in (alice, bob, elsewhere):
        await store.cache_set(stored, b"old", 30.0, MARKER, 0.0)
    await backend.wait(0.01)  # Redis stamps microseconds: the marker comes after the entries
    await store.cache_invalidate(MARKER, 30.0)
    assert await store.cache_get(alice, MARKER) is None
    assert await store.cache_get(bob, MARKER) is None
    other_marker = cache_marker_key(PREFIX, ROUTE, "f" * 16)
    assert await store.cache_get(elsewhere, other_marker) is not None
    await backend.wait(0.01)
    # Asked after the invalidation: stored and served.
    await store.cache_set(alice, b"new", 30.0, MARKER, 0.0)
    hit = await store.cache_get(alice, MARKER)
    assert hit is not None and hit.value == b"new"
    assert await store.scan(f"spork:[{{]cache:/api/cached/}}:{URL}:*") == [alice]


async def test_an_answer_asked_before_an_invalidation_is_not_stored(backend: Backend) -> None:
    # A GET went upstream, then a write invalidated its URL, then the GET's (older) answer
    # came back: storing it would serve what the write replaced.
    store = backend.store
    await store.cache_invalidate(MARKER, 30.0)
    await backend.wait(0.05)
    assert await store.cache_set(key(), b"old", 30.0, MARKER, 1.0) is False
    assert await store.cache_get(key(), MARKER) is None
    assert await store.cache_set(key(), b"new", 30.0, MARKER, 0.0) is True
    hit = await store.cache_get(key(), MARKER)
    assert hit is not None and hit.value == b"new"


async def test_an_invalidation_marker_expires(backend: Backend) -> None:
    store = backend.store
    await store.cache_invalidate(MARKER, 0.15)
    assert await store.scan(f"spork:[{{]cache:/api/cached/}}:{URL}") == [MARKER]
    await backend.wait(0.2)
    assert await store.scan(f"spork:[{{]cache:/api/cached/}}:{URL}") == []


@pytest.mark.parametrize("ttl", [0.0, 0.0005, -1.0])
async def test_a_ttl_under_one_millisecond_stores_nothing(backend: Backend, ttl: float) -> None:
    store = backend.store
    await store.cache_set(key(), b"v", ttl, MARKER, 0.0)
    assert await store.cache_get(key(), MARKER) is None
    assert await store.scan("spork:[{]cache:*") == []


def config_with_cached_route() -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "services": [{"name": "svc", "endpoints": ["http://127.0.0.1:9"]}],
            "routes": [
                {"path": ROUTE, "service": "svc", "cache": {"ttl": "30s"}},
                {"path": "/other/", "service": "svc", "name": "other", "cache": {}},
            ],
        }
    )


async def test_purge_deletes_entries_by_scan_and_leaves_the_counters(backend: Backend) -> None:
    store = backend.store
    config = config_with_cached_route()
    mine = [key(f"{n:016x}:{n:016x}") for n in range(5)]
    theirs = key("a:b", route="other")
    for stored in mine:
        await store.cache_set(stored, b"v", 30.0, MARKER, 0.0)
    await store.cache_set(theirs, b"v", 30.0, cache_marker_key(PREFIX, "other", "a"), 0.0)
    await store.cache_count(STATS, {"stores": 5})
    assert sorted(await store.scan("spork:[{]cache:/api/cached/}:*:*")) == sorted(mine)
    assert await purge(store, config, ROUTE) == 5
    assert await store.scan("spork:[{]cache:/api/cached/}:*:*") == []
    assert await store.scan("spork:[{]cache:/api/cached/}:stats") == [STATS]
    assert (await store.cache_stats(STATS))["stores"] == 5
    assert await store.cache_get(theirs, cache_marker_key(PREFIX, "other", "a")) is not None
    assert await purge(store, config, ROUTE) == 0


async def test_memory_never_evicts_a_marker_it_empties_the_cache_instead() -> None:
    now = [1000.0]
    store = MemoryStore(State(max_keys=100), clock=lambda: now[0])
    await store.cache_set(key(), b"old", 30.0, MARKER, 0.0)
    now[0] += 1
    await store.cache_invalidate(MARKER, 30.0)
    for n in range(120):  # a flood of invalidations of other URLs
        now[0] += 0.01
        await store.cache_invalidate(cache_marker_key(PREFIX, ROUTE, f"{n:016x}"), 30.0)
    assert await store.cache_get(key(), MARKER) is None  # never comes back


# --- the memory backend's byte bound ---------------------------------------------------------


async def test_memory_evicts_the_oldest_entries_past_max_bytes() -> None:
    store = MemoryStore(State(max_bytes=4000))
    for n in range(6):
        await store.cache_set(key(f"{n}:0"), bytes(1000), 30.0, MARKER, 0.0)
    kept = [n for n in range(6) if await store.cache_get(key(f"{n}:0"), MARKER) is not None]
    assert kept == [3, 4, 5]  # 1008 bytes each with the stamp: three fit under 4000


async def test_memory_bytes_are_given_back_on_replace_delete_and_expiry() -> None:
    now = [1000.0]
    store = MemoryStore(State(max_bytes=4000), clock=lambda: now[0])
    await store.cache_set(key("keep:0"), bytes(1000), 30.0, MARKER, 0.0)
    for _ in range(10):  # replacing one entry does not add up
        await store.cache_set(key("same:0"), bytes(1000), 30.0, MARKER, 0.0)
    await store.cache_set(key("gone:0"), bytes(1000), 30.0, MARKER, 0.0)
    await store.delete([key("gone:0")])
    await store.cache_set(key("brief:0"), bytes(1000), 1.0, MARKER, 0.0)
    now[0] += 2
    assert await store.cache_get(key("brief:0"), MARKER) is None
    await store.cache_set(key("new:0"), bytes(1000), 30.0, MARKER, 0.0)
    for name in ("keep", "same", "new"):
        assert await store.cache_get(key(f"{name}:0"), MARKER) is not None, name


async def test_memory_cached_responses_never_evict_revocations() -> None:
    store = MemoryStore(State(max_bytes=64 * 1024))
    await store.revoke("stolen-token", ttl=3600)
    for n in range(100):
        await store.cache_set(key(f"{n}:0"), bytes(1024), 30.0, MARKER, 0.0)
    # Past max_bytes alone:
    await store.cache_set(key("huge:0"), bytes(128 * 1024), 30.0, MARKER, 0.0)
    assert await store.is_revoked("stolen-token")
