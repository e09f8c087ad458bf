"""A ServicePool: one service's endpoints, balancer, connection pool, health and retry budget.

Pools outlive reloads when their service's config is unchanged; a changed service gets a new
pool, and the old one closes once its in-flight requests have finished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import ClassVar

import aiohttp
import structlog
from multidict import CIMultiDict

from spork_cli.config.model import Service
from spork_cli.gateway.balancer import Balancer, EndpointState
from spork_cli.gateway.h1 import H1Pool
from spork_cli.health import probe

log = structlog.get_logger("spork.upstream")

RETRY_BUDGET_WINDOW = 10.0
MIN_RETRIES_PER_WINDOW = 3


class RetryBudget:
    """Retries stay under ``ratio`` of the requests of the last window (plus a small floor).

    Counts live in one-second buckets, so memory stays constant however busy the service.
    """

    def __init__(self, ratio: float, window: float = RETRY_BUDGET_WINDOW) -> None:
        self.ratio = ratio
        self.size = max(1, int(window))
        self._requests = [0] * self.size
        self._retries = [0] * self.size
        self._second = 0

    def _roll(self, now: float) -> int:
        second = int(now)
        if second != self._second:
            gap = min(second - self._second, self.size)
            for step in range(1, gap + 1):
                slot = (self._second + step) % self.size
                self._requests[slot] = 0
                self._retries[slot] = 0
            self._second = second
        return second % self.size

    def record_request(self, now: float | None = None) -> None:
        slot = self._roll(time.monotonic() if now is None else now)
        self._requests[slot] += 1

    def try_retry(self, now: float | None = None) -> bool:
        slot = self._roll(time.monotonic() if now is None else now)
        allowed = max(MIN_RETRIES_PER_WINDOW, self.ratio * sum(self._requests))
        if self.ratio > 0 and sum(self._retries) < allowed:
            self._retries[slot] += 1
            return True
        return False


class UpstreamRequest(aiohttp.ClientRequest):
    """A proxy adds no headers of its own (Accept, Accept-Encoding, User-Agent, Content-Type).

    Equivalent to ``skip_auto_headers`` for those names, without the per-request cost it has.
    """

    _NONE: ClassVar[CIMultiDict[None]] = CIMultiDict(
        (name, None) for name in ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
    )

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = self._NONE


class ServicePool:
    def __init__(self, config: Service) -> None:
        self.config = config
        self.name = config.name
        self.endpoints = [EndpointState(e.url, e.weight) for e in config.endpoints]
        self.balancer = Balancer(self.endpoints, config.balance)
        self.budget = RetryBudget(config.retries.budget)
        self.passive = config.passive
        self.session: aiohttp.ClientSession | None = None
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._health_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=self.config.max_connections,
            ttl_dns_cache=300,
            keepalive_timeout=30,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            request_class=UpstreamRequest,
        )
        # aiohttp silently retries idempotent requests once on a dropped connection; retries
        # here are ours alone (counted, backed off, within budget, on another endpoint).
        self.session._retry_connection = False
        for endpoint in self.endpoints:
            if endpoint.base.scheme == "http" and endpoint.base.host:
                endpoint.h1 = H1Pool(
                    endpoint.base.host,
                    endpoint.base.port or 80,
                    self.config.max_connections,
                    self.config.connect_timeout,
                )
        if self.config.health is not None:
            self._health_task = asyncio.create_task(
                self._check_forever(), name=f"health:{self.name}"
            )

    def acquire(self, endpoint: EndpointState) -> None:
        self.in_flight += 1
        endpoint.in_flight += 1
        self._idle.clear()

    def release(self, endpoint: EndpointState) -> None:
        self.in_flight -= 1
        endpoint.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    def record_failure(self, endpoint: EndpointState, reason: str) -> None:
        endpoint.last_error = reason
        now = time.monotonic()
        others = [e for e in self.endpoints if e is not endpoint and e.available(now)]
        # Never eject the last endpoint standing on passive evidence alone.
        if not others:
            endpoint.failures += 1
            return
        if endpoint.record_failure(self.passive.failures, self.passive.cooldown, now):
            log.warning(
                "endpoint ejected",
                service=self.name,
                endpoint=endpoint.url,
                cooldown=self.passive.cooldown,
                reason=reason,
            )

    async def close(self, drain_timeout: float = 30.0) -> None:
        """Stop health checks; close the connection pool once in-flight requests finish."""
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
            self._health_task = None
        try:
            async with asyncio.timeout(drain_timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("closing pool with requests in flight", service=self.name)
        for endpoint in self.endpoints:
            if endpoint.h1 is not None:
                endpoint.h1.close()
        if self.session is not None:
            await self.session.close()
            self.session = None

    # -- active health ---------------------------------------------------------------------

    async def _check_forever(self) -> None:
        check = self.config.health
        assert check is not None and self.session is not None
        passes = {id(e): 0 for e in self.endpoints}
        fails = {id(e): 0 for e in self.endpoints}
        while True:
            results = await asyncio.gather(
                *(probe(self.session, e.url, check) for e in self.endpoints)
            )
            for endpoint, result in zip(self.endpoints, results, strict=True):
                endpoint.last_check = time.time()
                endpoint.last_latency = result.latency
                key = id(endpoint)
                if result.ok:
                    passes[key] += 1
                    fails[key] = 0
                    if endpoint.ejected_until:
                        endpoint.ejected_until = 0.0  # a passing probe ends an ejection
                    if not endpoint.healthy and passes[key] >= check.healthy_threshold:
                        endpoint.healthy = True
                        log.info("endpoint healthy", service=self.name, endpoint=endpoint.url)
                else:
                    fails[key] += 1
                    passes[key] = 0
                    endpoint.last_error = result.error
                    if endpoint.healthy and fails[key] >= check.unhealthy_threshold:
                        endpoint.healthy = False
                        log.warning(
                            "endpoint unhealthy",
                            service=self.name,
                            endpoint=endpoint.url,
                            error=result.error,
                        )
            await asyncio.sleep(check.interval)

    def snapshot(self) -> dict[str, object]:
        now = time.monotonic()
        return {
            "service": self.name,
            "balance": self.config.balance,
            "in_flight": self.in_flight,
            "healthy": any(e.available(now) for e in self.endpoints),
            "endpoints": [
                {
                    "url": e.url,
                    "weight": e.weight,
                    "healthy": e.healthy,
                    "ejected": e.ejected_until > now,
                    "available": e.available(now),
                    "in_flight": e.in_flight,
                    "last_error": e.last_error,
                    "last_latency_ms": (
                        round(e.last_latency * 1000, 2) if e.last_latency is not None else None
                    ),
                }
                for e in self.endpoints
            ],
        }
