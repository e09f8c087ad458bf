"""Where the memory backend keeps its entries: expiring spaces that never evict one another.

`Space` evicts its least recently used entries past its bounds (cached responses: losing one
is safe) or, unbounded, only drops expired ones (breakers, revocations, heartbeats).
`LimitSpace` holds limiter state and never forgets a live entry: limiter entries expire once
replenished, when dropping them changes no decision, and only those are reclaimed.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Callable

# Expired limiter entries dropped per write at most, so no request pays for a big sweep.
RECLAIM_BUDGET = 16


class Space:
    """Expiring entries; past ``max_keys`` entries or ``max_bytes`` of values the least
    recently used go first. Without bounds nothing is evicted, and expired entries are swept
    whenever the space has doubled since the last sweep."""

    def __init__(
        self, clock: Callable[[], float], max_keys: int | None, max_bytes: int | None = None
    ) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.bounded = max_keys is not None or max_bytes is not None
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
        if self.bounded:
            self.entries.move_to_end(key)
        return value

    def expires(self, key: str) -> float | None:
        """When ``key`` expires (None: never, or no such entry)."""
        entry = self.entries.get(key)
        return None if entry is None else entry[0]

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
        if not self.bounded:
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


class LimitSpace:
    """At most ``max_keys`` limiter entries, each with a time to live; a live one is never
    evicted.

    Expiry times sit in a wheel of one-second buckets (a heap of bucket ids beside it), so the
    expired entries are found without a scan: each write drops up to `RECLAIM_BUDGET` of them,
    and a new key that finds the space full first reclaims what has expired. When every entry
    is live, `set` refuses the new key and the caller decides what that client gets.
    """

    def __init__(self, clock: Callable[[], float], max_keys: int) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self.entries: dict[str, tuple[float, bytes]] = {}
        self._wheel: dict[int, set[str]] = {}  # ceil(expiry) -> keys expiring in that second
        self._ticks: list[int] = []  # heap of the wheel's bucket ids, each once

    def get(self, key: str) -> bytes | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            self.pop(key)
            return None
        return entry[1]

    def expires(self, key: str) -> float | None:
        entry = self.entries.get(key)
        return None if entry is None else entry[0]

    def pop(self, key: str) -> bool:
        entry = self.entries.pop(key, None)
        if entry is None:
            return False
        self._wheel[math.ceil(entry[0])].discard(key)
        return True

    def set(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` for ``ttl`` seconds (0 or less: the state is idle, nothing is kept).
        False, and nothing stored, when ``key`` is new and every entry is live."""
        now = self.clock()
        if self._ticks and self._ticks[0] <= now:
            self._reclaim(now, RECLAIM_BUDGET)
        old = self.entries.get(key)
        if ttl <= 0:
            if old is not None:
                self.pop(key)
            return True
        if old is None and len(self.entries) >= self.max_keys and not self._reclaim(now, 1):
            return False
        expires = now + ttl
        self.entries[key] = (expires, value)
        tick = math.ceil(expires)  # > now, so never a bucket already reclaimed
        if old is not None:
            before = math.ceil(old[0])
            if before == tick:
                return True
            self._wheel[before].discard(key)
        bucket = self._wheel.get(tick)
        if bucket is None:
            bucket = self._wheel[tick] = set()
            heapq.heappush(self._ticks, tick)
        bucket.add(key)
        return True

    def _reclaim(self, now: float, budget: int) -> int:
        """Drop up to ``budget`` expired entries, earliest bucket first; how many went. A
        bucket whose second is over holds only expired entries, so none is looked at twice."""
        freed = 0
        ticks, wheel = self._ticks, self._wheel
        while ticks and ticks[0] <= now:
            bucket = wheel[ticks[0]]
            while bucket and freed < budget:
                del self.entries[bucket.pop()]
                freed += 1
            if bucket:
                break
            del wheel[heapq.heappop(ticks)]
        return freed

    def clear(self) -> None:
        self.entries.clear()
        self._wheel.clear()
        self._ticks.clear()
