"""Where the memory backend keeps its entries: expiring spaces that never evict one another.

`Space` evicts its least recently used entries past its bounds (cached responses: losing one
is safe) or, unbounded, only drops expired ones (breakers, revocations, heartbeats).
`LimitSpace` holds limiter state and never forgets a live entry: limiter entries expire once
replenished, when dropping them changes no decision, and only those are reclaimed. Its room is
shared out between the limiter tiers (`Tier`) so that no tier can take another's.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable

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


class Tier:
    """One limiter tier's (a route's, or its authenticated half's) count of live entries, and
    how many of them are reserved for it."""

    __slots__ = ("count", "name", "reserved")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.reserved = 0


class LimitSpace:
    """At most ``max_keys`` limiter entries, each with a time to live; a live one is never
    evicted.

    Fair shares: half of ``max_keys`` is reserved, in equal parts, for the tiers named by
    `share` (each key belongs to the tier whose key prefix is its longest match); the other
    half, and any room not reserved, is taken first come. A tier below its reserve always
    finds room; past it, a tier takes only room that no other tier has reserved and not yet
    used. So a flood of keys through one tier cannot deny another tier's new clients, while a
    tier alone on a quiet gateway can still use most of the space. A key of no named tier has
    no reserve.

    Expiry times sit in a wheel of one-second buckets (a heap of bucket ids beside it), so the
    expired entries are found without a scan: each write drops up to `RECLAIM_BUDGET` of them,
    and a new key that finds no room first reclaims what has expired. When there is still no
    room, `set` refuses the new key and the caller decides what that client gets.
    """

    def __init__(self, clock: Callable[[], float], max_keys: int) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self.entries: dict[str, tuple[float, bytes, Tier | None]] = {}
        self._wheel: dict[int, set[str]] = {}  # ceil(expiry) -> keys expiring in that second
        self._ticks: list[int] = []  # heap of the wheel's bucket ids, each once
        self._tiers: dict[str, Tier] = {}  # by key prefix: the named ones, and any with entries
        self._reserved = 0  # reserved room not yet used: sum of max(reserved - count, 0)
        self._shortest = 0  # length of the shortest tier prefix (where a lookup starts)

    def share(self, prefixes: Iterable[str]) -> None:
        """Reserve room for the tiers whose keys start with these ``prefixes`` (each ending in
        the ``:`` before the client part), in place of those named before. A tier that loses its
        reserve keeps its entries; one that gains a reserve gets its room as others' keys
        lapse."""
        named = frozenset(prefixes)
        reserve = self.max_keys // (2 * len(named)) if named else 0
        for prefix in named:
            if prefix not in self._tiers:
                self._tiers[prefix] = Tier(prefix)
        for prefix, tier in list(self._tiers.items()):
            tier.reserved = reserve if prefix in named else 0
            if not tier.reserved and not tier.count:
                del self._tiers[prefix]
        self._reserved = sum(max(tier.reserved - tier.count, 0) for tier in self._tiers.values())
        self._shortest = min((len(prefix) for prefix in self._tiers), default=0)

    def tier(self, key: str) -> Tier | None:
        """The tier of a new key: the one with the longest prefix of it."""
        found = None
        tiers = self._tiers
        if tiers:
            end = key.find(":", self._shortest - 1)
            while end >= 0:
                found = tiers.get(key[: end + 1], found)
                end = key.find(":", end + 1)
        return found

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
        self._release(entry[2])
        return True

    def set(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` for ``ttl`` seconds (0 or less: the state is idle, nothing is kept).
        False, and nothing stored, when ``key`` is new and its tier finds no room."""
        now = self.clock()
        if self._ticks and self._ticks[0] <= now:
            self._reclaim(now, RECLAIM_BUDGET)
        old = self.entries.get(key)
        if ttl <= 0:
            if old is not None:
                self.pop(key)
            return True
        if old is None:
            tier = self.tier(key)
            # Each expired entry goes once, so reclaiming until there is room is cheap overall.
            while not self._room(tier):
                if not self._reclaim(now, 1):
                    return False
            if tier is not None:
                if tier.count < tier.reserved:
                    self._reserved -= 1
                tier.count += 1
        else:
            tier = old[2]
        expires = now + ttl
        self.entries[key] = (expires, value, tier)
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

    def _room(self, tier: Tier | None) -> bool:
        if tier is not None and tier.count < tier.reserved:
            return len(self.entries) < self.max_keys
        return len(self.entries) + self._reserved < self.max_keys

    def _release(self, tier: Tier | None) -> None:
        if tier is None:
            return
        tier.count -= 1
        if tier.count < tier.reserved:
            self._reserved += 1
        elif not tier.count and not tier.reserved:
            self._tiers.pop(tier.name, None)  # a tier no longer named, now empty

    def next_expiry(self) -> float | None:
        """About when the soonest live entry lapses (to the second above), or None when
        there is none."""
        ticks, wheel = self._ticks, self._wheel
        while ticks and not wheel[ticks[0]]:
            del wheel[heapq.heappop(ticks)]
        return float(ticks[0]) if ticks else None

    def _reclaim(self, now: float, budget: int) -> int:
        """Drop up to ``budget`` expired entries, earliest bucket first; how many went. A
        bucket whose second is over holds only expired entries, so none is looked at twice."""
        freed = 0
        ticks, wheel = self._ticks, self._wheel
        while ticks and ticks[0] <= now:
            bucket = wheel[ticks[0]]
            while bucket and freed < budget:
                self._release(self.entries.pop(bucket.pop())[2])
                freed += 1
            if bucket:
                break
            del wheel[heapq.heappop(ticks)]
        return freed

    def clear(self) -> None:
        self.entries.clear()
        self._wheel.clear()
        self._ticks.clear()
        for tier in self._tiers.values():
            tier.count = 0
        self.share([prefix for prefix, tier in self._tiers.items() if tier.reserved])
