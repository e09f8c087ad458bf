"""The in-process backend (the embedded default): bounded, expiring, one process only.

The limiter and breaker primitives mirror the Lua scripts in ``spork_cli/state/lua`` step for
step, in seconds instead of microseconds, so both backends decide alike.
"""

from __future__ import annotations

import math
import struct
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

import orjson

from spork_cli.config.model import State
from spork_cli.state import (
    BREAKER_BUCKETS,
    CACHE_STATS_TTL,
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    CacheHit,
    ForcedState,
    LimitResult,
    check_limit_args,
    instance_key,
    revoked_key,
)

# Clock tolerance of every limiter decision, as in the Lua scripts (1 µs): it absorbs float
# rounding so that exactly `capacity` requests pass at one instant, never capacity - 1.
SLACK = 1e-6
# Limiter entries start with a tag byte so a key whose algorithm changed (config reload)
# starts afresh instead of misreading another algorithm's state.
_GCRA = struct.Struct("<cd")
_BUCKET = struct.Struct("<cdd")
_STAMP = struct.Struct("<d")  # a cache entry starts with when it was stored
# What an idle force-cleared breaker keeps when it never saw a policy (3 x the default cap)
DEFAULT_BREAKER_TTL = 900.0
# Float tolerance of the failure-ratio comparison, as in breaker_common.lua
RATIO_SLACK = 1e-9


def _fresh_breaker() -> dict[str, Any]:
    return {
        "state": "closed",
        "failures": 0,
        "opened_at": None,
        "cooldown": 0.0,
        "probes": 0,
        "probe_ok": 0,
        "probe_until": None,
        "forced": None,
        "trips": 0,
        "ttl": None,
        "wlen": None,
        "window": [],  # [bucket id, successes, failures] per live bucket
    }


