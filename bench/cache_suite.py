"""The HTTP caching conformance suite (npm's ``http-cache-tests``) run against a cache on
loopback: install it, start its origin server, run its client, and read its results the way
its own report does (a test that depends on a failed test counts as neither pass nor fail).

Only the standard library and bench/harness.py: ``bench/cache_conformance.py`` and
``tests/cache`` both use this.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import HOST, free_port, stop

PACKAGE = "http-cache-tests"
VERSION = "0.4.5"

# Binds every server the suite starts to loopback (its origin listens on all addresses).
LOOPBACK = """\
import http from 'node:http'
const listen = http.Server.prototype.listen
http.Server.prototype.listen = function (port, ...rest) {
  return listen.call(this, port, '127.0.0.1', ...rest)
}
"""

# Each test's id, kind and dependencies, from the suite's own definitions.
METADATA = """\
import tests from './tests/index.mjs'
import surrogate from './tests/surrogate-control.mjs'
tests.push(surrogate)
const out = {}
for (const suite of tests) {
  for (const test of suite.tests) {
    out[test.id] = { kind: test.kind || 'required', depends_on: test.depends_on || [] }
  }
}
console.log(JSON.stringify(out))
"""

# A failure message saying the cache answered where the test wanted the origin asked.
REUSED = "comes from cache"


class SuiteError(RuntimeError):
    """The suite could not be installed or run: one line saying why."""


@dataclass(frozen=True, slots=True)
class Test:
    kind: str  # required, optimal or check
    depends_on: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One test's verdict as the suite's report gives it, and its failure message."""

    kind: str
    verdict: str  # pass, fail, yes, no, setup, retry, dependency, harness, untested
    message: str

    @property
    def reused(self) -> bool:
        """A required test failed because the cache answered it: a reuse the test forbids."""
        return self.kind == "required" and self.verdict == "fail" and REUSED in self.message


def _node() -> str:
    found = shutil.which("node")
    if found is None:
        raise SuiteError("node not found (Debian: apt-get install nodejs npm)")
    return found


def install(into: Path) -> Path:
    """The suite's package directory under ``into``, installed from npm when missing."""
    package = into / "node_modules" / PACKAGE
    manifest = package / "package.json"
    if manifest.exists() and json.loads(manifest.read_text())["version"] == VERSION:
        return package
    npm = shutil.which("npm")
    if npm is None:
        raise SuiteError("npm not found (Debian: apt-get install nodejs npm)")
    into.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--prefix", str(into), "--no-audit", "--no-fund", "--no-save"]
    try:
        done = subprocess.run(
            [*command, f"{PACKAGE}@{VERSION}"], capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired as exc:
        raise SuiteError(f"npm install {PACKAGE}@{VERSION} took over 300 s") from exc
    if done.returncode != 0 or not manifest.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SuiteError(f"npm install {PACKAGE}@{VERSION} failed: " + " | ".join(tail))
    return package


def metadata(package: Path) -> dict[str, Test]:
    script = package / "spork-metadata.mjs"
    script.write_text(METADATA)
    done = subprocess.run(
        [_node(), str(script)], cwd=package, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise SuiteError(f"reading the suite's tests failed: {done.stderr.strip()[-300:]}")
    raw: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return {tid: Test(t["kind"], tuple(t["depends_on"])) for tid, t in raw.items()}


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SuiteError(f"the suite's origin exited ({proc.returncode}) before listening")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SuiteError(f"the suite's origin is not listening on {HOST}:{port} after {timeout} s")


@contextmanager
def origin(package: Path, work: Path, port: int | None = None) -> Iterator[int]:
    """The suite's origin server on loopback, for as long as the block runs: yields its port."""
    port = port or free_port()
    work.mkdir(parents=True, exist_ok=True)
    shim = work / "loopback.mjs"
    shim.write_text(LOOPBACK)
    env = {
        **os.environ,
        "npm_config_protocol": "http",
        "npm_config_port": str(port),
        "npm_config_pidfile": str(work / "origin.pid"),
    }
    with (work / "origin.log").open("wb") as log:
        proc = subprocess.Popen(
            [_node(), "--import", shim.as_uri(), "server/server.mjs"],
            cwd=package,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_port(port, proc)
        yield port
    finally:
        stop(proc)


def run(package: Path, base: str, timeout: float = 300.0) -> dict[str, Any]:
    """Every test against the cache at ``base`` (``http://127.0.0.1:PORT``): id -> result."""
    env = {**os.environ, "npm_config_base": base, "npm_package_config_id": ""}
    env.pop("npm_config_id", None)
    try:
        done = subprocess.run(
            [_node(), "--no-warnings", "cli.mjs"],
            cwd=package,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise SuiteError(f"the suite took over {timeout:.0f} s against {base}") from exc
    try:
        results: dict[str, Any] = json.loads(done.stdout)
    except ValueError as exc:
        tail = (done.stderr or done.stdout).strip()[-300:]
        raise SuiteError(f"the suite gave no results against {base}: {tail}") from exc
    return results


def outcomes(tests: Mapping[str, Test], results: Mapping[str, Any]) -> dict[str, Outcome]:
    """Each test's verdict, as the suite's own report decides it (lib/display.mjs)."""
    decided: dict[str, Outcome] = {}

    def decide(tid: str) -> Outcome:
        if tid in decided:
            return decided[tid]
        test, result = tests[tid], results.get(tid)
        message = result[1] if isinstance(result, list) and len(result) > 1 else ""
        passed = ("pass", "yes")
        if result is None:
            verdict = "untested"
        elif any(decide(dep).verdict not in passed for dep in test.depends_on):
            verdict = "dependency"
        elif isinstance(result, list) and result[0] == "Setup":
            verdict = "retry" if message == "retry" else "setup"
        elif result is not True and not (isinstance(result, list) and result[0] == "Assertion"):
            verdict = "harness"
        elif test.kind == "check":
            verdict = "yes" if result is True else "no"
        elif result is True:
            verdict = "pass"
        else:
            verdict = "fail"
        decided[tid] = Outcome(test.kind, verdict, str(message))
        return decided[tid]

    for tid in tests:
        decide(tid)
    return decided


def tally(found: Mapping[str, Outcome]) -> Counter[tuple[str, str]]:
    """(kind, verdict) -> how many tests."""
    return Counter((o.kind, o.verdict) for o in found.values())


def failed(found: Mapping[str, Outcome], kind: str = "required") -> dict[str, Outcome]:
    return {tid: o for tid, o in found.items() if o.kind == kind and o.verdict == "fail"}
