"""The command tree of the spork app, walked from its root, so tests cover every command."""

from __future__ import annotations

from typing import Any

import typer

from spork_cli.cli import app


def commands() -> list[tuple[tuple[str, ...], Any]]:
    """Every command and group as (its words after `spork`, its click command), root first."""
    found: list[tuple[tuple[str, ...], Any]] = []

    def walk(words: tuple[str, ...], command: Any) -> None:
        found.append((words, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk((*words, name), sub)

    walk((), typer.main.get_command(app))
    return found


def runnable() -> list[tuple[str, ...]]:
    """The words of each command that does something when run: leaves, and the groups that
    run their own callback when no subcommand follows (``spork breakers``)."""
    return [
        words
        for words, command in commands()
        if words and (not hasattr(command, "commands") or command.invoke_without_command)
    ]
