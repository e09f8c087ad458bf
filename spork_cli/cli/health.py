"""`spork health`: run each service's active health check from the CLI, no gateway needed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spork_cli.cli.params import Command, ConfigOption, JsonOption, config_file, load_to_run
from spork_cli.cli.state import _show
from spork_cli.errors import UsageError

if TYPE_CHECKING:
    from spork_cli.config.model import GatewayConfig, Service


def register(app: typer.Typer) -> None:
    app.command("health", cls=Command)(health)


def health(
    ctx: typer.Context,
    services: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="SERVICE", help="Services to check (default: all).", show_default=False
        ),
    ] = None,
    as_json: JsonOption = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Check again every second until Ctrl-C.")
    ] = False,
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout",
            metavar="DURATION",
            help="Override every check's timeout: seconds, or a duration such as 500ms.",
            show_default=False,
        ),
    ] = None,
    config_option: ConfigOption = None,
) -> None:
    r"""Probe every endpoint of each service (all at once) with its \[services.health] check:
    GET its path, healthy when the status is an expected one, within its timeout.

    Services without \[services.health] get the defaults of an empty section:
    GET /health, 200 expected, within 2s; the check column says "(default)".

    Exit 0 when every endpoint is healthy, 1 when any is not, 2 on a usage or config error.
    """
    import asyncio

    from spork_cli.health import check_services

    limit = _timeout(timeout) if timeout is not None else None
    path = config_file(ctx, config_option)
    # Exit 1 means "unhealthy" here, so a broken config is a cannot-run error (exit 2).
    config = load_to_run(path)
    chosen = _select(config, services or [], path)
    last: list[dict[str, Any]] = []

    def fetch() -> list[dict[str, Any]]:
        rows = [h.as_dict() for h in asyncio.run(check_services(chosen, limit))]
        last[:] = rows
        return rows

    empty = f"no services in {path}"
    _show(fetch, lambda rows: _table(rows, empty), as_json, watch)
    # Under --watch only Ctrl-C gets here, and that is how a watch is meant to end.
    if not watch and not all(row["healthy"] for row in last):
        raise typer.Exit(1)


def _timeout(text: str) -> float:
    from spork_cli.config.units import parse_duration

    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text)
        except ValueError as exc:
            raise UsageError(f"--timeout: {exc}") from None
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"--timeout must be a positive duration, not {text!r}")
    return value


def _select(config: GatewayConfig, names: list[str], path: Path) -> list[Service]:
    if not names:
        return list(config.services)
    chosen: list[Service] = []
    for name in dict.fromkeys(names):
        service = config.service(name)
        if service is None:
            known = ", ".join(s.name for s in config.services) or "none"
            raise UsageError(f"no service named {name!r} in {path} (services: {known})")
        chosen.append(service)
    return chosen


def _table(rows: list[dict[str, Any]], empty: str) -> Any:
    if not rows:
        return empty
    from rich.console import Group
    from rich.text import Text

    from spork_cli.cli.tables import Rows

    def cells(row: dict[str, Any]) -> tuple[str | Text, ...]:
        healthy = bool(row["healthy"])
        check = str(row["path"]) + (" (default)" if row["check"] == "default" else "")
        return (
            str(row["service"]),
            str(row["endpoint"]),
            Text("healthy" if healthy else "unhealthy", style="green" if healthy else "red"),
            str(row["http_status"]) if row["http_status"] is not None else "-",
            _latency(float(row["latency_ms"])),
            check,
            str(row["error"] or "-"),
        )

    columns = ("service", "endpoint", "status", "http", "latency", "check", "error")
    table = Rows(columns, (cells(row) for row in rows), right=("http", "latency"))
    up = sum(bool(row["healthy"]) for row in rows)
    summary = f"{up}/{len(rows)} endpoint{'s' if len(rows) != 1 else ''} healthy"
    return Group(table, Text(summary, style="bold"))


def _latency(ms: float) -> str:
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"
