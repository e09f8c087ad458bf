"""Processes on loopback for the benchmarks: free ports, start and wait, memory, stop them all."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, TracebackType

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {HOST}:{port}")


def wait_ready(admin_port: int, timeout: float = 20.0) -> None:
    """Until spork's admin listener says ready (with workers: once every one listens)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{admin_port}/health/ready", timeout=1):
                return
        except OSError:  # refused, or 503 (an HTTPError is an OSError) while starting
            time.sleep(0.05)
    raise SystemExit(f"spork on admin port {admin_port} is not ready after {timeout:g} s")


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children, in MB."""
    total = 0
    for p in _family(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def _family(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(p) for p in children.read_text().split())] if children.exists() else [pid]


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) ``pid`` and its children have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _family(pid):
        # The fields after the command name, which is in parentheses and may hold spaces.
        fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def find_tool(name: str) -> str | None:
    """A program on PATH, or in /usr/sbin (nginx lives there and root's PATH may lack it)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def use_this_checkout() -> None:
    """Every Python process started from here (spork, the proxies) imports this tree's
    spork_cli, whatever an installed copy points at."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    # Measured as installed: with bytecode caches (some containers turn their writing off,
    # which makes every command compile all of spork again).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def spork_command() -> list[str]:
    """`spork` as its users type it: the entry point beside this interpreter (a virtualenv's
    bin), else the one on PATH, else ``python -m spork_cli``."""
    beside = Path(sys.executable).parent / "spork"
    found = str(beside) if beside.exists() else shutil.which("spork")
    return [found] if found else [sys.executable, "-m", "spork_cli"]


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class Processes:
    """Everything a benchmark starts, each in its own session; leaving the ``with`` block
    ends them all, on success, on an error, on Ctrl-C and on SIGTERM."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.running: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Processes:
        signal.signal(signal.SIGTERM, _terminate)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C waits
        try:
            for proc in list(self.running):
                self.stop(proc)
        finally:
            signal.signal(signal.SIGINT, interrupt)

    def start(
        self,
        name: str,
        command: list[str],
        port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` (stdout discarded: access logs), then wait for ``port``. A process
        that exits before it listens stops the run with the end of its stderr."""
        errors = self.work / f"{name}.stderr"
        with errors.open("wb") as sink:
            proc = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=sink,
                start_new_session=True,
                env=None if env is None else {**os.environ, **env},
            )
        self.running.append(proc)
        if port is None:
            return proc
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = errors.read_text(errors="replace").strip().splitlines()[-5:]
                raise SystemExit(
                    f"{name} exited ({proc.returncode}) before listening on {HOST}:{port}: "
                    + " | ".join(tail)
                )
            try:
                socket.create_connection((HOST, port), timeout=0.2).close()
                return proc
            except OSError:
                time.sleep(0.02)
        raise SystemExit(f"{name}: nothing listens on {HOST}:{port} after 20 s")

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        stop(proc)
        if proc in self.running:
            self.running.remove(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL after 10 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
