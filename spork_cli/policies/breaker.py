"""Circuit breakers over a StateStore: the policy from config, what counts as a failure, and a
per-process cache of what the store said.

One breaker per service lives in the store at ``breaker_key(prefix, service)``, so every
instance shares it. The store primitives (``breaker_allow``, ``breaker_record``, ...) are each
one atomic round trip; this module holds no breaker state of its own beyond a short cache.

``closed``
    Every request passes. Each outcome is recorded: a success clears the consecutive failure
    count, a failure adds one; ``failures`` in a row open the breaker. With ``failure_ratio``
    the outcomes are also counted in a rolling ``window`` of 10 buckets (``window / 10`` each;
    the current bucket and the 9 before it count, so an outcome counts for between 0.9 and 1
    ``window``), and a failure opens the breaker once the window holds at least
    ``min_requests`` outcomes of which at least ``failure_ratio`` failed.
``open``
    Every request is denied with ``retry_after`` = the rest of the cooldown. The n-th trip in a
    row opens for ``cooldown * cooldown_multiplier ** (n - 1)``, at most ``max_cooldown``.
    Outcomes recorded while open (requests admitted before it opened) are ignored.
``half_open``
    The first ``breaker_allow`` after the cooldown moves it here. At most ``half_open_probes``
    requests are admitted as probes; others are denied. It closes once ``half_open_probes``
    probes have succeeded (every probe must succeed: more probes mean more confidence); the
    first probe failure re-opens it at once, with the grown cooldown. A probe whose outcome
    never arrives frees its slot one cooldown after the last probe was admitted. Outcomes of
    requests that were not probes are ignored. Closing clears the counts and the trip series.

An operator may force a breaker ``open`` or ``closed`` (``breaker_force``): every instance
honours it, outcomes are not counted meanwhile, and clearing the force resumes the state
machine where it was. ``breaker_reset`` forgets the breaker (closed, nothing counted). A
breaker not changed for ``BreakerPolicy.idle_ttl`` (3 x the longer of ``max_cooldown`` and the
ratio window) is forgotten; a forced one is kept until the force is cleared.

Times come from the Redis server (``TIME``) or, for the memory backend, its clock; the
``BreakerState`` times (``opened_at``, ``next_probe_at``) are epoch seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from spork_cli.state import (
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    StateStore,
    breaker_key,
)

__all__ = [
    "CACHE_TTL",
    "BreakerCache",
    "BreakerDecision",
    "BreakerPolicy",
    "BreakerState",
    "breaker_key",
    "is_failure",
]

log = structlog.get_logger("spork.breaker")

CACHE_TTL = 0.25  # seconds a process trusts what it last read from the store


def is_failure(policy: BreakerPolicy, status: int | None, error: str | None) -> bool:
    """Does this outcome count against the breaker?

    ``error`` is the transport error kind (``"connect"`` or ``"timeout"``); it counts when
    listed in ``failure_on``. Otherwise the upstream ``status`` counts when listed in
    ``failure_statuses``. No status and no error (the client went away) is not a failure.
    """
    if error is not None:
        return error in policy.failure_on
    return status is not None and status in policy.failure_statuses


_CLOSED = BreakerDecision("closed", True, 0.0)


@dataclass(slots=True)
class _Entry:
    decision: BreakerDecision  # what the store last said to this process
    expires: float  # on the cache's clock
    retry_at: float = 0.0  # a denial holds until then (and until `expires`)
    clean: bool = False  # closed with no consecutive failures: a plain success changes nothing


class BreakerCache:
    """The breakers of one process: asks the store, remembers each answer for at most ``ttl``.

    ``allow`` answers from the cache while the breaker was last seen closed, or denying (open
    with cooldown left, or half-open with every probe out) until the denial's ``retry_after``;
    a probe is always handed out by the store, atomically, and never cached.
    ``record`` sends every outcome except a plain success while the breaker was last seen closed
    with no failures and no ratio window (it would change nothing). A transition made by this
    process drops its entry, so the next request asks the store; transitions made by other
    instances are seen within ``ttl``.
    """

    def __init__(
        self,
        store: StateStore,
        prefix: str,
        *,
        ttl: float = CACHE_TTL,
        clock: Callable[[], float] = time.monotonic,
        on_state: Callable[[str, str, bool], None] | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.ttl = ttl
        self.clock = clock
        # Told (service, state, changed) whenever the store reports a state (metrics).
        self.on_state = on_state
        self._entries: dict[str, _Entry] = {}

    def invalidate(self, service: str | None = None) -> None:
        """Forget what was read about ``service`` (every service when None)."""
        if service is None:
            self._entries.clear()
        else:
            self._entries.pop(service, None)

    def _fresh(self, service: str, now: float) -> _Entry | None:
        entry = self._entries.get(service)
        if entry is None or now >= entry.expires:
            return None
        return entry

    async def allow(self, service: str, policy: BreakerPolicy) -> BreakerDecision:
        now = self.clock()
        entry = self._fresh(service, now)
        if entry is not None:
            if entry.decision.allowed:
                return entry.decision
            if now < entry.retry_at:
                cached = entry.decision
                return BreakerDecision(
                    cached.state, False, entry.retry_at - now, failures=cached.failures
                )
        decision = await self.store.breaker_allow(breaker_key(self.prefix, service), policy)
        if self.on_state is not None:
            self.on_state(service, decision.state, decision.changed)
        if decision.changed:
            log.info(
                "breaker half-open",
                service=service,
                state=decision.state,
                failures=decision.failures,
            )
        if decision.probe:
            self._entries.pop(service, None)  # probes are counted by the store, never cached
        elif decision.allowed:
            clean = entry is not None and entry.clean
            self._entries[service] = _Entry(_CLOSED, now + self.ttl, clean=clean)
        else:
            retry_at = now + decision.retry_after
            self._entries[service] = _Entry(decision, now + self.ttl, retry_at)
        return decision

    async def record(self, service: str, policy: BreakerPolicy, success: bool, probe: bool) -> None:
        """Count one outcome of a request ``allow`` admitted (``probe`` as it said)."""
        now = self.clock()
        entry = self._fresh(service, now)
        if success and not probe and policy.failure_ratio is None and entry and entry.clean:
            return
        state = await self.store.breaker_record(
            breaker_key(self.prefix, service), policy, success, probe
        )
        if self.on_state is not None:
            self.on_state(service, state.state, state.changed)
        if state.changed:
            self._entries.pop(service, None)
            _log_transition(service, state)
        elif state.state == "closed":
            self._entries[service] = _Entry(_CLOSED, now + self.ttl, clean=state.failures == 0)

    async def read(self, service: str) -> BreakerState | None:
        """The stored breaker, straight from the store (for the admin API and the CLI)."""
        return await self.store.breaker_read(breaker_key(self.prefix, service))


def _log_transition(service: str, state: BreakerState) -> None:
    if state.state == "open":
        log.warning(
            "breaker opened",
            service=service,
            state=state.state,
            failures=state.failures,
            window_requests=state.window_requests,
            window_failures=state.window_failures,
            cooldown=state.cooldown,
            trips=state.trips,
        )
    else:
        log.info("breaker closed", service=service, state=state.state, failures=state.failures)
