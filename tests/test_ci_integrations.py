"""What CI users run: the pre-commit hook (`.pre-commit-hooks.yaml`) and the composite GitHub
Action (`action.yml`), each tried for real on one good and one broken config."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import PROJECT_ROOT, Processes

GOOD = """\
[[services]]
name = "users"
endpoints = ["http://127.0.0.1:9000"]

[[routes]]
path = "/api"
service = "users"
"""

# Line 8, column 1: a key routes do not have.
BROKEN = GOOD + "strip_prefx = true\n"

# Valid, with one warning (a Redis URL while the backend is memory).
WARNING_ONLY = GOOD + '\n[state]\nurl = "redis://127.0.0.1:6379/0"\n'

ANNOTATION = re.compile(r"^::(error|warning) file=([^,]+),line=(\d+),col=(\d+),title=[^:]+::")


def annotations(output: str) -> list[tuple[str, str, int, int]]:
    found = []
    for line in output.splitlines():
        if m := ANNOTATION.match(line):
            found.append((m[1], m[2], int(m[3]), int(m[4])))
    return found


def scratch_project(root: Path) -> Path:
    (root / "broken").mkdir(parents=True)
    (root / "gateway.toml").write_text(GOOD)
    (root / "broken" / "gateway.toml").write_text(BROKEN)
    # Not a gateway config: the hook must leave it alone even though it would not pass.
    (root / "pyproject.toml").write_text("[tool.other]\nstrip_prefx = true\n")
    return root


# --- pre-commit ---------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=60,
    )


def try_repo(processes: Processes, project: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}
    env.pop("SPORK_CONFIG", None)
    return processes.run(
        sys.executable, "-m", "pre_commit", "try-repo", str(PROJECT_ROOT), "spork-check",
        "--all-files",
        cwd=project, env=env, timeout=600,
    )  # fmt: skip


def test_hook_manifest_declares_spork_check() -> None:
    (hook,) = yaml.safe_load((PROJECT_ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "spork-check"
    assert hook["entry"] == "spork check"
    assert hook["language"] == "python"
    files = re.compile(hook["files"])
    assert files.search("gateway.toml") and files.search("deploy/staging/gateway.toml")
    assert not files.search("pyproject.toml") and not files.search("my-gateway.toml.bak")


def test_pre_commit_try_repo_fails_on_the_broken_config_only(
    tmp_path: Path, processes: Processes
) -> None:
    if shutil.which("git") is None:
        pytest.fail("git is needed to try the pre-commit hook")
    project = scratch_project(tmp_path / "project")
    git(project, "init", "-q")
    git(project, "add", ".")
    home = tmp_path / "pre-commit-home"

    failed = try_repo(processes, project, home)
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1, output
    assert "broken/gateway.toml:8:1" in output, output
    assert "unknown key 'strip_prefx'" in output, output
    assert "pyproject.toml" not in output.replace(".pre-commit", ""), output

    (project / "broken" / "gateway.toml").write_text(GOOD)
    git(project, "add", ".")
    passed = try_repo(processes, project, home)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "spork check" in passed.stdout and "Passed" in passed.stdout, passed.stdout


# --- the GitHub Action --------------------------------------------------------------------------


def action() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "action.yml").read_text())
    return loaded


def test_action_is_a_composite_whose_steps_use_only_declared_inputs() -> None:
    spec = action()
    assert spec["name"] and spec["description"]
    assert spec["runs"]["using"] == "composite"
    inputs = spec["inputs"]
    for name, declared in inputs.items():
        assert declared["description"], name
        assert "default" in declared or declared.get("required"), name
    steps = spec["runs"]["steps"]
    for step in steps:
        assert "run" in step or "uses" in step, step
        if "run" in step:
            assert step["shell"] == "bash", step  # composite run steps must name a shell
            # Inputs reach scripts through env only: an expression in the script is injection.
            assert "${{" not in step["run"], step["name"]
    used = set(re.findall(r"inputs\.([A-Za-z0-9_-]+)", yaml.safe_dump(steps)))
    assert used == set(inputs), (used, set(inputs))
    install = next(s for s in steps if s["name"] == "Install spork")
    assert install["env"]["SPORK_SOURCE"] == "${{ github.action_path }}"


def run_check_step(
    processes: Processes, workdir: Path, files: str, strict: str
) -> subprocess.CompletedProcess[str]:
    """The action's `spork check` step as the runner would run it, with this environment's
    `spork` on PATH (the install step's job)."""
    step = next(s for s in action()["runs"]["steps"] if s["name"] == "spork check")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SPORK_FILES": files,
        "SPORK_STRICT": strict,
    }
    env.pop("SPORK_CONFIG", None)
    return processes.run(
        "bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"], cwd=workdir, env=env
    )


def test_action_check_step_annotates_the_broken_file_and_fails(
    tmp_path: Path, processes: Processes
) -> None:
    project = scratch_project(tmp_path)
    result = run_check_step(processes, project, "gateway.toml broken/*.toml", "false")
    assert result.returncode == 1, result.stdout + result.stderr
    assert annotations(result.stdout) == [("error", "broken/gateway.toml", 8, 1)], result.stdout


def test_action_check_step_passes_good_files(tmp_path: Path, processes: Processes) -> None:
    project = scratch_project(tmp_path)
    result = run_check_step(processes, project, "gateway.toml", "false")
    assert result.returncode == 0, result.stdout + result.stderr
    assert annotations(result.stdout) == []


@pytest.mark.parametrize(("strict", "code"), [("false", 0), ("true", 1)])
def test_action_strict_input_decides_whether_warnings_fail(
    tmp_path: Path, processes: Processes, strict: str, code: int
) -> None:
    (tmp_path / "gateway.toml").write_text(WARNING_ONLY)
    result = run_check_step(processes, tmp_path, "gateway.toml", strict)
    assert result.returncode == code, result.stdout + result.stderr
    ((severity, file, _, _),) = annotations(result.stdout)
    assert (severity, file) == ("warning", "gateway.toml")


def test_action_refuses_a_strict_value_it_does_not_know(
    tmp_path: Path, processes: Processes
) -> None:
    (tmp_path / "gateway.toml").write_text(GOOD)
    result = run_check_step(processes, tmp_path, "gateway.toml", "yes")
    assert result.returncode == 2
    assert result.stdout.startswith("::error::strict must be true or false"), result.stdout
