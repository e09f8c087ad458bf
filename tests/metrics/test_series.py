"""The series themselves: names and labels as DESIGN section 6 gives them, buckets from the
config, and the text the admin listener serves."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from spork_cli.config.model import DEFAULT_BUCKETS
from spork_cli.gateway.metrics import GatewayMetrics, exposition


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_a_request_counts_once_by_route_method_and_status_and_times_its_route() -> None:
    metrics = GatewayMetrics(DEFAULT_BUCKETS)
    metrics.request("users", "GET", 200, 0.003)
    metrics.request("users", "GET", 200, 0.0004)
    metrics.request("users", "POST", 502, 0.2)
    seen = samples(exposition(metrics, None))
    ok = (("method", "GET"), ("route", "users"), ("status", "200"))
    assert seen[("spork_requests_total", ok)] == 2
    failed = (("method", "POST"), ("route", "users"), ("status", "502"))
    assert seen[("spork_requests_total", failed)] == 1
    assert seen[("spork_request_duration_seconds_count", (("route", "users"),))] == 3
    # Sub-millisecond requests land in the first bucket: gateway latencies need it.
    first = (("le", "0.0005"), ("route", "users"))
    assert seen[("spork_request_duration_seconds_bucket", first)] == 1


def test_buckets_come_from_the_config() -> None:
    metrics = GatewayMetrics([0.1, 1.0])
    metrics.request("r", "GET", 200, 0.5)
    seen = samples(exposition(metrics, None))
    bounds = sorted(
        dict(labels)["le"]
        for name, labels in seen
        if name == "spork_request_duration_seconds_bucket"
    )
    assert bounds == sorted(["0.1", "1.0", "+Inf"])


def test_breaker_state_is_the_latest_and_transitions_count_changes_only() -> None:
    metrics = GatewayMetrics(DEFAULT_BUCKETS)
    metrics.breaker("billing", "closed", changed=False)
    metrics.breaker("billing", "open", changed=True)
    metrics.breaker("billing", "open", changed=False)
    seen = samples(exposition(metrics, None))
    assert seen[("spork_breaker_state", (("service", "billing"),))] == 2
    opened = (("service", "billing"), ("state", "open"))
    assert seen[("spork_breaker_transitions_total", opened)] == 1


def test_reload_results_and_the_last_one() -> None:
    metrics = GatewayMetrics(DEFAULT_BUCKETS)
    seen = samples(exposition(metrics, None))
    assert seen[("spork_config_last_reload_success", ())] == 1  # the config it started with
    metrics.reload("failure")
    metrics.reload("unchanged")
    seen = samples(exposition(metrics, None))
    assert seen[("spork_config_reloads_total", (("result", "failure"),))] == 1
    assert seen[("spork_config_last_reload_success", ())] == 0
    metrics.reload("success")
    seen = samples(exposition(metrics, None))
    assert seen[("spork_config_last_reload_success", ())] == 1


def test_every_design_series_is_exposed() -> None:
    metrics = GatewayMetrics(DEFAULT_BUCKETS)
    metrics.request("r", "GET", 200, 0.01)
    metrics.observe("upstream_duration_seconds", "svc", 0.01)
    metrics.in_flight += 1
    metrics.count("ratelimit_rejected", "r")
    metrics.breaker("svc", "half_open", changed=True)
    metrics.count("cache_requests", "r", "hit")
    metrics.reload("success")
    metrics.count("state_errors", "ratelimit")
    names = {
        family.name for family in text_string_to_metric_families(exposition(metrics, None).decode())
    }
    expected = {
        "spork_requests",
        "spork_request_duration_seconds",
        "spork_upstream_duration_seconds",
        "spork_requests_in_flight",
        "spork_ratelimit_rejected",
        "spork_breaker_state",
        "spork_breaker_transitions",
        "spork_cache_requests",
        "spork_upstream_healthy",
        "spork_config_reloads",
        "spork_config_last_reload_success",
        "spork_config_restart_pending",
        "spork_state_errors",
    }
    assert expected <= names, expected - names


def test_odd_methods_are_counted_as_other() -> None:
    metrics = GatewayMetrics(DEFAULT_BUCKETS)
    for i in range(50):
        metrics.request("r", f"M{i}", 200, 0.001)
    seen = samples(exposition(metrics, None))
    other = (("method", "OTHER"), ("route", "r"), ("status", "200"))
    assert seen[("spork_requests_total", other)] == 50
    assert len(metrics.counters["requests"]) == 1
