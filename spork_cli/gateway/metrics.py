"""Prometheus metrics (DESIGN section 6), served at the admin listener's ``/metrics``.

Counters and histograms are bound once per route and service, so a request only increments.
State that already lives elsewhere (endpoint health, reload results) is read when scraped.
With ``--workers N`` every process writes its series to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode, set up by the supervisor) and the supervisor's
``/metrics`` adds them up.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from spork_cli.gateway.table import RouteTable

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "(none)"  # the route label of requests no route matched
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


class GatewayMetrics:
    """Every series of one gateway process, in a registry of its own."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "spork_requests_total",
            "Requests answered, by route, method and status.",
            ("route", "method", "status"),
            registry=r,
        )
        self.duration = Histogram(
            "spork_request_duration_seconds",
            "Time from the request's arrival to its response, by route.",
            ("route",),
            buckets=tuple(buckets),
            registry=r,
        )
        self.upstream = Histogram(
            "spork_upstream_duration_seconds",
            "Time until a service's response head arrived, by service.",
            ("service",),
            buckets=tuple(buckets),
            registry=r,
        )
        self.in_flight = Gauge(
            "spork_requests_in_flight",
            "Requests being handled now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ratelimit_rejected = Counter(
            "spork_ratelimit_rejected_total",
            "Requests refused with 429, by route.",
            ("route",),
            registry=r,
        )
        self.breaker_state = Gauge(
            "spork_breaker_state",
            "Circuit breaker state by service: 0 closed, 1 half-open, 2 open.",
            ("service",),
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.breaker_transitions = Counter(
            "spork_breaker_transitions_total",
            "Breaker state changes, by service and the state entered.",
            ("service", "state"),
            registry=r,
        )
        self.cache_requests = Counter(
            "spork_cache_requests_total",
            "Requests on cached routes, by route and result (hit, miss, bypass).",
            ("route", "result"),
            registry=r,
        )
        self.config_reloads = Counter(
            "spork_config_reloads_total",
            "Config reloads, by result (success, failure, unchanged).",
            ("result",),
            registry=r,
        )
        self.last_reload_success = Gauge(
            "spork_config_last_reload_success",
            "Whether the last reload attempt succeeded (1) or failed (0).",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.last_reload_success.set(1)
        self.state_errors = Counter(
            "spork_state_errors_total",
            "Failed calls to the state store, by operation.",
            ("op",),
            registry=r,
        )
        self._requests: dict[tuple[str, str, int], Callable[[], None]] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in METHODS:
            method = "OTHER"  # clients choose methods: they must not choose label values
        key = (route, method, status)
        inc = self._requests.get(key)
        if inc is None:
            inc = self._requests[key] = self.requests.labels(route, method, str(status)).inc
        inc()
        self.duration.labels(route).observe(seconds)

    def breaker(self, service: str, state: str, changed: bool) -> None:
        self.breaker_state.labels(service).set(BREAKER_STATES.get(state, 0))
        if changed:
            self.breaker_transitions.labels(service, state).inc()

    def reload(self, result: str) -> None:
        self.config_reloads.labels(result).inc()
        if result != "unchanged":
            self.last_reload_success.set(1 if result == "success" else 0)


class _HealthCollector(Collector):
    """``spork_upstream_healthy{service,endpoint}``, read from the balancer at scrape time."""

    def __init__(self, table: Callable[[], RouteTable | None]) -> None:
        self.table = table

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "spork_upstream_healthy",
            "Whether the gateway routes to the endpoint (1) or has ejected it (0).",
            labels=("service", "endpoint"),
        )
        table = self.table()
        if table is not None:
            for name, pool in table.pools.items():
                now = pool.balancer.clock()
                for endpoint in pool.balancer.endpoints:
                    up = endpoint.available(now)
                    family.add_metric((name, endpoint.url), 1.0 if up else 0.0)
        yield family


def exposition(metrics: GatewayMetrics, table: Callable[[], RouteTable | None]) -> bytes:
    """The text format of every series: this process's, or with ``--workers`` every
    worker's as written to the multiprocess directory."""
    registry = metrics.registry
    if multiprocess():
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Merged(metrics.registry))
    registry.register(_HealthCollector(table))
    return generate_latest(registry)


class _Merged(Collector):
    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from self.source.collect()


METRICS = web.AppKey("spork.metrics", GatewayMetrics)


def count_state_error(request: web.Request, op: str) -> None:
    """One failed state-store call made for ``request`` (op: ratelimit, breaker, cache...)."""
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.state_errors.labels(op).inc()


def metrics_handler(
    gateway: web.Application,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The admin listener's ``/metrics`` for the gateway app ``gateway``."""

    async def serve(request: web.Request) -> web.Response:
        from spork_cli.gateway.app import TABLE

        metrics = gateway.get(METRICS)
        if metrics is None:
            raise web.HTTPNotFound(text="metrics are off ([metrics] enabled = false)")
        holder = gateway.get(TABLE)
        body = exposition(metrics, lambda: holder.current if holder is not None else None)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return serve
