"""The in-process backend (the embedded default): bounded, expiring, one process only.

The limiter primitives mirror the Lua scripts in ``spork_cli/state/lua`` step for step, in
seconds instead of microseconds, so both backends decide alike.
"""

from __future__ import annotations

import math
import struct
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable

from spork_cli.config.model import State
from spork_cli.state import LimitResult, check_limit_args, instance_key, revoked_key

# Clock tolerance of every limiter decision, as in the Lua scripts (1 µs): it absorbs float
# rounding so that exactly `capacity` requests pass at one instant, never capacity - 1.
SLACK = 1e-6
# Limiter entries start with a tag byte so a key whose algorithm changed (config reload)
# starts afresh instead of misreading another algorithm's state.
_GCRA = struct.Struct("<cd")
_BUCKET = struct.Struct("<cdd")


class MemoryStore:
    backend = "memory"

    def __init__(self, config: State, clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = config.prefix
        self.max_keys = config.max_keys
        self.clock = clock
        # key -> (expires_at or None, value); insertion order gives eviction order
        self._data: OrderedDict[str, tuple[float | None, bytes]] = OrderedDict()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()

    async def ping(self) -> None:
        return None

    def _get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires is not None and expires <= self.clock():
            del self._data[key]
            return None
        return value

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        expires = self.clock() + ttl if ttl is not None else None
        self._data.pop(key, None)
        self._data[key] = (expires, value)
        while len(self._data) > self.max_keys:
            self._data.popitem(last=False)

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
