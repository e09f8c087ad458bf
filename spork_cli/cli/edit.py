"""`spork service add` and `spork route add`: edit gateway.toml, keeping its comments."""

from __future__ import annotations

from typing import Annotated

import typer

from spork_cli.cli.params import Command, ConfigOption, Group, config_file

service_app = typer.Typer(cls=Group, help="Add services to gateway.toml.", no_args_is_help=True)
route_app = typer.Typer(cls=Group, help="Add routes to gateway.toml.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(service_app, name="service")
    app.add_typer(route_app, name="route")


@service_app.command("add", cls=Command)
def service_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Service name.")],
    url: Annotated[
        list[str],
        typer.Option("--url", metavar="URL", help="Endpoint URL (repeat for several)."),
    ],
    balance: Annotated[
        str | None,
        typer.Option(
            "--balance",
            metavar="STRATEGY",
            help="round_robin, weighted, least_conn or p2c.",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Add a service to gateway.toml (checked before it is written)."""
    from spork_cli.config.edit import add_service

    path = config_file(ctx, config)
    add_service(path, name, url, balance)
    typer.echo(f"added service '{name}' to {path}")


@route_app.command("add", cls=Command)
def route_add(
    ctx: typer.Context,
    path_prefix: Annotated[str, typer.Argument(metavar="PREFIX", help="Path prefix, e.g. /api.")],
    service: Annotated[
        str, typer.Option("--service", "-s", metavar="SERVICE", help="Service to route to.")
    ],
    method: Annotated[
        list[str] | None,
        typer.Option("--method", "-m", metavar="METHOD", help="Allowed method (repeatable)."),
    ] = None,
    strip_prefix: Annotated[
        bool, typer.Option("--strip-prefix", help="Remove PREFIX before forwarding.")
    ] = False,
    auth: Annotated[
        str | None,
        typer.Option("--auth", metavar="MODE", help="required, optional or none."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Add a route to gateway.toml (checked before it is written)."""
    from spork_cli.config.edit import add_route

    file = config_file(ctx, config)
    add_route(file, path_prefix, service, method or [], strip_prefix, auth)
    typer.echo(f"added route '{path_prefix}' -> {service} to {file}")
