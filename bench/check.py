"""`spork check` on a 500-route config, whole-process time (the issue asks for well under a
second). Also `spork --help`. Bounded: a few runs each.

    python bench/check.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def config(routes: int) -> str:
    lines = []
    for i in range(routes // 10):
        lines += [
            "[[services]]",
            f'name = "svc{i}"',
            f'endpoints = ["http://127.0.0.1:{9000 + i}"]',
        ]
        lines += ['health = { path = "/health", interval = "10s" }', ""]
    for i in range(routes):
        lines += ["[[routes]]", f'path = "/api/v1/r{i}"', f'service = "svc{i // 10}"']
        lines += [f'rate_limit = {{ requests = {i + 1}, per = "1m" }}', ""]
    return "\n".join(lines)


def timed(command: list[str], runs: int) -> list[float]:
    """Wall times of ``runs`` runs, after one that is not counted (it may write bytecode)."""
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        file = Path(work) / "gateway.toml"
        file.write_text(config(500))
        rows = [
            ("spork check (500 routes)", [sys.executable, "-m", "spork_cli", "check", str(file)]),
            ("spork --help", [sys.executable, "-m", "spork_cli", "--help"]),
        ]
        print("| command | median s (min-max), whole process |")
        print("| --- | --- |")
        for name, command in rows:
            times = timed(command, args.runs)
            print(
                f"| {name} | {statistics.median(times):.3f} ({min(times):.3f}-{max(times):.3f}) |"
            )


if __name__ == "__main__":
    main()
