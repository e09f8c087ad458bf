"""`-c/--config FILE` before or after the command name, on every command that reads a config.

Each command runs in a directory without gateway.toml and with $SPORK_CONFIG unset, so a
command that ignored the -c it was given would complain about ./gateway.toml instead; the
given file is not TOML, so a command that read it names it in its error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from spork_cli.cli import app
from tests.cli.tree import runnable

# The arguments each command that reads a config needs to get as far as reading it ("{dir}" is
# the directory of the -c file), and what it prints when it used that file ("{file}" is it).
READS_CONFIG: dict[tuple[str, ...], tuple[list[str], str]] = {
    ("check",): ([], "{file}:1:5"),
    ("serve",): ([], "{file}:1:5"),
    ("routes",): ([], "{file}:1:5"),
    ("instances",): ([], "{file}:1:5"),
    ("limits",): ([], "{file}:1:5"),
    ("health",): ([], "{file}:1:5"),
    ("service", "add"): (["api", "--url", "http://127.0.0.1:9"], "{file} is not valid now"),
    ("route", "add"): (["/api", "--service", "api"], "{file} is not valid now"),
    ("token", "mint"): ([], "{file}:1:5"),
    ("token", "verify"): (["x.y.z"], "{file}:1:5"),
    ("token", "revoke"): (["--jti", "j1"], "{file}:1:5"),
    # keygen reads only where the file is: its config lines are relative to that directory.
    ("token", "keygen"): (["--alg", "HS256", "-o", "{dir}/keys"], '"$(cat keys/hs256.secret)"'),
    ("breakers",): ([], "{file}:1:5"),
    ("breakers", "open"): (["api"], "{file}:1:5"),
    ("breakers", "close"): (["api"], "{file}:1:5"),
    ("breakers", "reset"): (["api"], "{file}:1:5"),
    ("cache", "stats"): ([], "{file}:1:5"),
    ("cache", "purge"): ([], "{file}:1:5"),
}
# Commands that read no config: they write one, print the schema, or decode a token alone.
NO_CONFIG = {("init",), ("schema",), ("token", "inspect")}


@pytest.fixture
def given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file that is not TOML, in its own directory; the cwd has no gateway.toml."""
    home = tmp_path / "given"
    home.mkdir()
    file = home / "gateway.toml"
    file.write_text("not toml\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("SPORK_CONFIG", raising=False)
    return file


def said(result: Result) -> str:
    """Everything the command said: its output, and the message of the SporkError that the
    console entry point would print."""
    assert "Traceback" not in result.output
    error = result.exception
    message = "" if error is None or isinstance(error, SystemExit) else str(error)
    return result.output + message


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", "COLUMNS": "200"})


def test_every_command_is_known_to_read_a_config_or_not() -> None:
    """A new command must say here whether it reads a config (and then get tested below)."""
    assert set(runnable()) == set(READS_CONFIG) | NO_CONFIG
    assert not set(READS_CONFIG) & NO_CONFIG


@pytest.mark.parametrize("placement", ["before", "after"])
@pytest.mark.parametrize("words", sorted(READS_CONFIG), ids=" ".join)
def test_config_option_before_and_after_the_command(
    given: Path, words: tuple[str, ...], placement: str
) -> None:
    extra, expected = READS_CONFIG[words]
    args = [a.format(dir=given.parent) for a in extra]
    if placement == "before":
        result = run("-c", str(given), *words, *args)
    else:
        result = run(*words, *args, "-c", str(given))
    assert expected.format(file=given) in said(result)


def test_without_config_the_default_is_gateway_toml_here(given: Path) -> None:
    """What the tests above would see if -c were ignored: the missing ./gateway.toml."""
    assert said(run("routes")) == "gateway.toml: no such file (pass -c FILE)"


def test_spork_config_is_used_when_no_c_is_given(
    given: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPORK_CONFIG", str(given))
    assert f"{given}:1:5" in said(run("routes"))


def test_the_c_nearest_the_command_wins(given: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("also not toml\n")
    assert f"{given}:1:5" in said(run("-c", str(other), "routes", "-c", str(given)))
    assert f"{given}:1:5" in said(
        run("-c", str(other), "breakers", "open", "api", "-c", str(given))
    )
    # After the group, before its command: the group's own -c.
    assert f"{given}:1:5" in said(
        run("-c", str(other), "breakers", "-c", str(given), "open", "api")
    )


def test_check_arguments_win_over_c(given: Path, tmp_path: Path) -> None:
    valid = tmp_path / "valid.toml"
    valid.write_text(
        '[[services]]\nname = "a"\nendpoints = ["http://127.0.0.1:9"]\n'
        '[[routes]]\npath = "/"\nservice = "a"\n'
    )
    result = run("check", str(valid), "-c", str(given))
    assert (result.exit_code, result.output) == (0, f"ok  {valid}: 1 service, 1 route\n")
