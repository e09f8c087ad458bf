"""`spork schema`: the JSON Schema of gateway.toml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spork_cli.cli.params import Command
from spork_cli.errors import UsageError


def schema_text() -> str:
    from spork_cli.config.schema import schema_text as text

    return text()


def register(app: typer.Typer) -> None:
    @app.command("schema", cls=Command)
    def schema(
        output: Annotated[
            Path | None,
            typer.Option("-o", "--output", metavar="FILE", help="Write to FILE instead of stdout."),
        ] = None,
    ) -> None:
        """Print the JSON Schema (draft 7) of gateway.toml, for editors and CI."""
        text = schema_text()
        if output is None:
            typer.echo(text, nl=False)
            return
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from exc
        typer.echo(f"wrote {output}", err=True)
