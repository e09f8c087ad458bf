"""Whole-process wall times of the command-line tool: `spork --help`, `spork check` on a
500-route config, `spork routes` on the repo's gateway.toml, `spork token mint`, and
`spork serve` from launch to its first proxied answer."""

from __future__ import annotations

import socket
import subprocess
import time

from check import config as check_config
from check import timed
from harness import HOST, ROOT, Processes, free_port
from targets import SECRET, spork_conf

ROUTES = "spork routes (the repo's gateway.toml)"
REQUEST = b"GET /api/users/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def first_answer(proc: subprocess.Popen[bytes], port: int, timeout: float = 30) -> None:
    """Ask ``port`` for the proxied route every millisecond until it answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=5) as conn:
                conn.sendall(REQUEST)
                if conn.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"spork serve exited ({proc.returncode}) before answering")
        if time.monotonic() > deadline:
            raise SystemExit(f"spork serve did not answer 200 on {HOST}:{port} in {timeout:g} s")
        time.sleep(0.001)


def serve_times(procs: Processes, spork: list[str], upstream: int, runs: int) -> list[float]:
    """`spork serve -c FILE` as typed (reload on), launch to first proxied 200, then stopped."""
    home = procs.work / "serve"
    home.mkdir()
    times = []
    for _ in range(runs):
        port = free_port()
        config = spork_conf(home / "gateway.toml", port, free_port(), upstream)
        started = time.perf_counter()
        proc = procs.start("serve", [*spork, "serve", "-c", str(config)])
        first_answer(proc, port)
        times.append(time.perf_counter() - started)
        procs.stop(proc)
    return times


def routes_times(spork: list[str], runs: int) -> list[float]:
    """`spork routes -c gateway.toml` on the repo's own config: the compiled route table."""
    return timed([*spork, "routes", "-c", str(ROOT / "gateway.toml")], runs)


def cli_times(
    procs: Processes, spork: list[str], upstream: int, runs: int
) -> list[tuple[str, list[float]]]:
    """(command as shown, wall times in s) for each command, ``runs`` runs each."""
    routes = procs.work / "routes.toml"
    routes.write_text(check_config(500))
    minting = procs.work / "mint.toml"
    minting.write_text(f'[auth]\nalgorithms = ["HS256"]\nsecret = "{SECRET}"\n')
    return [
        ("spork --help", timed([*spork, "--help"], runs)),
        ("spork check (500 routes)", timed([*spork, "check", str(routes)], runs)),
        (ROUTES, routes_times(spork, runs)),
        (
            "spork token mint (HS256)",
            timed([*spork, "-c", str(minting), "token", "mint", "--sub", "bench"], runs),
        ),
        ("spork serve, launch to first proxied 200", serve_times(procs, spork, upstream, runs)),
    ]
