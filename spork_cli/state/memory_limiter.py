"""The memory backend's rate limiters: GCRA, token bucket and sliding log, mirroring
lua/gcra.lua, lua/token_bucket.lua and lua/sliding_window.lua step for step (in seconds)."""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Callable

from spork_cli.errors import StateError
from spork_cli.state import LimitResult, check_limit_args
from spork_cli.state.memory_space import LimitSpace

# Clock tolerance of every limiter decision, as in the Lua scripts (1 µs): it absorbs float
# rounding so that exactly `capacity` requests pass at one instant, never capacity - 1.
SLACK = 1e-6
# Limiter entries start with a tag byte so a key whose algorithm changed (config reload)
# starts afresh instead of misreading another algorithm's state.
_GCRA = struct.Struct("<cd")
_BUCKET = struct.Struct("<cdd")


class LimiterFull(StateError):
    """A new client key found no room among the memory store's limiter entries (its tier's
    share of ``state.max_keys`` and the common room are all live). The store is working: this
    is a refusal, never an outage, and ``on_error`` does not apply. ``retry_after`` is about
    when the soonest entry lapses, in seconds. A StateError still, so a caller that knows
    nothing of it fails safe."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MemoryLimiters:
    """Mixed into `MemoryStore`, which provides the clock and the entries.

    A live limiter entry is never evicted: a client over its limit stays refused. Each
    limiter tier (`MemoryStore.share_limits`) has a reserved share of ``max_keys``; a new key
    that finds no room in its tier's share nor in the common room is not stored and the call
    raises LimiterFull, whatever ``on_error`` says (every known client keeps its exact state).
    As the per-process fallback of a Redis store (``admit_when_full``), which is itself the
    ``on_error = "local"`` path during an outage, such a key is admitted without being
    counted instead.
    """

    clock: Callable[[], float]
    _limits: LimitSpace
    admit_when_full: bool

    def _get(self, key: str) -> bytes | None:
        return self._limits.get(key)

    def _set(self, key: str, value: bytes, ttl: float) -> None:
        if not self._limits.set(key, value, ttl) and not self.admit_when_full:
            soonest = self._limits.next_expiry()
            retry = 1.0 if soonest is None else max(soonest - self.clock(), 1.0)
            raise LimiterFull(
                f"the memory store's rate limit keys are all live (state.max_keys = "
                f"{self._limits.max_keys}, shared between the limited routes): a new client "
                "waits until some replenish",
                retry,
            )

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
        self._set(key, b"s" + log.tobytes(), period if log else 0.0)  # empty: idle
        return LimitResult(True, capacity, capacity - count - cost, period, 0.0)
