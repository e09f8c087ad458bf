"""`spork serve` and `spork routes`."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spork_cli.cli.params import Command, ConfigOption, JsonOption, config_file, load_to_run

if TYPE_CHECKING:
    from spork_cli.config.model import GatewayConfig


def load_for_serving(
    path: Path,
    host: str | None = None,
    port: int | None = None,
    admin_port: int | None = None,
    workers: int | None = None,
) -> GatewayConfig:
    """The config with command-line overrides; an invalid one is a start-up error (exit 2)."""
    config = load_to_run(path, "cannot start: ")
    return apply_overrides(config, host, port, admin_port, workers)


def apply_overrides(
    config: GatewayConfig,
    host: str | None = None,
    port: int | None = None,
    admin_port: int | None = None,
    workers: int | None = None,
) -> GatewayConfig:
    """Command-line settings win over the file, at start and on every reload."""
    server = {
        k: v for k, v in (("host", host), ("port", port), ("workers", workers)) if v is not None
    }
    if server:
        config = config.model_copy(update={"server": config.server.model_copy(update=server)})
    if admin_port is not None:
        config = config.model_copy(
            update={"admin": config.admin.model_copy(update={"port": admin_port})}
        )
    return config


def register(app: typer.Typer) -> None:
    @app.command("serve", cls=Command)
    def serve(
        ctx: typer.Context,
        config: ConfigOption = None,
        host: Annotated[
            str | None, typer.Option("--host", metavar="HOST", help="Override server.host.")
        ] = None,
        port: Annotated[
            int | None, typer.Option("--port", metavar="N", help="Override server.port.")
        ] = None,
        admin_port: Annotated[
            int | None, typer.Option("--admin-port", metavar="N", help="Override admin.port.")
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option("--workers", metavar="N", min=1, max=64, help="Worker processes."),
        ] = None,
        no_reload: Annotated[
            bool, typer.Option("--no-reload", help="Do not watch the config for changes.")
        ] = False,
        worker: Annotated[bool, typer.Option("--worker", hidden=True)] = False,
    ) -> None:
        """Run the gateway; hot-reloads gateway.toml when it changes."""
        import asyncio

        from spork_cli import logs
        from spork_cli.gateway.server import install_loop, run

        if not worker:
            # Only a worker of this process's own supervisor uses its store and names it.
            from spork_cli.gateway.heartbeat import SUPERVISOR_ENV
            from spork_cli.state.served import SOCKET_ENV

            os.environ.pop(SOCKET_ENV, None)
            os.environ.pop(SUPERVISOR_ENV, None)
        path = config_file(ctx, config)
        cfg = load_for_serving(path, host, port, admin_port, workers)
        prepare = partial(
            apply_overrides, host=host, port=port, admin_port=admin_port, workers=workers
        )
        logs.configure(cfg.logging.level, cfg.logging.format)
        install_loop()
        if cfg.server.workers > 1 and not worker:
            from spork_cli.gateway.workers import supervise

            supervise(cfg, path, host, port, not no_reload, prepare)
            return
        asyncio.run(
            run(
                cfg,
                path,
                watch=not no_reload,
                worker=worker,
                serve_admin=not worker,
                serve_demo=not worker,
                prepare=prepare,
            )
        )

    @app.command("routes", cls=Command)
    def routes(
        ctx: typer.Context, as_json: JsonOption = False, config: ConfigOption = None
    ) -> None:
        """Show the compiled route table of gateway.toml."""
        # The rows of the table the gateway would compile, without compiling it: importing
        # the server, its pools and middleware would take most of a second.
        from spork_cli.gateway.table import config_rows

        data = config_rows(load_to_run(config_file(ctx, config)))
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        from spork_cli.cli.tables import Rows, show

        def cells(row: dict[str, Any]) -> tuple[str, ...]:
            named = f" ({row['route']})" if row["route"] != row["path"] else ""
            return (
                f"{row['path']}{named}",
                " ".join(row["methods"]),
                str(row["service"]),
                "\n".join(row["endpoints"]),
                str(row["auth"]),
                ", ".join(row["features"]) or "-",
            )

        columns = ("path", "methods", "service", "endpoints", "auth", "features")
        show(Rows(columns, (cells(row) for row in data)))
