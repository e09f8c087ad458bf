"""What each part of the benchmark needs from the machine, and the versions it found."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

from harness import find_tool

APT = "apt-get install -y"
PIP = "pip install -e '.[bench]'"
# part -> (programs or Python modules, how to install them)
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "upstream": (("nginx",), f"{APT} nginx-light"),
    "proxy": (("wrk",), f"{APT} wrk"),
    "chain": (("redis-server",), f"{APT} redis-server"),
    "caddy": (("caddy",), f"{APT} caddy"),
    "fastapi": (("fastapi", "uvicorn", "httpx"), PIP),
}
PYTHON = {"fastapi"}  # parts whose needs are Python modules


def missing(parts: set[str]) -> str | None:
    """One line naming what is missing for ``parts`` and how to install it, or None."""
    gaps: list[str] = []
    skippable: list[str] = []
    for part, (names, install) in NEEDS.items():
        if part not in parts:
            continue
        found = importlib.util.find_spec if part in PYTHON else find_tool
        absent = [name for name in names if found(name) is None]
        if absent:
            gaps.append(f"{', '.join(absent)} ({install})")
            if part not in {"upstream", "proxy"}:
                skippable.append(part)
    if not gaps:
        return None
    line = "missing: " + "; ".join(gaps)
    if skippable:
        line += f"; or leave those targets out with --skip {','.join(skippable)}"
    return line


def _program(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout or done.stderr).strip().splitlines()[0]


def _package(name: str) -> str:
    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return f"{name} (not installed)"


def versions(parts: set[str]) -> str:
    """The servers and libraries under test, for the record."""
    python = sys.version.split()[0]
    found = [f"Python {python}", _package("aiohttp"), _package("uvloop")]
    if "upstream" in parts:
        found.append(_program([str(find_tool("nginx")), "-v"]).removeprefix("nginx version: "))
    if "caddy" in parts:
        found.append("caddy " + _program([str(find_tool("caddy")), "version"]).split()[0])
    if "fastapi" in parts:
        found += [_package(name) for name in ("fastapi", "uvicorn", "httptools", "httpx")]
    return ", ".join(found)
