"""`spork check`: validate config files offline, for people (text) and CI (json, github)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from spork_cli.cli.params import Command, ConfigOption, config_file

if TYPE_CHECKING:
    from rich.console import Console

    from spork_cli.config.diagnostics import Diagnostic
    from spork_cli.config.loaded import Loaded


class Format(StrEnum):
    text = "text"
    json = "json"
    github = "github"


def register(app: typer.Typer) -> None:
    @app.command("check", cls=Command)
    def check(
        ctx: typer.Context,
        files: Annotated[
            list[Path] | None,
            typer.Argument(
                metavar="FILE",
                help="Files to check (default: the -c/--config file).",
                show_default=False,
            ),
        ] = None,
        format: Annotated[
            Format | None,
            typer.Option(
                "--format",
                "-f",
                metavar="text|json|github",
                help="Output format (default: text).",
                show_default=False,
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
        strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")] = False,
        config: ConfigOption = None,
    ) -> None:
        """Validate gateway.toml files: schema and semantic checks, offline."""
        from spork_cli.config.load import check_file
        from spork_cli.config.mask import mask_loaded
        from spork_cli.errors import UsageError

        if as_json and format not in (None, Format.json):
            raise UsageError(f"--json and --format {format} ask for two formats; pass one")
        chosen = Format.json if as_json else format or Format.text
        targets = files or [config_file(ctx, config)]
        results: list[Loaded] = []
        unreadable: list[str] = []
        for file in targets:
            try:
                # Every format shows the file only with its secrets masked.
                results.append(mask_loaded(check_file(str(file))))
            except UsageError as exc:
                unreadable.append(str(exc))
        diagnostics = [d for r in results for d in r.diagnostics]
        if chosen is Format.json:
            typer.echo(json.dumps([d.as_dict() for d in diagnostics], indent=2))
        elif chosen is Format.github:
            for d in diagnostics:
                typer.echo(github_annotation(d))
        else:
            render_text(results, strict)
        for message in unreadable:
            typer.echo(f"spork: {message}", err=True)
        if unreadable:
            raise typer.Exit(2)
        failing = {"error", "warning"} if strict else {"error"}
        if any(d.severity in failing for d in diagnostics):
            raise typer.Exit(1)


def github_annotation(d: Diagnostic) -> str:
    """A GitHub Actions workflow command; values escaped as the runner expects."""

    def data(value: str) -> str:
        return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    def prop(value: str) -> str:
        return data(value).replace(":", "%3A").replace(",", "%2C")

    message = f"{d.path}: {d.message}" if d.path else d.message
    if d.hint:
        message += f" ({d.hint})"
    return (
        f"::{d.severity} file={prop(d.file)},line={d.line},col={d.column},"
        f"title={prop('spork ' + d.code)}::{data(message)}"
    )


def render_text(results: list[Loaded], strict: bool) -> None:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    errors = warnings = 0
    for loaded in results:
        if not loaded.diagnostics:
            config = loaded.config
            assert config is not None
            console.print(
                f"[green]ok[/]  {_esc(loaded.file)}: {_count(len(config.services), 'service')}, "
                f"{_count(len(config.routes), 'route')}"
            )
            continue
        console.print(f"[bold]{_esc(loaded.file)}[/]")
        # Lines end only at "\n" in TOML; str.splitlines() also splits at "\x85", "\u2028"...
        lines = [line.removesuffix("\r") for line in loaded.text.split("\n")]
        for d in loaded.diagnostics:
            errors += d.severity == "error"
            warnings += d.severity == "warning"
            _render_one(console, d, lines)
    if errors or warnings:
        verdict = "failed" if errors or (strict and warnings) else "passed"
        console.print(
            f"{_count(errors, 'error')}, {_count(warnings, 'warning')} "
            f"in {_count(len(results), 'file')}: {verdict}"
        )


def _render_one(console: Console, d: Diagnostic, lines: list[str]) -> None:
    colour = "red" if d.severity == "error" else "yellow"
    what = f"{d.path}: {d.message}" if d.path else d.message
    console.print(f"  [{colour}]{d.severity}[/] {_esc(what)} [dim]\\[{d.code}][/]")
    console.print(f"    [dim]--> {_esc(d.file)}:{d.line}:{d.column}[/]")
    if 0 < d.line <= len(lines):
        source = lines[d.line - 1].replace("\t", " ")
        if len(source) > 160:
            source = source[:157] + "..."
        gutter = " " * len(str(d.line))
        marker = " " * min(d.column - 1, len(source)) + "^"
        console.print(f"    [dim]{d.line} |[/] {_esc(source)}")
        hint = f" {d.hint}" if d.hint else ""
        console.print(f"    [dim]{gutter} |[/] [{colour}]{marker}{_esc(hint)}[/]")
    elif d.hint:
        console.print(f"    [dim]hint:[/] {_esc(d.hint)}")


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text.encode("utf-8", "replace").decode("utf-8"))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
