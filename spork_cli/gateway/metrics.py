"""Prometheus metrics (DESIGN section 6), served at the admin listener's ``/metrics``.

The request path only adds to plain numbers (a counter is a dict entry, a histogram a list of
bucket counts found by bisection): no locks, no metric objects. They become Prometheus
families when scraped, together with state read at that moment (endpoint health). With
``--workers N`` every worker writes a snapshot of its numbers to ``PROMETHEUS_MULTIPROC_DIR``
once a second (the supervisor sets it up) and the supervisor's ``/metrics`` adds them up: a
dead worker's counts stay, its gauges go.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from spork_cli.gateway.keys import METRICS

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from spork_cli.gateway.keys import TableHolder
    from spork_cli.gateway.table import RouteTable

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
SNAPSHOT_INTERVAL = 1.0  # seconds between a worker's snapshots
UNMATCHED = "(none)"  # the route label of requests no route matched
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
)

# name -> (help, label names) of every counter
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "requests": ("Requests answered, by route, method and status.", ("route", "method", "status")),
    "ratelimit_rejected": ("Requests refused with 429, by route.", ("route",)),
    "breaker_transitions": (
        "Breaker state changes, by service and the state entered.",
        ("service", "state"),
    ),
    "cache_requests": (
        "Requests on cached routes, by route and result (hit, miss, stale, revalidated, bypass).",
        ("route", "result"),
    ),
    "config_reloads": ("Config reloads, by result (success, failure, unchanged).", ("result",)),
    "state_errors": ("Failed calls to the state store, by operation.", ("op",)),
}
HISTOGRAMS: dict[str, tuple[str, str]] = {
    "request_duration_seconds": (
        "Time from the request's arrival to its response, by route.",
        "route",
    ),
    "upstream_duration_seconds": (
        "Time until a service's response head arrived, by service.",
        "service",
    ),
}


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


class GatewayMetrics:
    """Every number of one gateway process."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counters: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in COUNTERS}
        # label -> [bucket counts..., overflow, sum]: the last but one is +Inf's own bucket
        self.histograms: dict[str, dict[str, list[float]]] = {name: {} for name in HISTOGRAMS}
        self.in_flight = 0
        self.breaker_state: dict[str, int] = {}
        self.last_reload_success = 1
        self.restart_pending = 0  # settings changed in the file that need a restart

    def count(self, name: str, *labels: str) -> None:
        series = self.counters[name]
        series[labels] = series.get(labels, 0) + 1

    def observe(self, name: str, label: str, value: float) -> None:
        series = self.histograms[name]
        cells = series.get(label)
        if cells is None:
            cells = series[label] = [0.0] * (len(self.bounds) + 2)
        cells[bisect_left(self.bounds, value)] += 1
        cells[-1] += value

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in METHODS:
            method = "OTHER"  # clients choose methods: they must not choose label values
        series = self.counters["requests"]
        key = (route, method, str(status))
        series[key] = series.get(key, 0) + 1
        self.observe("request_duration_seconds", route, seconds)

    def breaker(self, service: str, state: str, changed: bool) -> None:
        self.breaker_state[service] = BREAKER_STATES.get(state, 0)
        if changed:
            self.count("breaker_transitions", service, state)

    def reload(self, result: str, pending: int | None = None) -> None:
        """A reload's result; ``pending``: how many changed settings it left for a restart
        (None when the file could not be read, which leaves the count as it was)."""
        self.count("config_reloads", result)
        if result != "unchanged":
            self.last_reload_success = 1 if result == "success" else 0
        if pending is not None:
            self.restart_pending = pending

    def snapshot(self) -> dict[str, Any]:
        """Everything, as plain JSON-able data (what a worker writes for the supervisor)."""
        return {
            "bounds": list(self.bounds),
            "counters": {n: [[*k, v] for k, v in s.items()] for n, s in self.counters.items()},
            "histograms": {n: dict(s) for n, s in self.histograms.items()},
            "in_flight": self.in_flight,
            "breaker_state": dict(self.breaker_state),
            "last_reload_success": self.last_reload_success,
            "restart_pending": self.restart_pending,
        }


def merge(snapshots: Sequence[dict[str, Any]], live: Sequence[bool]) -> dict[str, Any]:
    """Add up snapshots; gauges only from live processes (a breaker: its worst state)."""
    total: dict[str, Any] = {
        "bounds": snapshots[0]["bounds"] if snapshots else [],
        "counters": {name: {} for name in COUNTERS},
        "histograms": {name: {} for name in HISTOGRAMS},
        "in_flight": 0,
        "breaker_state": {},
        "last_reload_success": None,
        "restart_pending": 0,
    }
    for snap, alive in zip(snapshots, live, strict=True):
        for name, rows in snap["counters"].items():
            series = total["counters"].setdefault(name, {})
            for *labels, value in rows:
                key = tuple(labels)
                series[key] = series.get(key, 0) + value
        for name, by_label in snap["histograms"].items():
            series = total["histograms"].setdefault(name, {})
            for label, cells in by_label.items():
                mine = series.setdefault(label, [0.0] * len(cells))
                if len(mine) == len(cells):  # same buckets (a restart may change them)
                    series[label] = [a + b for a, b in zip(mine, cells, strict=True)]
        if alive:
            total["in_flight"] += snap["in_flight"]
            for service, state in snap["breaker_state"].items():
                total["breaker_state"][service] = max(total["breaker_state"].get(service, 0), state)
            last = total["last_reload_success"]
            ok = snap["last_reload_success"]
            total["last_reload_success"] = ok if last is None else min(last, ok)
            total["restart_pending"] = max(total["restart_pending"], snap.get("restart_pending", 0))
    if total["last_reload_success"] is None:
        total["last_reload_success"] = 1
    return total


