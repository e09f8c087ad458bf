"""`spork serve` and `spork routes`."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

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
    from spork_cli.config.load import load_config
    from spork_cli.errors import ConfigError, UsageError

    try:
        config = load_config(path)
    except ConfigError as exc:
        raise UsageError(f"cannot start: {exc.message} (spork check {path} shows all)") from exc
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
    @app.command("serve")
    def serve(
        ctx: typer.Context,
        config: Annotated[
            Path | None, typer.Option("-c", "--config", help="gateway.toml to serve.")
        ] = None,
        host: Annotated[str | None, typer.Option("--host", help="Override server.host.")] = None,
        port: Annotated[int | None, typer.Option("--port", help="Override server.port.")] = None,
        admin_port: Annotated[
            int | None, typer.Option("--admin-port", help="Override admin.port.")
        ] = None,
        workers: Annotated[
            int | None, typer.Option("--workers", min=1, max=64, help="Worker processes.")
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

        path: Path = config or ctx.obj
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

    @app.command("routes")
    def routes(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Show the compiled route table of gateway.toml."""
        import asyncio

        from spork_cli.gateway.compile import close_table, compile_table
        from spork_cli.gateway.table import route_rows

        cfg = load_for_serving(ctx.obj)

        async def rows() -> list[dict[str, object]]:
            from spork_cli.gateway.compile import Resources

            table = await compile_table(cfg, None, Resources(base_dir=ctx.obj.resolve().parent))
            try:
                return route_rows(table)
            finally:
                await close_table(table, 0)

        data = asyncio.run(rows())
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for column in ("path", "methods", "service", "endpoints", "auth", "features"):
            table.add_column(column, no_wrap=column != "endpoints")
        for row in data:
            named = f" ({row['route']})" if row["route"] != row["path"] else ""
            table.add_row(
                f"{row['path']}{named}",
                " ".join(row["methods"]),  # type: ignore[arg-type]
                str(row["service"]),
                "\n".join(row["endpoints"]),  # type: ignore[arg-type]
                str(row["auth"]),
                ", ".join(row["features"]) or "-",  # type: ignore[arg-type]
            )
        console = Console()
        if not console.is_terminal:
            console.width = max(console.width, 160)
        console.print(table)
