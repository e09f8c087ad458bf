"""With ``--workers N``, readiness waits for every worker to listen.

Each worker, once its request listener is bound, leaves a marker named after its pid in the
directory the supervisor shares with its workers (the metrics snapshots' one). The supervisor's
``/health/ready`` counts the markers of workers still alive and answers 503 ``starting`` until
there are N, so a load balancer sends nothing before the port is really served.
"""

from __future__ import annotations

import os
from pathlib import Path

from spork_cli.gateway.metrics import MULTIPROCESS_ENV, process_alive

SUFFIX = ".listening"
PROC = Path("/proc/self")


def shared_directory() -> Path | None:
    found = os.environ.get(MULTIPROCESS_ENV)
    return Path(found) if found else None


def mark_listening() -> None:
    """A worker's request listener is bound (nothing to do outside ``--workers``)."""
    directory = shared_directory()
    if directory is not None:
        (directory / f"{os.getpid()}{SUFFIX}").touch()


def unmark_listening() -> None:
    """A worker stops serving (it drains, then exits)."""
    directory = shared_directory()
    if directory is not None:
        (directory / f"{os.getpid()}{SUFFIX}").unlink(missing_ok=True)


def listening() -> int:
    """How many of this supervisor's running workers have said they listen."""
    directory = shared_directory()
    if directory is None:
        return 0
    count = 0
    for marker in directory.glob(f"*{SUFFIX}"):
        pid = marker.name.removesuffix(SUFFIX)
        if pid.isdigit() and _running_child(int(pid)):
            count += 1
    return count


def _running_child(pid: int) -> bool:
    """``pid`` is a child of this process and has not exited (a reused pid, or a worker that
    exited and was not yet reaped, is not)."""
    if not PROC.exists():  # no /proc (macOS): a live pid is all that can be told
        return process_alive(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state, parent = stat.rpartition(")")[2].split()[:2]
    return state != "Z" and int(parent) == os.getpid()
