"""The in-process backend (the embedded default): bounded, expiring, one process only.

The limiter and breaker primitives (in memory_limiter.py and memory_breaker.py) mirror the Lua
scripts in ``spork_cli/state/lua`` step for step, in seconds instead of microseconds, so both
backends decide alike.
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from fnmatch import fnmatchcase

from spork_cli.config.model import State
from spork_cli.state import CACHE_STATS_TTL, CacheHit, instance_key, revoked_key
from spork_cli.state.memory_breaker import MemoryBreakers
from spork_cli.state.memory_limiter import MemoryLimiters

_STAMP = struct.Struct("<d")  # a cache entry starts with when it was stored


class _Space:
    """Expiring entries in insertion order; past ``max_keys`` entries or ``max_bytes`` of
    values the oldest go first. Without bounds nothing is evicted, and expired entries are
    swept whenever the space has doubled since the last sweep."""

    def __init__(
        self, clock: Callable[[], float], max_keys: int | None, max_bytes: int | None = None
    ) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.entries: OrderedDict[str, tuple[float | None, bytes]] = OrderedDict()
        self.size = 0  # bytes of the values
        self._sweep_at = 1024

    def get(self, key: str) -> bytes | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires is not None and expires <= self.clock():
            self.pop(key)
            return None
        return value

    def pop(self, key: str) -> bool:
        entry = self.entries.pop(key, None)
        if entry is None:
            return False
        self.size -= len(entry[1])
        return True

    def set(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Store ``value``; False (and nothing stored) when it alone is over ``max_bytes``."""
        self.pop(key)
        if self.max_bytes is not None and len(value) > self.max_bytes:
            return False
        expires = self.clock() + ttl if ttl is not None else None
        self.entries[key] = (expires, value)
        self.size += len(value)
        if self.max_keys is None and self.max_bytes is None:
            if len(self.entries) >= self._sweep_at:
                for name in list(self.entries):
                    self.get(name)
                self._sweep_at = max(2 * len(self.entries), 1024)
            return True
        while self.entries and (
            (self.max_keys is not None and len(self.entries) > self.max_keys)
            or (self.max_bytes is not None and self.size > self.max_bytes)
        ):
            _, (_, evicted) = self.entries.popitem(last=False)
            self.size -= len(evicted)
        return True

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0


class MemoryStore(MemoryLimiters, MemoryBreakers):
    backend = "memory"

    def __init__(self, config: State, clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = config.prefix
        self.max_keys = config.max_keys
        self.max_bytes = config.max_bytes
        self.clock = clock
        # Three spaces, so that one kind of entry never evicts another: limiter and breaker
        # state (bounded in keys); cached responses (in keys and bytes); revocations and
        # heartbeats (never evicted: a revoked token must stay revoked until it expires).
        self._state = _Space(clock, config.max_keys)
        self._data = self._state.entries
        self._cache = _Space(clock, config.max_keys, config.max_bytes)
        self._pinned = _Space(clock, None)
        self._spaces = (self._state, self._cache, self._pinned)
        # The cache's hit counters, kept apart: they change on every lookup.
        self._counters: dict[str, tuple[float, dict[str, int]]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for space in self._spaces:
            space.clear()
        self._counters.clear()

    async def ping(self, timeout: float | None = None) -> None:
        return None

    def _get(self, key: str) -> bytes | None:
        return self._state.get(key)

    def _pop(self, key: str) -> bool:
        return self._state.pop(key)

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._state.set(key, value, ttl)

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

    def _count(self, stats: str, field: str) -> None:
        now = self.clock()
        expires, counters = self._counters.get(stats, (0.0, {}))
        if expires <= now:
            counters = {}
        counters[field] = counters.get(field, 0) + 1
        self._counters[stats] = (now + CACHE_STATS_TTL, counters)

    async def cache_get(self, key: str, stats: str) -> CacheHit | None:
        stored = self._cache.get(key)
        self._count(stats, "misses" if stored is None else "hits")
        if stored is None:
            return None
        (stored_at,) = _STAMP.unpack_from(stored)
        return CacheHit(stored[_STAMP.size :], max(self.clock() - stored_at, 0.0))

    async def cache_set(self, key: str, stats: str, value: bytes, ttl: float) -> None:
        if ttl < 0.001:  # Redis keeps milliseconds: below one, nothing is stored on either
            return
        if self._cache.set(key, _STAMP.pack(self.clock()) + value, ttl):
            self._count(stats, "stores")

    async def cache_stats(self, stats: str) -> dict[str, int]:
        expires, counters = self._counters.get(stats, (0.0, {}))
        return dict(counters) if expires > self.clock() else {}
