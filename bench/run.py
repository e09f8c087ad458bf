"""Proxy benchmark: wrk against each target in interleaved rounds, on loopback only.

    python bench/run.py [--duration 5] [--rounds 3] [--connections 50] [--out FILE]

Targets: (a) the upstream directly, (b) spork with a plain route, (c) the minimal aiohttp
proxy in bench/floor_proxy.py, (d) nginx as a reverse proxy. The upstream is nginx answering a
small static JSON body from one worker, so the proxies under test get the CPU. Needs `wrk` and
`nginx` (Debian: apt-get install wrk nginx-light). Bounded: rounds x targets x duration.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BODY = '{"id":1,"name":"Ada Lovelace","email":"ada@example.com"}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children, in MB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def nginx_conf(work: Path, name: str, port: int, upstream: int | None) -> Path:
    if upstream is None:
        location = f"default_type application/json; return 200 '{BODY}';"
        upstream_block = ""
    else:
        upstream_block = f"upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}"
        location = (
            "proxy_pass http://up; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; proxy_set_header Host $host;'
        )
    conf = work / f"{name}.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/{name}-body;
  proxy_temp_path {work}/{name}-proxy;
  keepalive_requests 1000000;
  {upstream_block}
  server {{ listen 127.0.0.1:{port}; location / {{ {location} }} }}
}}
"""
    )
    return conf


@dataclass
class Target:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    p50_single: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)


HEADERS: list[str] = []  # sent to every target alike (the full chain needs its token)


def wrk(port: int, duration: float, connections: int) -> tuple[float, float, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--latency",
            *HEADERS,
            f"http://127.0.0.1:{port}/api/users/1",
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

    return rps, pct("50"), pct("99")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--chain",
        action="store_true",
        help="add spork with the full chain: HS256 auth, a Redis GCRA limit, access log",
    )
    parser.add_argument(
        "--soak",
        type=float,
        default=0,
        help="then hold 1,000 connections on spork this many seconds, sampling its RSS",
    )
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is needed: apt-get install wrk nginx-light")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="spork-bench-"))
    procs: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], port: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        procs.append(proc)
        wait_port(port)
        return proc

    try:
        up_port = free_port()
        start([nginx, "-c", str(nginx_conf(work, "upstream", up_port, None))], up_port)
        targets: list[Target] = [
            Target("upstream direct", up_port, procs[-1]),
        ]
        spork_port, admin_port = free_port(), free_port()
        config = work / "gateway.toml"
        config.write_text(
            f"""
[server]
port = {spork_port}
[admin]
port = {admin_port}
[[services]]
name = "users"
endpoints = ["http://127.0.0.1:{up_port}"]
[[routes]]
path = "/api/users"
service = "users"
"""
        )
        proc = start(
            [sys.executable, "-m", "spork_cli", "serve", "-c", str(config), "--no-reload"],
            spork_port,
        )
        targets.append(Target("spork, plain route", spork_port, proc))
        if args.chain:
            targets.append(full_chain(work, up_port, start))
        floor_port = free_port()
        proc = start(
            [
                sys.executable,
                str(ROOT / "bench" / "floor_proxy.py"),
                str(floor_port),
                f"http://127.0.0.1:{up_port}",
            ],
            floor_port,
        )
        targets.append(Target("aiohttp floor proxy", floor_port, proc))
        nginx_port = free_port()
        proc = start([nginx, "-c", str(nginx_conf(work, "proxy", nginx_port, up_port))], nginx_port)
        targets.append(Target("nginx proxy", nginx_port, proc))
        for target in targets:  # warm up pools and caches
            wrk(target.port, 1, args.connections)
        for _ in range(args.rounds):
            for target in targets:
                rps, p50, p99 = wrk(target.port, args.duration, args.connections)
                target.rps.append(rps)
                target.p50.append(p50)
                target.p99.append(p99)
                target.p50_single.append(wrk(target.port, min(args.duration, 3), 1)[1])
                target.rss.append(rss_mb(target.process.pid))
        report = render(targets, args)
        if args.soak:
            report += soak(targets[1], args.soak)
        print(report)
        if args.out:
            args.out.write_text(report)
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


def full_chain(work: Path, up_port: int, start: Any) -> Target:
    """spork with HS256 auth (one repeated token), a GCRA limit in a real redis-server (never
    reached), and the access log: the request path a production route takes."""
    redis_port = free_port()
    start(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
        redis_port,
    )
    port, admin = free_port(), free_port()
    secret = "b" * 48
    config = work / "chain.toml"
    config.write_text(
        f"""
[server]
port = {port}
[admin]
port = {admin}
[state]
backend = "redis"
url = "redis://127.0.0.1:{redis_port}/0"
[auth]
algorithms = ["HS256"]
secret = "{secret}"
[[services]]
name = "users"
endpoints = ["http://127.0.0.1:{up_port}"]
[[routes]]
path = "/api/users"
service = "users"
auth = "required"
rate_limit = {{ requests = 1000000000, per = "1m", key = ["user"] }}
"""
    )
    proc = start(
        [sys.executable, "-m", "spork_cli", "serve", "-c", str(config), "--no-reload"], port
    )
    from spork_cli.auth.mint import mint
    from spork_cli.config.load import load_config

    token = mint(load_config(config).auth, work, sub="bench", ttl=3600)
    HEADERS[:] = ["-H", f"Authorization: Bearer {token}"]
    return Target("spork, full chain", port, proc)


def soak(target: Target, seconds: float) -> str:
    """1,000 concurrent connections for ``seconds``; RSS sampled every 5 s, bounded."""
    samples = [rss_mb(target.process.pid)]
    load = subprocess.Popen(
        [
            "wrk",
            "-t2",
            "-c1000",
            f"-d{seconds:g}s",
            f"http://127.0.0.1:{target.port}/api/users/1",
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


def render(targets: list[Target], args: argparse.Namespace) -> str:
    floor = statistics.median(next(t for t in targets if "floor" in t.name).rps)
    direct = statistics.median(targets[0].p50_single)
    lines = [
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s, {args.rounds} interleaved rounds; "
        "single-connection p50 from -c1 runs.",
        "",
        "| target | req/s median (min-max) | x floor | p50 ms | p99 ms | p50 at 1 conn ms "
        "| added over direct ms | RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in targets:
        single = statistics.median(t.p50_single)
        lines.append(
            f"| {t.name} | {statistics.median(t.rps):,.0f} ({min(t.rps):,.0f}-{max(t.rps):,.0f}) "
            f"| {statistics.median(t.rps) / floor:.2f} | {statistics.median(t.p50):.2f} "
            f"| {statistics.median(t.p99):.2f} | {single:.3f} | {single - direct:+.3f} "
            f"| {max(t.rss):.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
