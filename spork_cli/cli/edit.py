"""`spork service add` and `spork route add`: edit gateway.toml, keeping its comments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path | None,
    typer.Option("-c", "--config", help="gateway.toml to edit (default: the global -c)."),
]

service_app = typer.Typer(help="Add services to gateway.toml.", no_args_is_help=True)
route_app = typer.Typer(help="Add routes to gateway.toml.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(service_app, name="service")
    app.add_typer(route_app, name="route")


@service_app.command("add")
def service_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Service name.")],
    url: Annotated[list[str], typer.Option("--url", help="Endpoint URL (repeat for several).")],
    balance: Annotated[
        str | None, typer.Option("--balance", help="round_robin, weighted, least_conn or p2c.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Add a service to gateway.toml (checked before it is written)."""
    from spork_cli.config.edit import add_service

    path = config or ctx.obj
    add_service(path, name, url, balance)
    typer.echo(f"added service '{name}' to {path}")


@route_app.command("add")
def route_add(
    ctx: typer.Context,
    path_prefix: Annotated[str, typer.Argument(metavar="PATH", help="Path prefix, e.g. /api.")],
    service: Annotated[str, typer.Option("--service", "-s", help="Service to route to.")],
    method: Annotated[
        list[str] | None, typer.Option("--method", "-m", help="Allowed method (repeatable).")
    ] = None,
    strip_prefix: Annotated[
        bool, typer.Option("--strip-prefix", help="Remove PATH before forwarding.")
    ] = False,
    auth: Annotated[str | None, typer.Option("--auth", help="required, optional or none.")] = None,
    config: ConfigOption = None,
) -> None:
    """Add a route to gateway.toml (checked before it is written)."""
    from spork_cli.config.edit import add_route

    file = config or ctx.obj
    add_route(file, path_prefix, service, method or [], strip_prefix, auth)
    typer.echo(f"added route '{path_prefix}' -> {service} to {file}")
