"""Help of every command names its values (FILE, N, DURATION...), never a Python type or
typer's default names, and every argument is written the same way (upper case)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from typer.testing import CliRunner

from spork_cli.cli import app
from tests.cli.tree import commands

# Typer's own renderings of a type (<bool>, <list[str]>, <path>, <text|json>) and click's
# default metavars; "/PATH" (a request path) is a name, not click's PATH.
FORBIDDEN = re.compile(r"<[^>\s]*>|(?<![/\w])(?:TEXT|INTEGER|FLOAT|BOOLEAN|PATH|FILENAME)\b")
NAME = re.compile(r"^/?[A-Z][A-Z0-9_]*(?:[=?][A-Z0-9_/?=]+)?$|^[a-z_0-9]+(?:\|[a-z_0-9]+)+$")
ALL = commands()


def words_id(words: tuple[str, ...]) -> str:
    return " ".join(words) or "spork"


def help_of(words: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def params(command: Any) -> list[Any]:
    return [p for p in command.params if not getattr(p, "hidden", False)]


@pytest.mark.parametrize("words", [w for w, _ in ALL], ids=words_id)
def test_help_shows_no_type_and_no_default_metavar(words: tuple[str, ...]) -> None:
    text = help_of(words)
    assert FORBIDDEN.findall(text) == [], text


@pytest.mark.parametrize(("words", "command"), ALL, ids=[words_id(w) for w, _ in ALL])
def test_every_value_has_a_readable_name(words: tuple[str, ...], command: Any) -> None:
    text = help_of(words)
    for param in params(command):
        flag = getattr(param, "is_flag", False)
        if flag:
            continue
        assert param.metavar is not None, f"{words_id(words)}: {param.name} has no metavar"
        assert NAME.match(param.metavar), f"{words_id(words)}: {param.metavar!r}"
        assert param.metavar in text
        if param.type_descriptor.is_path:
            assert param.metavar in ("FILE", "DIR"), f"{words_id(words)}: {param.name}"


def test_the_help_test_sees_what_typer_prints_without_spork_s_classes() -> None:
    """The patterns match typer's own rendering, so the tests above can fail."""
    import typer

    plain = typer.Typer()

    @plain.command()
    def one(
        files: list[str],
        flag: bool = typer.Option(False, "--flag"),
        name: str = typer.Option("x", "--name"),
    ) -> None: ...

    @plain.command()
    def two() -> None: ...

    text = CliRunner().invoke(plain, ["one", "--help"], env={"COLUMNS": "200"}).output
    assert set(FORBIDDEN.findall(text)) >= {"<bool>", "<list[str]>", "<str>"}
