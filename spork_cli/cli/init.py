"""`spork init`: scaffold a gateway.toml from a template."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spork_cli.cli.params import Command


def register(app: typer.Typer) -> None:
    @app.command("init", cls=Command)
    def init(
        directory: Annotated[
            Path,
            typer.Argument(metavar="DIR", help="Where to write gateway.toml.", show_default=True),
        ] = Path("."),
        template: Annotated[
            str,
            typer.Option(
                "-t", "--template", metavar="NAME", help="Template to render (see --list)."
            ),
        ] = "minimal",
        force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
        list_: Annotated[bool, typer.Option("--list", help="List the templates and exit.")] = False,
    ) -> None:
        """Scaffold gateway.toml (and keys and schemas) from a template."""
        from spork_cli import scaffold

        if list_:
            for t in scaffold.list_templates():
                typer.echo(f"{t.name:<15} {t.description}")
            return
        chosen = scaffold.get_template(template)
        written = scaffold.render(chosen, directory, force=force)
        for path in written:
            typer.echo(f"wrote {path}")
        config = directory / "gateway.toml"
        typer.echo(f"\nnext: spork check {config}")
