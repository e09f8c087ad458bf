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


class MemoryStore(MemoryLimiters, MemoryBreakers):
    backend = "memory"

    def __init__(self, config: State, clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = config.prefix
        self.max_keys = config.max_keys
        self.max_bytes = config.max_bytes
        self.clock = clock
        # key -> (expires_at or None, value); insertion order gives eviction order
        self._data: OrderedDict[str, tuple[float | None, bytes]] = OrderedDict()
        self._bytes = 0  # of the values in _data
        # The cache's hit counters, kept apart: they change on every lookup.
        self._counters: dict[str, tuple[float, dict[str, int]]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()
        self._counters.clear()
        self._bytes = 0

    async def ping(self) -> None:
        return None

    def _get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires is not None and expires <= self.clock():
            self._pop(key)
            return None
        return value

    def _pop(self, key: str) -> bool:
        entry = self._data.pop(key, None)
        if entry is None:
            return False
        self._bytes -= len(entry[1])
        return True

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        expires = self.clock() + ttl if ttl is not None else None
        self._pop(key)
        self._data[key] = (expires, value)
        self._bytes += len(value)
        while len(self._data) > self.max_keys or (self._bytes > self.max_bytes and self._data):
            _, (_, evicted) = self._data.popitem(last=False)
            self._bytes -= len(evicted)

    async def scan(self, match: str, limit: int = 10_000) -> list[str]:
        found = []
        for key in [*self._data, *self._counters]:
            if fnmatchcase(key, match) and (key in self._counters or self._get(key) is not None):
                found.append(key)
                if len(found) >= limit:
                    break
        return found

    async def delete(self, keys: list[str]) -> int:
        return sum(self._pop(key) or self._counters.pop(key, None) is not None for key in keys)

    async def revoke(self, jti: str, ttl: float) -> None:
        if ttl > 0:
            self._set(revoked_key(self.prefix, jti), b"1", ttl)

    async def is_revoked(self, jti: str) -> bool:
        return self._get(revoked_key(self.prefix, jti)) is not None

    async def heartbeat(self, instance: str, info: bytes, ttl: float) -> None:
        self._set(instance_key(self.prefix, instance), info, ttl)

    async def instances(self) -> dict[str, bytes]:
        head = instance_key(self.prefix, "")
        found: dict[str, bytes] = {}
        for key in list(self._data):
            if key.startswith(head):
                value = self._get(key)
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
        stored = self._get(key)
        self._count(stats, "misses" if stored is None else "hits")
        if stored is None:
            return None
        (stored_at,) = _STAMP.unpack_from(stored)
        return CacheHit(stored[_STAMP.size :], max(self.clock() - stored_at, 0.0))

    async def cache_set(self, key: str, stats: str, value: bytes, ttl: float) -> None:
        if ttl < 0.001:  # Redis keeps milliseconds: below one, nothing is stored on either
            return
        self._set(key, _STAMP.pack(self.clock()) + value, ttl)
        self._count(stats, "stores")

    async def cache_stats(self, stats: str) -> dict[str, int]:
        expires, counters = self._counters.get(stats, (0.0, {}))
        return dict(counters) if expires > self.clock() else {}
