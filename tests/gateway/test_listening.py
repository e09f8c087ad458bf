"""Readiness with workers counts the markers of this supervisor's running workers only."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from spork_cli.gateway import listening
from spork_cli.gateway.metrics import MULTIPROCESS_ENV
from tests.support import Processes


def test_only_running_children_that_listen_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: Processes
) -> None:
    monkeypatch.setenv(MULTIPROCESS_ENV, str(tmp_path))
    child = processes.start(sys.executable, "-c", "import time; time.sleep(60)")
    exited = processes.start(sys.executable, "-c", "pass")
    exited.wait(10)
    for pid in (child.pid, exited.pid, os.getppid()):  # a worker, a dead one, not a child
        (tmp_path / f"{pid}{listening.SUFFIX}").touch()
    (tmp_path / f"{os.getpid()}.json").touch()  # a metrics snapshot is no marker
    assert listening.listening() == 1

    with monkeypatch.context() as as_the_worker:
        as_the_worker.setattr(os, "getpid", lambda: child.pid)
        listening.unmark_listening()  # as the worker does when it starts to drain
    assert not (tmp_path / f"{child.pid}{listening.SUFFIX}").exists()
    assert listening.listening() == 0
