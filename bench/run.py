"""spork against its peers in one run, on loopback only, bounded in time.

    python bench/run.py [--duration 4] [--rounds 3] [--connections 50] [--runs 5]
        [--skip cached,workers,shared,chain,fastapi,nginx,caddy,proxy,cli]
        [--soak SECONDS] [--out FILE]

Proxy targets, each visited in turn in every round by `wrk -t1` (bench/targets.py):
(a) the upstream directly: nginx answering a small static JSON body from one worker;
(b) spork with a plain route; (b') the same route with a response cache, every measured
request a hit (asked without the Authorization header the others get: a cache on an open
route bypasses it); (b'') the plain route under `--workers 2` (two processes on the port,
measured once both listen); (b''') a route with a GCRA limit in memory state, in one
process and under `--workers 2`, where the workers share the supervisor's store over a Unix
socket (what that sharing costs); (c) spork with the full chain: HS256 auth, a GCRA limit in a
real redis-server, metrics and the access log; (d) the minimal aiohttp proxy in
bench/floor_proxy.py, the Python floor; (e) FastAPI + httpx under uvicorn
(bench/fastapi_proxy.py); (f) nginx and (g) caddy as reverse proxies. Every other target is
one process with one worker; caddy runs with GOMAXPROCS=1 to match.

Then the command-line tool (bench/cli_times.py): `spork --help`, `spork check` on 500 routes,
`spork token mint`, and `spork serve` from launch to its first proxied answer.

Bounded: targets x (1 s warm-up + rounds x (duration + min(duration, 3) s)), plus a few
seconds of command-line runs. Needs wrk, nginx, redis-server and caddy (Debian packages wrk,
nginx-light, redis-server, caddy) and `pip install -e '.[bench]'`; --skip leaves parts out.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from cli_times import cli_times
from harness import Processes, spork_command, use_this_checkout
from load import Target, measure, single_duration, soak
from needs import missing, versions
from report import cli_table, goals, proxy_table
from targets import CADDY_ENV, Launcher, start_upstream

PARTS = ("cached", "workers", "shared", "chain", "fastapi", "nginx", "caddy", "proxy", "cli")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5, help="runs of each command-line timing")
    parser.add_argument(
        "--skip",
        default="",
        help=f"comma-separated parts to leave out: {', '.join(PARTS)}",
    )
    parser.add_argument(
        "--soak",
        type=float,
        default=0,
        help="then hold 1,000 connections on spork this many seconds, sampling its RSS",
    )
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    args.skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    unknown = args.skip - set(PARTS)
    if unknown:
        parser.error(f"--skip: unknown {', '.join(sorted(unknown))}; choose from {PARTS}")
    return args


def parts(skip: set[str]) -> set[str]:
    chosen = {"upstream", *PARTS} - skip
    if "proxy" in skip:
        chosen -= {"cached", "workers", "shared", "chain", "fastapi", "nginx", "caddy"}
    return chosen


def proxies(launcher: Launcher, upstream: Target, chosen: set[str]) -> tuple[list[Target], str]:
    """Start every chosen target; the header list carries the full chain's token."""
    targets = [upstream, launcher.spork_plain()]
    if "cached" in chosen:
        targets.append(launcher.spork_cached())
    if "workers" in chosen:
        targets.append(launcher.spork_workers())
    if "shared" in chosen:
        targets += [launcher.spork_limited(), launcher.spork_limited(workers=2)]
    headers: list[str] = []
    if "chain" in chosen:
        chain, token = launcher.spork_chain()
        targets.append(chain)
        headers = ["-H", f"Authorization: Bearer {token}"]
    targets.append(launcher.floor())
    if "fastapi" in chosen:
        targets.append(launcher.fastapi())
    if "nginx" in chosen:
        targets.append(launcher.nginx())
    if "caddy" in chosen:
        targets.append(launcher.caddy())
    return targets, headers


def preamble(chosen: set[str], spork: list[str]) -> str:
    lines = [
        f"Versions: {versions(chosen)}.",
        f"spork runs as: {' '.join(spork)}, with this checkout first on PYTHONPATH.",
    ]
    if "caddy" in chosen:
        lines.append(
            f"caddy runs with {' '.join(f'{k}={v}' for k, v in CADDY_ENV.items())} (one thread "
            "running Go code), comparable with the one-worker nginx and one-process Python "
            "targets; by default it would use every core."
        )
    if "fastapi" in chosen:
        lines.append(
            "FastAPI + httpx: uvicorn, one worker, one shared httpx.AsyncClient with its "
            "default limits (100 connections, 20 kept alive)."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    chosen = parts(args.skip)
    problem = missing(chosen)
    if problem:
        raise SystemExit(problem)
    use_this_checkout()
    spork = spork_command()
    sections = [preamble(chosen, spork)]
    if "proxy" in chosen:
        count = 3 + len(chosen & {"cached", "workers", "chain", "fastapi", "nginx", "caddy"})
        count += 2 * ("shared" in chosen)
        each = 1 + args.rounds * (args.duration + single_duration(args.duration))
        print(f"proxy rounds: about {count * each:.0f} s", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="spork-bench-"))
    try:
        with Processes(work) as procs:
            upstream = start_upstream(procs)
            if "proxy" in chosen:
                launcher = Launcher(procs, spork, upstream.port)
                targets, headers = proxies(launcher, upstream, chosen)
                measure(targets, args.duration, args.rounds, args.connections, headers)
                sections.append(
                    proxy_table(
                        targets,
                        args.duration,
                        args.rounds,
                        args.connections,
                        single_duration(args.duration),
                    )
                )
                if args.soak:
                    sections.append(soak(targets[1], args.soak))
                for target in targets[1:]:  # idle servers out of the command-line timings
                    procs.stop(target.process)
            else:
                targets = []
            timings = []
            if "cli" in chosen:
                print("command-line timings", file=sys.stderr)
                timings = cli_times(procs, spork, upstream.port, args.runs)
                sections.append(cli_table(timings, args.runs))
            sections.append(goals(targets, timings))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = "\n".join(section for section in sections if section)
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("interrupted; every server it started is stopped") from None