def families(data: dict[str, Any], table: RouteTable | None) -> Iterator[Metric]:
    """Prometheus families of a snapshot (or a merge of them), plus endpoint health."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    for name, (text, labels) in COUNTERS.items():
        family = CounterMetricFamily(f"spork_{name}", text, labels=labels)
        series = data["counters"].get(name, {})
        # A merge holds {labels: value}; a snapshot (JSON) holds [*labels, value] rows.
        rows = series.items() if isinstance(series, dict) else ((r[:-1], r[-1]) for r in series)
        for key, value in sorted((tuple(k), v) for k, v in rows):
            family.add_metric(list(key), value)
        yield family
    bounds = data["bounds"]
    for name, (text, label) in HISTOGRAMS.items():
        histogram = HistogramMetricFamily(f"spork_{name}", text, labels=(label,))
        for value, cells in sorted(data["histograms"].get(name, {}).items()):
            running, buckets = 0.0, []
            for bound, count in zip([*bounds, float("inf")], cells[:-1], strict=True):
                running += count
                buckets.append((_le(bound), running))
            histogram.add_metric([value], buckets, sum_value=cells[-1])
        yield histogram
    yield GaugeMetricFamily(
        "spork_requests_in_flight", "Requests being handled now.", value=data["in_flight"]
    )
    breakers = GaugeMetricFamily(
        "spork_breaker_state",
        "Circuit breaker state by service: 0 closed, 1 half-open, 2 open.",
        labels=("service",),
    )
    for service, state in sorted(data["breaker_state"].items()):
        breakers.add_metric([service], state)
    yield breakers
    yield GaugeMetricFamily(
        "spork_config_last_reload_success",
        "Whether the last reload attempt succeeded (1) or failed (0).",
        value=data["last_reload_success"],
    )
    yield GaugeMetricFamily(
        "spork_config_restart_pending",
        "Settings changed in the config file that take effect only after a restart "
        "(0: the gateway runs the file's settings).",
        value=data["restart_pending"],
    )
    healthy = GaugeMetricFamily(
        "spork_upstream_healthy",
        "Whether the gateway routes to the endpoint (1) or has ejected it (0).",
        labels=("service", "endpoint"),
    )
    if table is not None:
        for name, pool in table.pools.items():
            now = pool.balancer.clock()
            for endpoint in pool.balancer.endpoints:
                healthy.add_metric([name, endpoint.url], 1.0 if endpoint.available(now) else 0.0)
    yield healthy


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collected(directory: Path) -> tuple[list[dict[str, Any]], list[bool]]:
    """Every worker's last snapshot in ``directory``, and whether that worker still runs."""
    snapshots, live = [], []
    for path in sorted(directory.glob("*.json")):
        try:
            snapshots.append(orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            continue  # being replaced right now: the next scrape has it
        live.append(path.stem.isdigit() and process_alive(int(path.stem)))
    return snapshots, live


def exposition(metrics: GatewayMetrics, table: RouteTable | None) -> bytes:
    """The text format: this process's numbers, or with ``--workers`` every worker's."""
    from prometheus_client import CollectorRegistry, generate_latest

    directory = os.environ.get(MULTIPROCESS_ENV)
    if directory:
        snapshots, live = collected(Path(directory))
        data = merge(snapshots, live) if snapshots else metrics.snapshot()
    else:
        data = metrics.snapshot()

    class _Now:
        def collect(self) -> Iterator[Metric]:
            yield from families(data, table)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Now())
    return generate_latest(registry)


async def snapshots_ctx(app: web.Application) -> AsyncIterator[None]:
    """A worker's half of ``--workers`` metrics: its snapshot, written once a second."""
    directory = os.environ.get(MULTIPROCESS_ENV)
    metrics = app.get(METRICS)
    if not directory or metrics is None:
        yield
        return
    path = Path(directory) / f"{os.getpid()}.json"

    def write() -> None:
        partial = path.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps(metrics.snapshot()))
        partial.replace(path)  # readers never see half a file

    async def loop() -> None:
        while True:
            write()
            await asyncio.sleep(SNAPSHOT_INTERVAL)  # the snapshot period, by design

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    write()  # the last requests counted before exit


def metrics_handler(holder: TableHolder) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The admin listener's ``/metrics`` for the gateway whose table switch is ``holder``."""

    async def serve(request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        metrics = holder.resources.metrics
        if metrics is None:
            raise web.HTTPNotFound(text="metrics are off ([metrics] enabled = false)")
        response = web.Response(body=exposition(metrics, holder.current))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return serve
