"""The `spork` command: one Typer app, one module per command group."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from spork_cli import __version__
from spork_cli.cli import cache, check, edit, health, init, schema, serve, state, token
from spork_cli.cli.params import ConfigOption, Group
from spork_cli.errors import SporkError

app = typer.Typer(
    name="spork",
    cls=Group,
    help="A local development API gateway, and the tools to configure, check and inspect it.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"spork {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    config: ConfigOption = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Commands find -c among their parents' parameters (see cli.params.config_file)."""


init.register(app)
check.register(app)
schema.register(app)
edit.register(app)
serve.register(app)
token.register(app)
state.register(app)
cache.register(app)
health.register(app)


def main() -> None:
    """Console entry point: SporkError becomes one line on stderr and its exit code."""
    try:
        app()
    except SporkError as exc:
        print(f"spork: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
