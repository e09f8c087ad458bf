"""The alert rules the `full` template ships: valid for promtool, and each one fires on the
series spork exposes (and stays quiet on healthy ones), proved with `promtool test rules`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import Processes

RULES = Path(__file__).resolve().parents[2] / "templates" / "full" / "monitoring" / "alerts.yml"

UNIT_TESTS = r"""
rule_files:
  - alerts.yml
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # users: 10% errors; orders: healthy
      - series: 'spork_requests_total{route="users",method="GET",status="200",instance="a"}'
        values: '0+540x20'
      - series: 'spork_requests_total{route="users",method="GET",status="502",instance="a"}'
        values: '0+60x20'
      - series: 'spork_requests_total{route="orders",method="GET",status="200",instance="a"}'
        values: '0+600x20'
      # users: every request in the 2.5 s bucket; orders: fast
      - series: 'spork_request_duration_seconds_bucket{route="users",le="1.0",instance="a"}'
        values: '0x20'
      - series: 'spork_request_duration_seconds_bucket{route="users",le="2.5",instance="a"}'
        values: '0+600x20'
      - series: 'spork_request_duration_seconds_bucket{route="users",le="+Inf",instance="a"}'
        values: '0+600x20'
      - series: 'spork_request_duration_seconds_bucket{route="orders",le="1.0",instance="a"}'
        values: '0+600x20'
      - series: 'spork_request_duration_seconds_bucket{route="orders",le="2.5",instance="a"}'
        values: '0+600x20'
      - series: 'spork_request_duration_seconds_bucket{route="orders",le="+Inf",instance="a"}'
        values: '0+600x20'
      - series: 'spork_breaker_state{service="flaky",instance="a"}'
        values: '2x20'
      - series: 'spork_breaker_state{service="users",instance="a"}'
        values: '0x20'
      - series: 'spork_state_errors_total{op="ratelimit",instance="a"}'
        values: '0+30x20'
      - series: 'spork_state_errors_total{op="ratelimit",instance="b"}'
        values: '0x20'
      - series: 'spork_upstream_healthy{service="flaky",endpoint="http://10.0.0.1",instance="a"}'
        values: '0x20'
      - series: 'spork_upstream_healthy{service="users",endpoint="http://10.0.0.2",instance="a"}'
        values: '1x20'
      - series: 'spork_config_last_reload_success{instance="a"}'
        values: '0x20'
      - series: 'spork_config_last_reload_success{instance="b"}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: SporkHighErrorRate
        exp_alerts:
          - exp_labels: {severity: page, route: users}
            exp_annotations:
              summary: "Route users answers 5xx to 10% of requests"
              description: "More than 5% of the route's responses have been server \
                errors for 5 minutes."
      - eval_time: 15m
        alertname: SporkHighLatencyP95
        exp_alerts:
          - exp_labels: {severity: warn, route: users}
            exp_annotations:
              summary: "Route users p95 latency is 2.425s"
              description: "The 95th percentile of the route's response time has been \
                above 1 s for 10 minutes."
      - eval_time: 15m
        alertname: SporkBreakerOpen
        exp_alerts:
          - exp_labels: {severity: page, service: flaky}
            exp_annotations:
              summary: "The circuit breaker of service flaky is open"
              description: "The gateway has stopped calling the service and answers 503 itself."
      - eval_time: 15m
        alertname: SporkStateStoreUnreachable
        exp_alerts:
          - exp_labels: {severity: page, instance: a}
            exp_annotations:
              summary: "Gateway a cannot reach its state store (Redis)"
              description: "Rate limits, breakers, cache and revocations follow their \
                on_error policy while Redis fails."
      - eval_time: 15m
        alertname: SporkUpstreamDown
        exp_alerts:
          - exp_labels: {severity: page, service: flaky}
            exp_annotations:
              summary: "Every endpoint of service flaky is unhealthy"
              description: "Health checks or passive ejection have taken all of the \
                service's endpoints out of rotation."
      - eval_time: 15m
        alertname: SporkConfigReloadFailed
        exp_alerts:
          - exp_labels: {severity: warn, instance: a}
            exp_annotations:
              summary: "Gateway a rejected its last config change"
              description: "The previous config keeps serving; `spork check` shows the \
                error and its location."
"""


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: scripts/system-deps.sh installs Debian's prometheus")
    return found


def test_the_rules_pass_promtool_check(promtool: str, processes: Processes) -> None:
    result = processes.run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout + result.stderr


def test_each_alert_fires_on_its_condition_and_only_there(
    promtool: str, processes: Processes, tmp_path: Path
) -> None:
    shutil.copy(RULES, tmp_path / "alerts.yml")
    (tmp_path / "alerts_test.yml").write_text(UNIT_TESTS)
    result = processes.run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
