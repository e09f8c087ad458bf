"""The in-process backend (the embedded default): bounded, expiring, one process only.

The limiter and breaker primitives (in memory_limiter.py and memory_breaker.py) mirror the Lua
scripts in ``spork_cli/state/lua`` step for step, in seconds instead of microseconds, so both
backends decide alike.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase

from spork_cli.config.model import State
from spork_cli.state import CACHE_STATS_TTL, CacheHit, instance_key, limit_key, revoked_key
from spork_cli.state.memory_breaker import MemoryBreakers
from spork_cli.state.memory_limiter import MemoryLimiters
from spork_cli.state.memory_space import LimitSpace, Space

_STAMP = struct.Struct("<d")  # a cache entry starts with when it was stored


class MemoryStore(MemoryLimiters, MemoryBreakers):
    backend = "memory"

    def __init__(self, config: State, clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = config.prefix
        self.max_keys = config.max_keys
        self.max_bytes = config.max_bytes
        self.clock = clock
        # Four spaces, so that no kind of entry ever evicts another: limiter state (at most
        # max_keys, shared out between the limited routes, live entries never evicted);
        # cached responses (least recently used go past max_keys or max_bytes); breakers, and
        # revocations with heartbeats (never evicted: a forced breaker stays forced, a revoked
        # token stays revoked until it expires).
        self._limits = LimitSpace(clock, config.max_keys)
        self._cache = Space(clock, config.max_keys, config.max_bytes)
        # Invalidation markers, apart from the entries so that filling the cache never
        # evicts one (which would bring back what it invalidated); past max_keys of them,
        # cache_invalidate empties the cache instead of evicting one.
        self._markers = Space(clock, None)
        self._breakers = Space(clock, None)
        self._pinned = Space(clock, None)
        self._spaces: tuple[Space | LimitSpace, ...] = (
            self._limits,
            self._cache,
            self._markers,
            self._breakers,
            self._pinned,
        )
        # A memory store under a Redis one is its fallback (on_error = "local", during an
        # outage): there the client of a new key that finds no room is admitted uncounted, as
        # the store is already the error path; on the memory backend it is refused.
        self.admit_when_full = config.backend != "memory"
        # The cache's hit counters, kept apart: they change on every lookup.
        self._counters: dict[str, tuple[float, dict[str, int]]] = {}

    def share_limits(self, tiers: Iterable[str]) -> None:
        """Reserve each limiter tier (a route id, with ``:auth`` for a route's authenticated
        tier) an equal part of half of ``max_keys``, so that no route's clients can take the
        room of another's new ones (`LimitSpace`); the tiers named before lose theirs."""
        self._limits.share(limit_key(self.prefix, tier, "").removesuffix("}") for tier in tiers)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for space in self._spaces:
            space.clear()
        self._counters.clear()

    async def ping(self, timeout: float | None = None) -> None:
        return None

    async def scan(self, match: str, limit: int = 10_000) -> list[str]:
        found = []
        for space in self._spaces:
            for key in list(space.entries):
                if fnmatchcase(key, match) and space.get(key) is not None:
                    found.append(key)
        found.extend(key for key in self._counters if fnmatchcase(key, match))
        return found[:limit]

    async def delete(self, keys: list[str]) -> int:
        deleted = 0
        for key in keys:
            gone = [space.pop(key) for space in self._spaces]
            deleted += any(gone) or self._counters.pop(key, None) is not None
        return deleted

    async def revoke(self, jti: str, ttl: float) -> None:
        if ttl > 0:
            self._pinned.set(revoked_key(self.prefix, jti), b"1", ttl)

    async def is_revoked(self, jti: str) -> bool:
        return self._pinned.get(revoked_key(self.prefix, jti)) is not None

    async def heartbeat(self, instance: str, info: bytes, ttl: float) -> None:
        self._pinned.set(instance_key(self.prefix, instance), info, ttl)

    async def instances(self) -> dict[str, bytes]:
        head = instance_key(self.prefix, "")
        found: dict[str, bytes] = {}
        for key in list(self._pinned.entries):
            if key.startswith(head):
                value = self._pinned.get(key)
                if value is not None:
                    found[key[len(head) :]] = value
        return found

    async def cache_get(self, key: str, marker: str) -> CacheHit | None:
        stored = self._cache.get(key)
        if stored is None:
            return None
        (stored_at,) = _STAMP.unpack_from(stored)
        invalidated = self._markers.get(marker)
        if invalidated is not None and stored_at <= _STAMP.unpack(invalidated)[0]:
            self._cache.pop(key)
            return None
        return CacheHit(stored[_STAMP.size :], max(self.clock() - stored_at, 0.0))

    async def cache_set(
        self, key: str, value: bytes, ttl: float, marker: str, asked: float
    ) -> bool:
        if ttl < 0.001:  # Redis keeps milliseconds: below one, nothing is stored on either
            return False
        now = self.clock()
        invalidated = self._markers.get(marker)
        if invalidated is not None and _STAMP.unpack(invalidated)[0] >= now - max(asked, 0.0):
            return False
        self._cache.set(key, _STAMP.pack(now) + value, ttl)
        return True

    async def cache_invalidate(self, marker: str, ttl: float) -> None:
        if marker not in self._markers.entries and len(self._markers.entries) >= self.max_keys:
            # No room for one more marker: rather than evict one (which would bring back
            # what it invalidated), forget every cached response and every marker.
            self._cache.clear()
            self._markers.clear()
        self._markers.set(marker, _STAMP.pack(self.clock()), max(ttl, 0.001))

    async def cache_count(self, stats: str, counts: Mapping[str, int]) -> None:
        now = self.clock()
        expires, counters = self._counters.get(stats, (0.0, {}))
        if expires <= now:
            counters = {}
        for field, n in counts.items():
            counters[field] = counters.get(field, 0) + n
        self._counters[stats] = (now + CACHE_STATS_TTL, counters)

    async def cache_stats(self, stats: str) -> dict[str, int]:
        expires, counters = self._counters.get(stats, (0.0, {}))
        return dict(counters) if expires > self.clock() else {}
