"""wrk against each target in interleaved rounds, and the soak run."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field

from harness import HOST, cpu_seconds, rss_mb

PATH = "/api/users/1"


@dataclass
class Target:
    """One server under load and what the rounds measured on it."""

    key: str  # direct, plain, cached, chain, floor, fastapi, nginx, caddy
    name: str
    port: int
    process: subprocess.Popen[bytes]
    # wrk's headers for this target, when not the run's common ones (the cached route is
    # asked without the chain's Authorization, which a cache on an open route must bypass).
    headers: list[str] | None = None
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    p50_single: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # CPU time per request, microseconds


def wrk(
    port: int, duration: float, connections: int, headers: list[str]
) -> tuple[float, float, float, int]:
    """Requests/s, p50 ms, p99 ms and requests of one wrk run; any failed response stops the
    benchmark."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--latency",
            *headers,
            f"http://{HOST}:{port}{PATH}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"port {port}: {errors.group(1)} failed responses\n{out}")

    def pct(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, pct("50"), pct("99"), done


def _headers(target: Target, common: list[str]) -> list[str]:
    return common if target.headers is None else target.headers


def single_duration(duration: float) -> float:
    return min(duration, 3)


def measure(
    targets: list[Target], duration: float, rounds: int, connections: int, headers: list[str]
) -> None:
    """A 1 s warm-up each, then ``rounds`` rounds, each visiting every target in turn, so
    background load falls on all of them alike; each round starts one target further on, so
    no target always follows the same one. Round r's figures are at index r for every
    target: ratios can be taken round by round (`report.paired`)."""
    for target in targets:  # warm up pools and caches
        wrk(target.port, 1, connections, _headers(target, headers))
    for r in range(rounds):
        start = r % len(targets)
        for target in targets[start:] + targets[:start]:
            before = cpu_seconds(target.process.pid)
            rps, p50, p99, done = wrk(target.port, duration, connections, _headers(target, headers))
            spent = cpu_seconds(target.process.pid) - before
            target.cpu_us.append(spent / max(done, 1) * 1e6)
            target.rps.append(rps)
            target.p50.append(p50)
            target.p99.append(p99)
            single = wrk(target.port, single_duration(duration), 1, _headers(target, headers))
            target.p50_single.append(single[1])
            target.rss.append(rss_mb(target.process.pid))


def soak(target: Target, seconds: float) -> str:
    """1,000 concurrent connections for ``seconds``; RSS sampled every 5 s, bounded."""
    samples = [rss_mb(target.process.pid)]
    load = subprocess.Popen(
        [
            "wrk",
            "-t2",
            "-c1000",
            f"-d{seconds:g}s",
            f"http://{HOST}:{target.port}{PATH}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + seconds + 30
    while load.poll() is None and time.monotonic() < deadline:
        time.sleep(5)
        samples.append(rss_mb(target.process.pid))
    out, _ = load.communicate(timeout=30)
    samples.append(rss_mb(target.process.pid))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    shown = ", ".join(f"{s:.0f}" for s in samples)
    return (
        f"\nSoak: wrk -t2 -c1000 -d{seconds:g}s on {target.name}: "
        f"{float(rps.group(1)) if rps else 0:,.0f} req/s"
        + (f", socket errors: {errors.group(1)}" if errors else "")
        + f"\nRSS MB every 5 s (before, during, after): {shown}\n"
    )
