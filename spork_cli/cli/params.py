"""What every command shares: the -c/--config option and where a command finds its config, the
--json and --watch flags, and help that names each value (FILE, N, DURATION) instead of
showing its Python type.

`-c FILE` may come before the command name (``spork -c F routes``), after a command group
(``spork breakers -c F open api``) or after the command itself (``spork routes -c F``); the
one nearest the command wins, then $SPORK_CONFIG, then ./gateway.toml.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

if TYPE_CHECKING:
    from spork_cli.config.model import GatewayConfig

DEFAULT_CONFIG = "gateway.toml"

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "-c",
        "--config",
        metavar="FILE",
        help="gateway.toml to use (default: $SPORK_CONFIG or ./gateway.toml).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
WatchOption = Annotated[bool, typer.Option("--watch", help="Refresh every second.")]


def config_file(ctx: typer.Context, given: Path | None) -> Path:
    """The config this command reads: ``given`` (its own -c), else the -c of the nearest
    enclosing group, else $SPORK_CONFIG, else ./gateway.toml."""
    if given is not None:
        return given
    parent = ctx.parent
    while parent is not None:
        for param in parent.command.params:
            outer = parent.params.get(param.name) if "--config" in param.opts else None
            if isinstance(outer, Path):
                return outer
        parent = parent.parent
    return Path(os.environ.get("SPORK_CONFIG") or DEFAULT_CONFIG)


def load(path: Path) -> GatewayConfig:
    """The valid config in ``path``: UsageError (exit 2) when there is no such file,
    ConfigError (exit 1) when it is invalid."""
    from spork_cli.config.load import load_config
    from spork_cli.errors import UsageError

    if not path.exists():
        raise UsageError(f"{path}: no such file (pass -c FILE)")
    return load_config(path)


def load_to_run(path: Path, doing: str = "") -> GatewayConfig:
    """The valid config in ``path`` for a command whose exit 1 means something else (unhealthy),
    or that cannot run on a bad file: an invalid config is a UsageError too (exit 2)."""
    from spork_cli.errors import ConfigError, UsageError

    try:
        return load(path)
    except ConfigError as exc:
        from spork_cli.config.mask import masker_for_file

        # The first finding is printed as it stands: without the file's secrets.
        message = masker_for_file(path).scrub(exc.message)
        raise UsageError(f"{doing}{message} (spork check {path} shows all)") from exc


# Typer prints each parameter's Python type beside it in help (`<bool>` for a flag, even
# --help, and `<list[str]>` beside an argument's name). spork's help shows what a value is:
# an option's metavar, nothing for a flag, and an argument's metavar alone.


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag:
            return None
        return super().display_type_rich(ctx)


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None


_SHOWN: dict[type, type] = {TyperOption: _Option, TyperArgument: _Argument}


def _shown(params: list[Any]) -> list[Any]:
    for param in params:
        # Typer builds its own parameter classes (no hook to choose them); these subclasses
        # change how help shows a parameter and nothing else.
        param.__class__ = _SHOWN.get(type(param), type(param))
    return params


class Command(TyperCommand):
    """A command whose help names values instead of Python types (pass as ``cls=``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _shown(super().get_params(ctx))


class Group(TyperGroup):
    """A command group whose help names values instead of Python types (pass as ``cls=``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _shown(super().get_params(ctx))
