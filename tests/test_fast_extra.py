"""The optional `fast` extra (uvloop, hiredis) is used when installed and not needed otherwise.

scripts/test.sh runs the suite without the extra, then installs it and runs these tests, mypy
and the state contract tests again with SPORK_FAST_EXTRA=1, which makes its absence a failure.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from spork_cli.state.resp_wire import PythonReader, new_reader
from tests.support import Processes

REQUIRED = os.environ.get("SPORK_FAST_EXTRA") == "1"


def installed(module: str) -> bool:
    present = importlib.util.find_spec(module) is not None
    if REQUIRED and not present:
        pytest.fail(f"SPORK_FAST_EXTRA=1 but {module} is not installed")
    return present


def test_state_client_parses_with_hiredis_exactly_when_it_is_installed() -> None:
    reader = new_reader()
    if installed("hiredis"):
        import hiredis

        assert isinstance(reader, hiredis.Reader)
    else:
        assert isinstance(reader, PythonReader)


def test_serve_runs_on_uvloop_exactly_when_it_is_installed(processes: Processes) -> None:
    # A process of its own: installing a loop policy is global.
    probe = (
        "import asyncio\n"
        "from spork_cli.gateway.server import install_loop\n"
        "install_loop()\n"
        "loop = asyncio.new_event_loop()\n"
        "print(type(loop).__module__.split('.')[0])\n"
        "loop.close()\n"
    )
    result = processes.run(sys.executable, "-W", "error", "-c", probe)
    assert result.returncode == 0, result.stderr
    expected = "uvloop" if installed("uvloop") else "asyncio"
    assert result.stdout.strip() == expected, result.stdout + result.stderr
