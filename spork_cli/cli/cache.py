"""`spork cache stats|purge`: the response cache, in Redis directly or through the running
gateway's admin API when state is in its memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from spork_cli.cli.params import (
    Command,
    ConfigOption,
    Group,
    JsonOption,
    WatchOption,
    config_file,
)
from spork_cli.cli.params import load as _config
from spork_cli.cli.state import _admin_call, _on_store, _show
from spork_cli.errors import UsageError

if TYPE_CHECKING:
    from spork_cli.config.model import GatewayConfig

cache_app = typer.Typer(cls=Group, help="The response cache: hit counts, or purge entries.")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")


RouteArg = Annotated[
    str | None,
    typer.Argument(metavar="ROUTE", help="A cached route (name or path); all when omitted."),
]


@cache_app.command("stats", cls=Command)
def stats(
    ctx: typer.Context,
    route: RouteArg = None,
    as_json: JsonOption = False,
    watch: WatchOption = False,
    config_option: ConfigOption = None,
) -> None:
    """Per cached route: entries held; answers from the cache (fresh, stale, revalidated
    with a 304) and from the upstream (misses); bypasses, entries stored, invalidations."""
    import asyncio

    config = _config(config_file(ctx, config_option))
    _known(config, route)
    _show(lambda: asyncio.run(_stats(config, route)), _table, as_json, watch)


@cache_app.command("purge", cls=Command)
def purge(
    ctx: typer.Context,
    route: RouteArg = None,
    path: Annotated[
        str | None,
        typer.Option(
            "--path",
            metavar="/PATH?QUERY",
            help="Only this request path (with its query): all its variants.",
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", metavar="KEY", help="Only this entry (a response's X-Cache-Key)."),
    ] = None,
    config_option: ConfigOption = None,
) -> None:
    """Delete cached responses: all of them, a route's, one path's or one entry."""
    import asyncio

    config = _config(config_file(ctx, config_option))
    _known(config, route)
    if path is not None and not path.startswith("/"):
        raise UsageError(f"--path must start with '/': {path!r}")
    if key is not None and not key.strip():
        raise UsageError("--key is empty (pass a response's X-Cache-Key)")
    deleted = asyncio.run(_purge(config, route, path, key))
    where = f"route {route}" if route else "every cached route"
    typer.echo(f"purged {deleted} cached response{'s' if deleted != 1 else ''} of {where}")


def _known(config: GatewayConfig, route: str | None) -> None:
    from spork_cli.policies.cache import cached_routes

    if route is not None and not route.strip():
        raise UsageError("the route is empty (name a cached route, or none for all)")
    if not cached_routes(config):
        raise UsageError("no route has a [routes.cache] section")
    if route is not None and not cached_routes(config, route):
        names = ", ".join(r for r, _ in cached_routes(config))
        raise UsageError(f"no cached route is named {route!r} (cached: {names})")


def _table(rows: list[dict[str, Any]]) -> Any:
    from spork_cli.cli.tables import Rows

    def cells(row: dict[str, Any]) -> tuple[str, ...]:
        ratio = row.get("hit_ratio")
        return (
            str(row["route"]),
            f"{row['ttl']:g}s",
            str(row["entries"]),
            *(str(row.get(name, 0)) for name in ("hits", "stale", "revalidated", "misses")),
            "-" if ratio is None else f"{ratio:.0%}",
            *(str(row.get(name, 0)) for name in ("bypasses", "stores", "invalidations")),
        )

    columns = (
        "route",
        "ttl",
        "entries",
        "hits",
        "stale",
        "revalidated",
        "misses",
        "hit ratio",
        "bypasses",
        "stores",
        "invalidations",
    )
    return Rows(columns, (cells(row) for row in rows))


async def _stats(config: GatewayConfig, route: str | None) -> list[dict[str, Any]]:
    if config.state.backend != "redis":
        params = {"route": route} if route else None
        body = await _admin_call(config, "GET", "/api/cache", params=params)
        return [r for r in body.get("cache", []) if isinstance(r, dict)]
    from spork_cli.policies.cache import cache_rows

    return await _on_store(config, lambda store: cache_rows(store, config, route))


async def _purge(
    config: GatewayConfig, route: str | None, path: str | None, key: str | None
) -> int:
    if config.state.backend != "redis":
        given = (("route", route), ("path", path), ("key", key))
        params = {name: value for name, value in given if value is not None}
        body = await _admin_call(config, "POST", "/api/cache/purge", params=params)
        return int(body.get("deleted", 0))
    from spork_cli.policies.cache import purge as purge_entries

    return await _on_store(config, lambda store: purge_entries(store, config, route, path, key))
