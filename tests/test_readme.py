"""The README is executable: its set-up commands are the ones CI runs, and every command of
its tour runs here with the output it shows."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import PROJECT_ROOT, Processes, spork_env, wait_for_port

README = PROJECT_ROOT / "README.md"
FENCE = re.compile(r"^(<!-- with: spork serve -->\n)?```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass
class Step:
    command: str
    expected: str
    with_server: bool = False


def blocks(kind: str) -> list[tuple[bool, str]]:
    """Fenced blocks of one language; the flag says the block needs a running gateway."""
    return [
        (bool(marker), body)
        for marker, lang, body in FENCE.findall(README.read_text())
        if lang == kind
    ]


def tour() -> list[Step]:
    steps: list[Step] = []
    for with_server, body in blocks("console"):
        for line in body.splitlines():
            if line.startswith("$ "):
                steps.append(Step(line[2:], "", with_server))
            else:
                steps[-1].expected += line + "\n"
    return steps


def matches(expected: str, actual: str) -> bool:
    """``...`` in the README stands for any text; everything else must be exact."""
    pattern = ".*".join(re.escape(part) for part in expected.rstrip().split("..."))
    actual = "\n".join(line.rstrip() for line in actual.rstrip().splitlines())
    return re.fullmatch(pattern, actual, re.DOTALL) is not None


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    setup = [body.strip() for _, body in blocks("sh")]
    assert setup[0] == "pip install -e . && spork serve"
    test_command = setup[1]
    ci = (PROJECT_ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test_command, "the last line of .ci/run must be the README's test command"


def test_ci_script_is_executable_and_fails_on_no_tests() -> None:
    mode = (PROJECT_ROOT / ".ci" / "run").stat().st_mode
    assert mode & stat.S_IXUSR
    script = (PROJECT_ROOT / "scripts" / "test.sh").read_text()
    assert '"$status" -eq 5' in script and "exit 1" in script


@pytest.mark.usefixtures("fixed_ports")
def test_tour_commands_give_the_output_shown(tmp_path: Path, processes: Processes) -> None:
    steps = tour()
    assert len(steps) >= 10
    work = tmp_path / "work"
    shutil.copytree(PROJECT_ROOT / "examples", work / "examples")
    shutil.copy(PROJECT_ROOT / "gateway.toml", work / "gateway.toml")
    shutil.copytree(PROJECT_ROOT / "schemas", work / "schemas")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # The tour calls `spork`; point it at this checkout whether or not it is installed.
    shim = bin_dir / "spork"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m spork_cli "$@"\n')
    shim.chmod(0o755)
    env = spork_env({"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"})
    server: subprocess.Popen[bytes] | None = None
    try:
        for step in steps:
            if step.with_server and server is None:
                server = start_gateway(processes, work, env)
            elif not step.with_server and server is not None:
                stop_gateway(server)
                server = None
            run_step(step, work, env)
    finally:
        if server is not None:
            stop_gateway(server)


def start_gateway(processes: Processes, work: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The repo's gateway.toml, served as the README's set-up command serves it, on the ports
    the README shows (the `fixed_ports` fixture keeps other tests off them meanwhile)."""
    for port in (8080, 9901, 9100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(f"port {port} is taken; the README's examples need it free")
    server: subprocess.Popen[bytes] = processes.start(
        sys.executable, "-m", "spork_cli", "serve",
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", 8080, timeout=20)
        wait_for_port("127.0.0.1", 9901, timeout=20)
    except TimeoutError:
        stop_gateway(server)
        raise
    return server


def stop_gateway(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    assert server.returncode == 0, f"spork serve exited with {server.returncode}"


def run_step(step: Step, work: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        ["bash", "-c", step.command],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"$ {step.command}\n{result.stdout}"
    assert "Traceback" not in result.stdout
    assert matches(step.expected, result.stdout), (
        f"$ {step.command}\n--- README shows\n{step.expected}--- got\n{result.stdout}"
    )


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        ("a\nb\n", "a\nb\n", True),
        ("a\n...\nc\n", "a\nx\ny\nc\n", True),
        ("wrote ...key\n", "wrote /tmp/x/key\n", True),
        ("a\nb\n", "a\nc\n", False),
        ("a\n", "a\nextra\n", False),
    ],
)
def test_output_matching(expected: str, actual: str, ok: bool) -> None:
    assert matches(expected, actual) is ok
