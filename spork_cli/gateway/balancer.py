"""Endpoint selection (round robin, weighted, least connections, power of two choices) and
the passive health each endpoint carries (consecutive failures eject it for a cooldown)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from yarl import URL

if TYPE_CHECKING:
    from spork_cli.gateway.h1 import H1Pool


@dataclass(eq=False)
class EndpointState:
    """One upstream endpoint and what this process has seen of it."""

    url: str
    weight: int
    base: URL = field(init=False)
    base_str: str = field(init=False)
    in_flight: int = 0
    healthy: bool = True  # set by active checks
    ejected_until: float = 0.0  # set by passive checks
    failures: int = 0  # consecutive, from real traffic
    current_weight: int = 0  # smooth weighted round robin
    last_error: str | None = None
    last_check: float | None = None
    last_latency: float | None = None
    base_path: str = field(init=False)  # raw path prefix of the endpoint URL, no trailing /
    authority: str = field(init=False)  # the Host header this endpoint expects
    h1: H1Pool | None = None  # the lean client's pool (plain-HTTP endpoints)

    def __post_init__(self) -> None:
        self.base = URL(self.url.rstrip("/"))
        self.base_str = str(self.base)
        self.base_path = self.base.raw_path.rstrip("/")
        self.authority = self.base.raw_authority

    def available(self, now: float) -> bool:
        return self.healthy and self.ejected_until <= now

    def record_success(self) -> None:
        self.failures = 0

    def record_failure(self, threshold: int, cooldown: float, now: float) -> bool:
        """Count a failure; returns True when this one ejects the endpoint."""
        self.failures += 1
        if self.failures >= threshold and self.ejected_until <= now:
            self.ejected_until = now + cooldown
            self.failures = 0
            return True
        return False


Picker = Callable[[Sequence[EndpointState]], EndpointState]


class Balancer:
    """Chooses among available endpoints; ``exclude`` skips endpoints already tried."""

    def __init__(
        self,
        endpoints: Sequence[EndpointState],
        strategy: str,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.clock = clock
        self._rng = rng or random.Random()
        self._next = 0
        self._pick: Picker = {
            "round_robin": self._round_robin,
            "weighted": self._weighted,
            "least_conn": self._least_conn,
            "p2c": self._p2c,
        }[strategy]

    def pick(self, exclude: Sequence[EndpointState] = ()) -> EndpointState | None:
        now = self.clock()
        if len(self.endpoints) == 1:
            only = self.endpoints[0]
            return only if only.available(now) else None
        candidates = [e for e in self.endpoints if e.available(now) and e not in exclude]
        if not candidates and exclude:
            # Every other endpoint is down: trying the same one again beats failing outright.
            candidates = [e for e in self.endpoints if e.available(now)]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        return self._pick(candidates)

    def _round_robin(self, candidates: Sequence[EndpointState]) -> EndpointState:
        self._next += 1
        return candidates[self._next % len(candidates)]

    def _weighted(self, candidates: Sequence[EndpointState]) -> EndpointState:
        # nginx's smooth weighted round robin: exact shares, no bursts to one endpoint.
        total = 0
        best: EndpointState | None = None
        for e in candidates:
            if e.weight <= 0:
                continue
            e.current_weight += e.weight
            total += e.weight
            if best is None or e.current_weight > best.current_weight:
                best = e
        if best is None:
            return self._round_robin(candidates)
        best.current_weight -= total
        return best

    def _least_conn(self, candidates: Sequence[EndpointState]) -> EndpointState:
        fewest = min(e.in_flight for e in candidates)
        tied = [e for e in candidates if e.in_flight == fewest]
        return tied[0] if len(tied) == 1 else self._rng.choice(tied)

    def _p2c(self, candidates: Sequence[EndpointState]) -> EndpointState:
        a, b = self._rng.sample(list(candidates), 2)
        return a if a.in_flight <= b.in_flight else b