class MemoryStore:
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

    async def rate_limit(
        self,
        key: str,
        algorithm: str,
        rate: int,
        period: float,
        burst: int,
        cost: int = 1,
    ) -> LimitResult:
        capacity = check_limit_args(algorithm, rate, period, burst, cost)
        now = self.clock()
        if algorithm == "gcra":
            return self._gcra(key, now, period / rate, capacity, cost)
        if algorithm == "token_bucket":
            return self._token_bucket(key, now, period / rate, capacity, cost)
        return self._sliding_window(key, now, period, capacity, cost)

    def _gcra(self, key: str, now: float, emission: float, capacity: int, cost: int) -> LimitResult:
        stored = self._get(key)
        tat = now
        if stored is not None and stored[:1] == b"g":
            tat = max(_GCRA.unpack(stored)[1], now)
        window = capacity * emission
        new_tat = tat + cost * emission
        ahead = new_tat - now
        if ahead > window + SLACK:
            remaining = math.floor((window - (tat - now) + SLACK) / emission)
            return LimitResult(False, capacity, max(remaining, 0), tat - now, ahead - window)
        self._set(key, _GCRA.pack(b"g", new_tat), ahead)
        remaining = math.floor((window - ahead + SLACK) / emission)
        return LimitResult(True, capacity, max(remaining, 0), ahead, 0.0)

    def _token_bucket(
        self, key: str, now: float, per_token: float, capacity: int, cost: int
    ) -> LimitResult:
        stored = self._get(key)
        tokens, stamp = float(capacity), now
        if stored is not None and stored[:1] == b"t":
            _, tokens, stamp = _BUCKET.unpack(stored)
            if now > stamp:
                tokens = min(float(capacity), tokens + (now - stamp) / per_token)
                stamp = now
        slack = SLACK / per_token
        if tokens + slack < cost:
            remaining = math.floor(tokens + slack)
            reset = (capacity - tokens) * per_token
            return LimitResult(
                False, capacity, max(remaining, 0), reset, (cost - tokens) * per_token
            )
        tokens -= cost
        reset = (capacity - tokens) * per_token
        self._set(key, _BUCKET.pack(b"t", tokens, stamp), reset)
        return LimitResult(True, capacity, max(math.floor(tokens + slack), 0), reset, 0.0)

    def _sliding_window(
        self, key: str, now: float, period: float, capacity: int, cost: int
    ) -> LimitResult:
        stored = self._get(key)
        log = array("d")
        if stored is not None and stored[:1] == b"s":
            log.frombytes(stored[1:])
        # an admission at time s counts while s > now - period (less the tolerance)
        start = 0
        while start < len(log) and log[start] <= now - period + SLACK:
            start += 1
        del log[:start]
        count = len(log)
        if count + cost > capacity:
            need = count + cost - capacity  # admissions that must leave the window first
            retry = log[need - 1] + period - now
            reset = log[-1] + period - now
            if start:
                self._set(key, b"s" + log.tobytes(), reset)
            return LimitResult(False, capacity, max(capacity - count, 0), reset, retry)
        log.extend([now] * cost)
        self._set(key, b"s" + log.tobytes(), period)
        return LimitResult(True, capacity, capacity - count - cost, period, 0.0)

    # -- circuit breakers (mirrors lua/breaker_*.lua) ------------------------------------------

    def _breaker_load(self, key: str) -> dict[str, Any] | None:
        stored = self._get(key)
        if stored is None or stored[:1] != b"b":
            return None
        loaded: dict[str, Any] = orjson.loads(stored[1:])
        return loaded

    def _breaker_save(self, key: str, b: dict[str, Any], ttl: float | None) -> None:
        if ttl is not None:
            b["ttl"] = ttl
        self._set(key, b"b" + orjson.dumps(b), None if b["forced"] else b["ttl"])

    def _epoch(self, at: float | None) -> float | None:
        # times are kept on the store's clock; the CLI wants wall-clock seconds
        return None if at is None else at + (time.time() - self.clock())

    @staticmethod
    def _window_counts(b: dict[str, Any], now: float) -> tuple[int, int]:
        if not b["wlen"]:
            return 0, 0
        current = math.floor(now / b["wlen"])
        live = [w for w in b["window"] if w[0] > current - BREAKER_BUCKETS]
        return sum(w[1] + w[2] for w in live), sum(w[2] for w in live)

    def _breaker_report(self, b: dict[str, Any], now: float, changed: bool) -> BreakerState:
        requests, failed = self._window_counts(b, now)
        state = b["forced"] or b["state"]
        next_probe: float | None = None
        if b["forced"] is None and b["state"] == "open":
            next_probe = b["opened_at"] + b["cooldown"]
        elif b["forced"] is None and b["state"] == "half_open":
            next_probe = b["probe_until"]
        return BreakerState(
            state=state,
            failures=b["failures"],
            window_requests=requests,
            window_failures=failed,
            opened_at=self._epoch(b["opened_at"]) if state != "closed" else None,
            cooldown=b["cooldown"],
            next_probe_at=self._epoch(next_probe),
            forced=b["forced"],
            trips=b["trips"],
            probes=b["probes"] if state == "half_open" else 0,
            changed=changed,
        )

    async def breaker_allow(self, key: str, policy: BreakerPolicy) -> BreakerDecision:
        now = self.clock()
        b = self._breaker_load(key)
        if b is None:
            return BreakerDecision("closed", True, 0.0)
        if b["forced"] == "open":
            return BreakerDecision("open", False, policy.cooldown, failures=b["failures"])
        if b["forced"] == "closed" or b["state"] == "closed":
            return BreakerDecision("closed", True, 0.0, failures=b["failures"])
        changed = False
        if b["state"] == "open":
            until = b["opened_at"] + b["cooldown"]
            if now < until:
                return BreakerDecision("open", False, until - now, failures=b["failures"])
            b.update(state="half_open", probes=0, probe_ok=0, probe_until=None)
            changed = True
        limit = policy.half_open_probes
        if b["probes"] >= limit and b["probe_ok"] < limit and now >= b["probe_until"]:
            b["probes"] = b["probe_ok"]  # unanswered probes are given up: their slots free
        if b["probes"] < limit:
            b["probes"] += 1
            b["probe_until"] = now + b["cooldown"]
            self._breaker_save(key, b, policy.idle_ttl)
            return BreakerDecision("half_open", True, 0.0, True, changed, b["failures"])
        wait = max(b["probe_until"] - now, 0.0)
        return BreakerDecision("half_open", False, wait, False, changed, b["failures"])

    async def breaker_record(
        self, key: str, policy: BreakerPolicy, success: bool, probe: bool
    ) -> BreakerState:
        now = self.clock()
        b = self._breaker_load(key) or _fresh_breaker()
        if b["forced"] is not None:
            return self._breaker_report(b, now, False)  # held by an operator: nothing counts
        changed = False
        if b["state"] == "closed":
            if success:
                b["failures"] = 0
            else:
                b["failures"] += 1
            trip = not success and b["failures"] >= policy.failures
            if policy.failure_ratio is not None:
                wlen = policy.window / BREAKER_BUCKETS
                if b["wlen"] != wlen:
                    b.update(wlen=wlen, window=[])
                current = math.floor(now / wlen)
                window = [w for w in b["window"] if w[0] > current - BREAKER_BUCKETS]
                if not window or window[-1][0] != current:
                    window.append([current, 0, 0])
                window[-1][2 if not success else 1] += 1
                b["window"] = window
                requests, failed = self._window_counts(b, now)
                ratio_hit = failed >= policy.failure_ratio * requests - RATIO_SLACK
                if not success and requests >= policy.min_requests and ratio_hit:
                    trip = True
            if trip:
                self._breaker_open(b, policy, now)
                changed = True
        elif b["state"] == "half_open" and probe:
            if not success:
                self._breaker_open(b, policy, now)
                changed = True
            else:
                b["probe_ok"] += 1
                if b["probe_ok"] >= policy.half_open_probes:
                    b.update(_fresh_breaker(), ttl=b["ttl"])
                    changed = True
        else:
            # open, or an outcome of a request admitted before the breaker opened: ignored
            return self._breaker_report(b, now, False)
        self._breaker_save(key, b, policy.idle_ttl)
        return self._breaker_report(b, now, changed)

    @staticmethod
    def _breaker_open(b: dict[str, Any], policy: BreakerPolicy, now: float) -> None:
        b["trips"] += 1
        b.update(
            state="open",
            opened_at=now,
            cooldown=policy.cooldown_for(b["trips"]),
            probes=0,
            probe_ok=0,
            probe_until=None,
        )

    async def breaker_read(self, key: str) -> BreakerState | None:
        b = self._breaker_load(key)
        return None if b is None else self._breaker_report(b, self.clock(), False)

    async def breaker_force(self, key: str, state: ForcedState | None) -> BreakerState | None:
        b = self._breaker_load(key)
        if b is None:
            if state is None:
                return None
            b = _fresh_breaker()
        b["forced"] = state
        if state is None and b["ttl"] is None:
            b["ttl"] = DEFAULT_BREAKER_TTL
        self._breaker_save(key, b, None)
        return self._breaker_report(b, self.clock(), False)

    async def breaker_reset(self, key: str) -> None:
        self._pop(key)

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
