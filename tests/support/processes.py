"""Processes of the tests' own: binaries the suite needs, reaping, and what /proc says."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from typing import Any

import pytest


def require_binary(name: str) -> str:
    """Path of an executable the suite cannot run without; fail loudly rather than skip."""
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin")
    if path is None:
        pytest.fail(
            f"{name} not found on PATH; the suite needs a real Redis "
            "(Debian/Ubuntu: apt-get install redis-server redis-tools)",
            pytrace=False,
        )
    return path


def proc_status_kib(pid: int, field_name: str = "VmRSS") -> int:
    """A ``kB`` field of /proc/PID/status, such as the resident set size."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    raise LookupError(f"no {field_name} in /proc/{pid}/status")


def child_pids(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (read from /proc, no helpers needed)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The command name in parentheses may hold spaces; fields follow its last ")".
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields and int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open."""
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if it still runs, wait for it, and close its pipes (test teardown)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def run_program(
    *command: str,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to completion and capture its output as text.

    The child gets its own session so a timeout kills everything it started, not just the
    top process, and fails the test. Without ``input``, stdin is closed so a prompt cannot
    hang it.
    """
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(
                f"{' '.join(command)} did not finish within {timeout}s\n"
                f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                pytrace=False,
            )
    return subprocess.CompletedProcess(list(command), proc.returncode, stdout, stderr)


class Processes:
    """The programs one test runs itself: ``run`` to completion, or ``start`` in the
    background (each in its own session); ``close`` kills every group still running."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[Any]] = []

    run = staticmethod(run_program)

    def start(self, *command: str, **popen: Any) -> subprocess.Popen[Any]:
        proc: subprocess.Popen[Any] = subprocess.Popen(command, start_new_session=True, **popen)
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
