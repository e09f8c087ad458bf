"""Lint and type checks are part of the suite: a style or typing regression fails CI."""

from __future__ import annotations

import subprocess
import sys

from tests.support import PROJECT_ROOT, Processes


def run(processes: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return processes.run(sys.executable, "-m", *args, cwd=PROJECT_ROOT, timeout=300)


def test_ruff_check(processes: Processes) -> None:
    result = run(processes, "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format(processes: Processes) -> None:
    result = run(processes, "ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict(processes: Processes) -> None:
    result = run(processes, "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_help_does_not_import_the_heavy_parts(processes: Processes) -> None:
    code = (
        "import sys; sys.argv = ['spork', '--help']\n"
        "from spork_cli.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "heavy = {'aiohttp', 'redis', 'pydantic', 'jwt', 'watchfiles', 'prometheus_client'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = processes.run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
