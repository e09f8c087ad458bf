"""The memory backend's circuit breakers, mirroring lua/breaker_*.lua step for step (in
seconds): a JSON document per breaker, as the Lua keeps a hash."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import orjson

from spork_cli.state import (
    BREAKER_BUCKETS,
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    ForcedState,
)
from spork_cli.state.memory_space import Space

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


class MemoryBreakers:
    """Mixed into `MemoryStore`, which provides the clock and the breakers' own space: one
    entry per configured service, never evicted by limiter or cache entries, and a forced
    state never expires."""

    clock: Callable[[], float]
    _breakers: Space

    def _breaker_load(self, key: str) -> dict[str, Any] | None:
        stored = self._breakers.get(key)
        if stored is None or stored[:1] != b"b":
            return None
        loaded: dict[str, Any] = orjson.loads(stored[1:])
        return loaded

    def _breaker_save(self, key: str, b: dict[str, Any], ttl: float | None) -> None:
        if ttl is not None:
            b["ttl"] = ttl
        self._breakers.set(key, b"b" + orjson.dumps(b), None if b["forced"] else b["ttl"])

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
        self._breakers.pop(key)
