"""The benchmark's Markdown: the proxy table, the command-line table and the goals."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median

from cli_times import ROUTES
from load import Target

PLAIN_VS_FLOOR = 0.95
CHAIN_VS_FLOOR = 0.70
SHARED_VS_ONE = 1.0  # two workers sharing one memory store still beat one process
CACHED_VS_PLAIN = 1.0  # a cache hit is at least as fast as asking the upstream
SPORK_VS_FASTAPI = 2.0
HELP_SECONDS = 0.3
ROUTES_SECONDS = 0.4


def _by_key(targets: Sequence[Target], key: str) -> Target | None:
    return next((t for t in targets if t.key == key), None)


def proxy_table(
    targets: Sequence[Target], duration: float, rounds: int, connections: int, single: float
) -> str:
    floor = median(next(t for t in targets if t.key == "floor").rps)
    fastapi = _by_key(targets, "fastapi")
    direct = median(targets[0].p50_single)
    x_fastapi = " x FastAPI |" if fastapi else ""
    lines = [
        f"wrk -t1 -c{connections} -d{duration:g}s, {rounds} interleaved rounds; "
        f"single-connection p50 from -c1 -d{single:g}s runs; every target gets the same "
        "Authorization header. CPU us/req: the CPU time (user and system, children included) "
        "the target spent per request under those connections, the median of the rounds.",
        "",
        f"| target | req/s median (min-max) | x floor |{x_fastapi} p50 ms | p99 ms "
        "| p50 at 1 conn ms | added over direct ms | RSS MB | CPU us/req |",
        "| --- " * (9 + bool(fastapi)) + "|",
    ]
    for t in targets:
        rps = median(t.rps)
        ratio = f" {rps / median(fastapi.rps):.2f} |" if fastapi else ""
        one = median(t.p50_single)
        lines.append(
            f"| {t.name} | {rps:,.0f} ({min(t.rps):,.0f}-{max(t.rps):,.0f}) "
            f"| {rps / floor:.2f} |{ratio} {median(t.p50):.2f} | {median(t.p99):.2f} "
            f"| {one:.3f} | {one - direct:+.3f} | {max(t.rss):.0f} | {median(t.cpu_us):.0f} |"
        )
    return "\n".join(lines) + "\n"


def cli_table(rows: Sequence[tuple[str, list[float]]], runs: int) -> str:
    lines = [
        f"Command-line tool, whole-process wall time, {runs} runs each:",
        "",
        "| command | median s (min-max), whole process |",
        "| --- | --- |",
    ]
    for name, times in rows:
        lines.append(f"| {name} | {median(times):.3f} ({min(times):.3f}-{max(times):.3f}) |")
    return "\n".join(lines) + "\n"


def paired(a: Target, b: Target) -> float:
    """a's req/s over b's, round by round (measured within seconds of each other, under the
    same background load), and the median of those ratios."""
    return median(x / y for x, y in zip(a.rps, b.rps, strict=True))


def _goal(goal: str, shown: str, target: str, met: bool) -> str:
    return f"| {goal} | {shown} | {target} | {'yes' if met else 'NO'} |"


def goals(targets: Sequence[Target], cli: Sequence[tuple[str, list[float]]]) -> str:
    """Each goal whose parts were measured: what it asks, what this run measured, met or not."""
    measured = {t.key: t for t in targets if t.rps}
    rows = []
    for key, base, name, least in (
        ("plain", "floor", "spork plain route vs the aiohttp floor", PLAIN_VS_FLOOR),
        ("chain", "floor", "spork full chain vs the aiohttp floor", CHAIN_VS_FLOOR),
        ("cached", "plain", "spork cached route (hits) vs the plain route", CACHED_VS_PLAIN),
        ("plain", "fastapi", "spork plain route vs FastAPI + httpx", SPORK_VS_FASTAPI),
        ("limited2", "limited", "memory limit, 2 workers sharing one store vs 1", SHARED_VS_ONE),
    ):
        if key in measured and base in measured:
            ratio = paired(measured[key], measured[base])
            rows.append(_goal(name, f"{ratio:.2f} x", f">= {least:g} x", ratio >= least))
    limits = {"spork --help": HELP_SECONDS, ROUTES: ROUTES_SECONDS}
    for name, times in cli:
        if name in limits:
            seconds = median(times)
            rows.append(
                _goal(
                    f"{name}, median wall time",
                    f"{seconds:.3f} s",
                    f"<= {limits[name]:g} s",
                    seconds <= limits[name],
                )
            )
    if not rows:
        return ""
    header = [
        "Ratios are the median of the per-round ratios: both targets of a ratio are measured "
        "in every round, within seconds of each other.",
        "",
        "| goal | measured | target | met |",
        "| --- | --- | --- | --- |",
    ]
    return "\n".join([*header, *rows]) + "\n"
