"""One state-store outage, told in two log lines: when the first call fails and when the store
answers again (how long it lasted, how many operations failed), however many calls fail in
between. Every failure is still counted by the caller's metric, through ``count``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from spork_cli.errors import StateError
from spork_cli.state import StateStore
from spork_cli.state.diagnose import describe

log = structlog.get_logger("spork.state")

PROBE_INTERVAL = 0.5  # seconds between the checks that the store is back, during an outage


class StateOutage:
    """Every failed store call of one process goes through `failed`; the request path pays a
    counter increment on failure and nothing on success.

    While the store is down a background probe pings it every `PROBE_INTERVAL`; the outage
    ends once a ping succeeds with no operation failing since the previous probe (so a store
    that answers PING but fails real calls, such as an ACL denying the key prefix, is not
    reported back)."""

    def __init__(
        self,
        store: StateStore,
        where: str,
        count: Callable[[str], None] | None = None,
        probe_interval: float = PROBE_INTERVAL,
    ) -> None:
        self.store = store
        self.where = where  # the store's URL, credentials redacted
        self.count = count
        self.probe_interval = probe_interval
        self.failures = 0  # operations failed in the current outage
        self.began_at: float | None = None  # monotonic; None while the store answers
        self._probe: asyncio.Task[None] | None = None

    @property
    def down(self) -> bool:
        return self.began_at is not None

    def failed(self, op: str, exc: BaseException) -> None:
        """One operation (``op``: ratelimit, cache, breaker, revocation...) failed."""
        if self.count is not None:
            self.count(op)
        self.failures += 1
        if self.began_at is None:
            self.began(describe(exc), op)

    def began(self, reason: str, op: str | None = None) -> None:
        """The store is unreachable (seen by an operation, ``op``, or by the start-up check)."""
        if self.began_at is not None:
            return
        self.began_at = time.monotonic()
        log.warning(f"state store unreachable: {reason}", store=self.where, op=op)
        self._probe = asyncio.get_running_loop().create_task(self._watch(), name="state-outage")

    async def _watch(self) -> None:
        seen = self.failures
        while True:
            await asyncio.sleep(self.probe_interval)  # the probe period, not synchronisation
            if self.failures != seen:
                seen = self.failures
                continue
            try:
                await self.store.ping()
            except StateError:  # still down: the next probe tries again
                continue
            if self.failures == seen:
                break
            seen = self.failures
        assert self.began_at is not None
        lasted = time.monotonic() - self.began_at
        failed, self.failures, self.began_at, self._probe = self.failures, 0, None, None
        log.warning(
            f"state store reachable again after {lasted:.1f}s; {failed} operations failed",
            store=self.where,
            lasted_s=round(lasted, 3),
            failed_operations=failed,
        )

    async def close(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
