"""`spork health`: each service's active check run from the CLI against real upstreams on
loopback (healthy, 503, refused, slow, TLS), its table and JSON, exit codes, the SERVICE
filter, --timeout, concurrency, and --watch."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.health.conftest import Svc, write_config
from tests.support import (
    LOOPBACK,
    Processes,
    SporkRunner,
    Upstream,
    UpstreamFactory,
    certificate_authority,
    free_port,
    reap,
    server_context,
    spork_env,
)

STAMP = re.compile(r"\d\d:\d\d:\d\d\n")


async def spork(run_spork: SporkRunner, config: Path, *args: str, **kw: Any) -> Any:
    """Run the CLI off the event loop, which serves the upstreams it probes."""
    return await asyncio.to_thread(run_spork, "-c", str(config), "health", *args, **kw)


async def spork_json(run_spork: SporkRunner, config: Path, *args: str) -> tuple[int, Any]:
    result = await spork(run_spork, config, "--json", *args)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def by_endpoint(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["endpoint"]: row for row in rows}


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("spork: ")
    for word in words:
        assert word in lines[0], lines[0]
    assert result.stdout == ""


def refused_url() -> str:
    """A loopback port nothing listens on (free a moment ago)."""
    return f"http://{LOOPBACK}:{free_port()}"


# --- results and exit codes ----------------------------------------------------------------------


async def test_all_healthy_prints_a_table_and_exits_0(
    tmp_path: Path, upstream_factory: UpstreamFactory, run_spork: SporkRunner
) -> None:
    one, two = await upstream_factory.many("one", "two")
    config = write_config(
        tmp_path / "g.toml",
        {"api": Svc([one.url, two.url], 'path = "/status/204"\nexpected_status = [204]')},
    )
    result = await spork(run_spork, config)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "service", "endpoint", "status", "http", "latency", "check", "error"
    ]  # fmt: skip
    for upstream, line in zip((one, two), lines[1:3], strict=True):
        words = line.split()
        assert words[:4] == ["api", upstream.url, "healthy", "204"], line
        assert re.fullmatch(r"[\d.]+", words[4]) and words[5] == "ms", line
        assert words[6:] == ["/status/204", "-"], line
    assert lines[3].strip() == "2/2 endpoints healthy"
    # Each endpoint was probed once, on the configured path.
    for upstream in (one, two):
        assert [r.path for r in upstream.requests] == ["/status/204"]


async def test_503_refused_and_slow_are_unhealthy_with_one_line_reasons(
    tmp_path: Path, upstream: Upstream, run_spork: SporkRunner
) -> None:
    refused = refused_url()
    config = write_config(
        tmp_path / "g.toml",
        {
            "good": Svc([upstream.url], 'path = "/health"'),
            "sick": Svc([upstream.url], 'path = "/status/503"'),
            "gone": Svc([refused], 'path = "/health"'),
            "slow": Svc([upstream.url], 'path = "/slow?ms=5000"\ntimeout = "200ms"'),
        },
    )
    code, rows = await spork_json(run_spork, config)
    assert code == 1
    assert [row["service"] for row in rows] == ["good", "sick", "gone", "slow"]
    good, sick, gone, slow = rows
    assert good["healthy"] is True and good["http_status"] == 200 and good["error"] is None
    assert good["url"] == f"{upstream.url}/health"
    assert sick["healthy"] is False and sick["http_status"] == 503
    assert sick["error"] == "unexpected status 503"
    assert gone["healthy"] is False and gone["http_status"] is None
    assert gone["endpoint"] == refused
    assert gone["error"] == "cannot connect: Connection refused"
    assert slow["healthy"] is False and slow["http_status"] is None
    assert slow["error"] == "timed out after 200ms"
    assert slow["timeout"] == 0.2
    for row in rows:
        assert row["check"] == "configured"
        assert row["expected_status"] == [200]
        assert isinstance(row["latency_ms"], float) and row["latency_ms"] >= 0

    # The same run for people: one row per endpoint, the reason on it, a summary.
    result = await spork(run_spork, config)
    assert result.returncode == 1
    table = {line.split()[0]: line for line in result.stdout.splitlines()[1:5]}
    assert " unhealthy " in table["sick"] and table["sick"].rstrip().endswith(
        "unexpected status 503"
    )
    assert table["gone"].rstrip().endswith("cannot connect: Connection refused")
    assert table["slow"].rstrip().endswith("timed out after 200ms")
    assert " healthy " in table["good"] and " 200 " in table["good"]
    assert "1/4 endpoints healthy" in result.stdout


async def test_a_service_without_a_health_section_gets_the_default_check(
    tmp_path: Path, upstream: Upstream, upstream_factory: UpstreamFactory, run_spork: SporkRunner
) -> None:
    # An app with no /health at all: the default check says so rather than guessing.
    bare = await upstream_factory("bare")
    bare.answer(404, "/health")
    config = write_config(
        tmp_path / "g.toml", {"plain": Svc([upstream.url]), "nohealth": Svc([bare.url])}
    )
    code, rows = await spork_json(run_spork, config)
    assert code == 1
    plain, nohealth = rows
    assert plain["check"] == "default" and plain["healthy"] is True
    assert plain["path"] == "/health" and plain["expected_status"] == [200]
    assert plain["timeout"] == 2.0
    assert [r.path for r in upstream.requests] == ["/health"]
    assert nohealth["check"] == "default" and nohealth["healthy"] is False
    assert nohealth["error"] == "unexpected status 404"


async def test_tls_endpoints(
    tmp_path: Path, upstream: Upstream, upstream_factory: UpstreamFactory, run_spork: SporkRunner
) -> None:
    pki = certificate_authority(tmp_path)
    secure = (await upstream_factory("secure", tls=server_context(pki.cert, pki.key))).url
    plain_as_tls = upstream.url.replace("http://", "https://")
    config = write_config(tmp_path / "g.toml", {"tls": Svc([secure, plain_as_tls])})
    # A certificate from a CA the system does not trust is rejected, and said so.
    code, rows = await spork_json(run_spork, config)
    assert code == 1
    found = by_endpoint(rows)
    assert found[secure]["healthy"] is False
    assert found[secure]["error"].startswith("TLS certificate rejected: "), found[secure]
    assert "unable to get local issuer certificate" in found[secure]["error"]
    assert found[plain_as_tls]["error"] == (
        "TLS handshake failed: wrong version number (is the endpoint plain http?)"
    )
    # Trusting the CA (as a person would, through the usual variable) makes it healthy.
    result = await spork(run_spork, config, "--json", "tls", env={"SSL_CERT_FILE": str(pki.ca)})
    assert result.returncode == 1  # the plain-http endpoint is still wrong
    found = by_endpoint(json.loads(result.stdout))
    assert found[secure]["healthy"] is True and found[secure]["http_status"] == 200
    assert found[secure]["url"] == f"{secure}/health"


# --- SERVICE filter and --timeout ----------------------------------------------------------------


async def test_service_filter_checks_only_the_named_services(
    tmp_path: Path, upstream_factory: UpstreamFactory, run_spork: SporkRunner
) -> None:
    a, b, c = await upstream_factory.many("a", "b", "c")
    config = write_config(
        tmp_path / "g.toml",
        {
            "a": Svc([a.url], 'path = "/health"'),
            "b": Svc([b.url], 'path = "/health"'),
            "c": Svc([c.url], 'path = "/status/500"'),
        },
    )
    # Only the unhealthy service decides the exit code when it is chosen.
    code, rows = await spork_json(run_spork, config, "b", "a", "b")
    assert code == 0
    assert [row["service"] for row in rows] == ["b", "a"]
    assert c.requests == []
    code, rows = await spork_json(run_spork, config, "c")
    assert code == 1
    assert [(row["service"], row["error"]) for row in rows] == [("c", "unexpected status 500")]
    assert len(a.requests) == len(b.requests) == 1


async def test_timeout_option_overrides_each_checks_timeout(
    tmp_path: Path, upstream: Upstream, run_spork: SporkRunner
) -> None:
    config = write_config(
        tmp_path / "g.toml",
        {
            # Without the override this check would pass, after 3 s.
            "slow": Svc([upstream.url], 'path = "/slow?ms=3000"\ntimeout = "10s"'),
            "quick": Svc([upstream.url], 'path = "/health"\ntimeout = "10s"'),
        },
    )
    code, rows = await spork_json(run_spork, config, "--timeout", "300ms")
    assert code == 1
    slow, quick = rows
    assert slow["error"] == "timed out after 300ms" and slow["timeout"] == 0.3
    assert quick["healthy"] is True and quick["timeout"] == 0.3
    # Plain seconds work too.
    code, rows = await spork_json(run_spork, config, "slow", "--timeout", "0.25")
    assert code == 1
    assert rows[0]["error"] == "timed out after 250ms"


async def test_endpoints_are_checked_concurrently(
    tmp_path: Path, upstream_factory: UpstreamFactory, run_spork: SporkRunner
) -> None:
    upstreams = await upstream_factory.many(*(f"u{i}" for i in range(20)))
    config = write_config(
        tmp_path / "g.toml",
        {"many": Svc([u.url for u in upstreams], 'path = "/slow?ms=1000"\ntimeout = "10s"')},
    )
    started = time.monotonic()
    code, rows = await spork_json(run_spork, config)
    elapsed = time.monotonic() - started
    assert code == 0, rows
    assert len(rows) == 20 and all(row["healthy"] for row in rows)
    # Every probe really waited its second...
    assert all(row["latency_ms"] >= 1000 for row in rows)
    assert all(len(u.requests) == 1 for u in upstreams)
    # ...yet twenty of them did not take twenty seconds: they ran side by side.
    assert elapsed < 8, elapsed


# --- errors --------------------------------------------------------------------------------------


async def test_unknown_service_is_a_usage_error(
    tmp_path: Path, upstream: Upstream, run_spork: SporkRunner
) -> None:
    config = write_config(
        tmp_path / "g.toml", {"api": Svc([upstream.url]), "web": Svc([upstream.url])}
    )
    result = await spork(run_spork, config, "api", "nope")
    one_line_error(result, "no service named 'nope'", "services: api, web")
    assert upstream.requests == []


def test_missing_config_is_a_usage_error(tmp_path: Path, run_spork: SporkRunner) -> None:
    result = run_spork("-c", str(tmp_path / "absent.toml"), "health")
    one_line_error(result, "absent.toml: no such file")


def test_invalid_config_is_a_usage_error(tmp_path: Path, run_spork: SporkRunner) -> None:
    config = write_config(tmp_path / "g.toml", {"api": Svc(["http://127.0.0.1:9"], "timeout = 2")})
    result = run_spork("-c", str(config), "health")
    one_line_error(result, "g.toml:", "timeout", f"spork check {config}")


def test_bad_timeout_is_a_usage_error(tmp_path: Path, run_spork: SporkRunner) -> None:
    config = write_config(tmp_path / "g.toml", {"api": Svc(["http://127.0.0.1:9"])})
    one_line_error(run_spork("-c", str(config), "health", "--timeout", "0"), "--timeout")
    one_line_error(run_spork("-c", str(config), "health", "--timeout", "soon"), "--timeout")


def test_no_services_is_nothing_unhealthy(tmp_path: Path, run_spork: SporkRunner) -> None:
    config = tmp_path / "g.toml"
    config.write_text("[server]\n")
    result = run_spork("-c", str(config), "health")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"no services in {config}"
    result = run_spork("-c", str(config), "health", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == []


# --- --watch -------------------------------------------------------------------------------------


async def test_watch_probes_again_each_refresh_until_interrupted(
    tmp_path: Path, upstream: Upstream, processes: Processes
) -> None:
    refused = refused_url()
    config = write_config(tmp_path / "g.toml", {"api": Svc([upstream.url, refused])})
    proc = processes.start(
        sys.executable,
        "-m",
        "spork_cli",
        "-c",
        str(config),
        "health",
        "--watch",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=spork_env(),
    )
    # Reading blocks; a hung process must not hang the suite.
    guard = threading.Timer(20, proc.kill)
    guard.start()

    def two_blocks() -> list[str]:
        assert proc.stdout is not None
        seen: list[str] = []
        while seen.count("summary") < 2:
            line = proc.stdout.readline()
            assert line, f"the watch ended by itself: {seen}"
            words = line.split()
            if STAMP.fullmatch(line):
                seen.append("stamp")
            elif words[:3] == ["api", upstream.url, "healthy"]:
                seen.append("up")
            elif words[:3] == ["api", refused, "unhealthy"]:
                seen.append("down")
            elif line.strip() == "1/2 endpoints healthy":
                seen.append("summary")
        return seen

    try:
        seen = await asyncio.to_thread(two_blocks)
        assert seen == ["stamp", "up", "down", "summary"] * 2
        # Each block is a new probe, not the first one printed again.
        assert [r.path for r in upstream.requests][:2] == ["/health", "/health"]
        # An unhealthy endpoint does not turn Ctrl-C into a failure.
        os.kill(proc.pid, signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 10) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
    finally:
        guard.cancel()
        reap(proc)
