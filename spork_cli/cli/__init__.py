"""The `spork` command: one Typer app, one module per command group."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from spork_cli import __version__
from spork_cli.cli import cache, check, edit, health, init, schema, serve, state, token
from spork_cli.errors import SporkError

DEFAULT_CONFIG = "gateway.toml"

app = typer.Typer(
    name="spork",
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
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "-c",
            "--config",
            help="gateway.toml to use (default: $SPORK_CONFIG or ./gateway.toml).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    ctx.obj = config_path(config)


def config_path(option: Path | None) -> Path:
    if option is not None:
        return option
    return Path(os.environ.get("SPORK_CONFIG") or DEFAULT_CONFIG)


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
