"""The CLI as a process: `python -m spork_cli ARGS` with plain output and a hard timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from tests.support.processes import run_program

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def spork_env(overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """Environment for a CLI subprocess: plain, 120-column output; a None override unsets."""
    env = dict(os.environ)
    env.update(COLUMNS="120", NO_COLOR="1", TERM="dumb")
    env.pop("FORCE_COLOR", None)
    # The working tree is importable even when the package is not installed and the
    # subprocess runs from a temporary directory.
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if part
    )
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class SporkRunner(Protocol):
    def __call__(
        self,
        *args: str,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str | None] | None = None,
        input: str | None = None,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]: ...


def run_spork(
    *args: str,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str | None] | None = None,
    input: str | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m spork_cli ARGS` to completion and capture its output as text.

    The child gets its own session so a timeout kills everything it started, not just the
    top process. Without `input`, stdin is closed so a prompt cannot hang the test.
    """
    return run_program(
        sys.executable, "-m", "spork_cli", *args,
        cwd=cwd, env=spork_env(env), input=input, timeout=timeout,
    )  # fmt: skip
