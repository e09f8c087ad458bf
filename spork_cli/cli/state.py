"""`spork instances`: the running gateways, from their heartbeats in the state store."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

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
from spork_cli.errors import UsageError

if TYPE_CHECKING:
    from spork_cli.cli.tables import Rows
    from spork_cli.config.model import GatewayConfig
    from spork_cli.state import StateStore

T = TypeVar("T")


def register(app: typer.Typer) -> None:
    app.command("instances", cls=Command)(instances)
    app.add_typer(breakers_app, name="breakers")
    app.command("limits", cls=Command)(limits)


def instances(
    ctx: typer.Context,
    as_json: JsonOption = False,
    config_option: ConfigOption = None,
) -> None:
    """List running gateways: from Redis with shared state, else from the running gateway."""
    import asyncio

    config = _config(config_file(ctx, config_option))
    found = _supervisors_first(asyncio.run(_instances(config)))
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo("no running gateway has announced itself")
        raise typer.Exit(1)
    from spork_cli.cli.tables import show

    show(_instances_table(found, time.time()))


def _instances_table(found: list[dict[str, Any]], now: float) -> Rows:
    from spork_cli.cli.tables import Rows

    columns = ("instance", "role", "pid", "listen", "admin", "version", "up", "seen")
    return Rows(
        columns,
        (
            (
                str(item.get("id")),
                _role(item),
                str(item.get("pid")),
                str(item.get("listen")),
                str(item.get("admin") or "-"),
                str(item.get("version")),
                _ago(now - float(item.get("started", now)), suffix=""),
                _ago(now - float(item.get("seen", now))),
            )
            for item in found
        ),
    )


def _supervisors_first(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """By host and pid, each supervisor of ``--workers N`` followed by its workers."""
    by_id = {item.get("id"): item for item in found}

    def place(item: dict[str, Any]) -> tuple[str, int, int, int]:
        head = by_id.get(item.get("supervisor"), item)
        return (
            str(head.get("host", "")),
            int(head.get("pid", 0)),
            head is not item,
            int(item.get("pid", 0)),
        )

    return sorted(found, key=place)


def _role(item: dict[str, Any]) -> str:
    if item.get("workers"):
        return f"supervisor of {item['workers']}"
    if item.get("supervisor"):
        return f"worker of {item['supervisor']}"
    return "-"


def _ago(seconds: float, suffix: str = " ago") -> str:
    from spork_cli.auth.claims import human_duration

    return human_duration(max(seconds, 0)) + suffix


async def _instances(config: GatewayConfig) -> list[dict[str, Any]]:
    import orjson

    if config.state.backend == "redis":
        raw = await _on_store(config, lambda store: store.instances())
        return [orjson.loads(v) for v in raw.values()]
    return await _via_admin(config)


async def _via_admin(config: GatewayConfig) -> list[dict[str, Any]]:
    body = await _admin_call(config, "GET", "/api/instances")
    items = body.get("instances", [])
    return [i for i in items if isinstance(i, dict)]


breakers_app = typer.Typer(
    cls=Group, help="Circuit breakers: show, or force open/closed, or reset."
)


@breakers_app.callback(invoke_without_command=True)
def breakers(
    ctx: typer.Context,
    as_json: JsonOption = False,
    watch: WatchOption = False,
    config: ConfigOption = None,
) -> None:
    """Show every service's breaker (state, failures, opened since, next probe)."""
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    loaded = _config(config_file(ctx, config))
    _show(lambda: asyncio.run(_breakers(loaded)), _breakers_table, as_json, watch)


def _breakers_table(rows: list[dict[str, Any]], now: float | None = None) -> Any:
    if not rows:
        return "no service has a breaker"
    from spork_cli.cli.tables import Rows

    now = time.time() if now is None else now
    shown = []
    for row in rows:
        opened = row.get("opened_at")
        probe = row.get("next_probe_at")
        shown.append(
            (
                str(row["service"]),
                str(row.get("state")),
                str(row.get("failures", 0)),
                f"{row.get('window_failures', 0)}/{row.get('window_requests', 0)}",
                _ago(now - float(opened)) if opened else "-",
                ("in " + _ago(float(probe) - now, suffix="")) if probe and probe > now else "-",
                str(row.get("forced") or "-"),
            )
        )
    columns = ("service", "state", "failures", "window", "opened", "next probe", "forced")
    return Rows(columns, shown)


def _show(
    fetch: Callable[[], list[dict[str, Any]]],
    render: Callable[[list[dict[str, Any]]], Any],
    as_json: bool,
    watch: bool,
    interval: float = 1.0,
) -> None:
    """Print once, or (``watch``) refresh until interrupted: in place on a terminal, as a new
    timestamped block per refresh otherwise."""
    from spork_cli.cli.tables import console as table_console
    from spork_cli.cli.tables import show

    console = table_console()

    def view() -> Any:
        rows = fetch()
        return json.dumps(rows, indent=2) if as_json else render(rows)

    def emit(shown: Any) -> None:
        # Plain text (JSON, messages) is written as is: rich would read "[...]" as markup.
        if isinstance(shown, str):
            typer.echo(shown)
        else:
            show(shown, console)

    if not watch:
        emit(view())
        return
    try:
        if console.is_terminal and not as_json:
            from rich.live import Live

            with Live(view(), console=console, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)  # the refresh period, by design
                    live.update(view(), refresh=True)
        while True:
            if not as_json:
                typer.echo(time.strftime("%H:%M:%S"))
            emit(view())
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def _breaker_command(action: str) -> Any:
    def command(
        ctx: typer.Context,
        service: Annotated[str, typer.Argument(metavar="SERVICE", help="Service name.")],
        config_option: ConfigOption = None,
    ) -> None:
        import asyncio

        path = config_file(ctx, config_option)
        config = _config(path)
        if config.service(service) is None:
            raise UsageError(f"no service named {service!r} in {path}")
        if config.service(service).breaker is None:  # type: ignore[union-attr]
            raise UsageError(f"service {service!r} has no [services.breaker]")
        where = asyncio.run(_breaker_action(config, service, action))
        typer.echo(f"breaker of {service}: {action} ({where})")

    command.__doc__ = {
        "open": "Force the breaker open on every instance (until close or reset).",
        "close": "Force the breaker closed on every instance (until open or reset).",
        "reset": "Forget the breaker's state and any forced state.",
    }[action]
    return command


for _action in ("open", "close", "reset"):
    breakers_app.command(_action, cls=Command)(_breaker_command(_action))


async def _breakers(config: GatewayConfig) -> list[dict[str, Any]]:
    if config.state.backend != "redis":
        body = await _admin_call(config, "GET", "/api/breakers")
        rows = body.get("breakers", [])
        return [r for r in rows if isinstance(r, dict)]
    from dataclasses import asdict

    from spork_cli.state import breaker_key

    async def read(store: StateStore) -> list[dict[str, Any]]:
        rows = []
        for service in config.services:
            if service.breaker is None:
                continue
            state = await store.breaker_read(breaker_key(config.state.prefix, service.name))
            row: dict[str, Any] = {"service": service.name}
            row.update(asdict(state) if state is not None else {"state": "closed"})
            row.pop("changed", None)
            rows.append(row)
        return rows

    return await _on_store(config, read)


async def _breaker_action(config: GatewayConfig, service: str, action: str) -> str:
    if config.state.backend != "redis":
        await _admin_call(
            config, "POST", "/api/breakers", params={"service": service, "action": action}
        )
        return "through the running gateway"
    from spork_cli.state import breaker_key

    key = breaker_key(config.state.prefix, service)

    async def act(store: StateStore) -> None:
        if action == "reset":
            await store.breaker_reset(key)
        else:
            await store.breaker_force(key, "open" if action == "open" else "closed")

    await _on_store(config, act)
    return f"in {config.state.url}; every instance sees it within 250 ms"


async def _on_store(config: GatewayConfig, work: Callable[[StateStore], Awaitable[T]]) -> T:
    """Run ``work`` on the configured Redis store, reached directly (the CLI's own client)."""
    from spork_cli.errors import StateError
    from spork_cli.state.open import store_from_config

    store = store_from_config(config.state.model_copy(update={"timeout": 2.0}))
    try:
        return await work(store)
    except StateError as exc:
        raise UsageError(f"cannot reach the state store: {exc}") from exc
    finally:
        await store.close()


async def _admin_call(
    config: GatewayConfig, method: str, path: str, params: dict[str, str] | None = None
) -> dict[str, Any]:
    import aiohttp

    from spork_cli.cli.token import _admin

    base, headers = _admin(config)
    if method != "GET":
        headers["Content-Type"] = "application/json"  # the only kind of change it takes
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session,
            session.request(method, base + path, params=params, headers=headers) as response,
        ):
            if response.status != 200:
                detail = (await response.text())[:200]
                raise UsageError(f"the gateway answered {response.status}: {detail}")
            body = await response.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UsageError(
            f"cannot reach the running gateway's admin API at {base} (memory state lives in "
            "the gateway process; is `spork serve` running?)"
        ) from exc
    return body if isinstance(body, dict) else {}


def limits(
    ctx: typer.Context,
    args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="ROUTE",
            help="A route to show alone; or the words reset ROUTE [KEY].",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", metavar="KEY", help="Only clients whose key contains KEY."),
    ] = None,
    as_json: JsonOption = False,
    watch: WatchOption = False,
    config_option: ConfigOption = None,
) -> None:
    """Rate limits: what each client has left (`spork limits [ROUTE]`), or forget them
    (`spork limits reset ROUTE [KEY]`)."""
    import asyncio

    words = list(args or [])
    config = _config(config_file(ctx, config_option))
    if words[:1] == ["reset"]:
        if len(words) not in (2, 3):
            raise UsageError("usage: spork limits reset ROUTE [KEY]")
        route, client = words[1], (words[2] if len(words) == 3 else None)
        _known_route(config, route)
        deleted = asyncio.run(_limits_reset(config, route, client))
        typer.echo(f"reset {deleted} limiter key{'s' if deleted != 1 else ''} of {route}")
        return
    if len(words) > 1:
        raise UsageError("usage: spork limits [ROUTE] [--key K] | spork limits reset ROUTE [KEY]")
    shown = words[0] if words else None
    if shown is not None:
        _known_route(config, shown)
    _show(lambda: asyncio.run(_limits(config, shown, key)), _limits_table, as_json, watch)


def _limits_table(rows: list[dict[str, Any]]) -> Any:
    if not rows:
        return "no client has used a rate-limited route yet"
    from spork_cli.cli.tables import Rows

    return Rows(
        ("route", "tier", "client", "remaining", "full again in"),
        (
            (
                str(row["route"]),
                str(row["tier"]),
                str(row["client"]),
                f"{row['remaining']}/{row['limit']}",
                _ago(float(row["reset_after"]), suffix=""),
            )
            for row in rows
        ),
    )


def _known_route(config: GatewayConfig, route: str) -> None:
    from spork_cli.policies.limiter import limited_routes

    if not limited_routes(config, route):
        raise UsageError(f"no rate-limited route is named {route!r}")


async def _limits(config: GatewayConfig, route: str | None, key: str | None) -> list[Any]:
    if config.state.backend != "redis":
        params = {k: v for k, v in (("route", route), ("key", key)) if v}
        body = await _admin_call(config, "GET", "/api/limits", params=params)
        return [r for r in body.get("limits", []) if isinstance(r, dict)]
    from spork_cli.policies.limiter import limit_rows

    return await _on_store(config, lambda store: limit_rows(store, config, route, key))


async def _limits_reset(config: GatewayConfig, route: str, key: str | None) -> int:
    if config.state.backend != "redis":
        params = {"route": route} | ({"key": key} if key else {})
        body = await _admin_call(config, "POST", "/api/limits", params=params)
        return int(body.get("deleted", 0))
    from spork_cli.policies.limiter import reset_limits

    return await _on_store(config, lambda store: reset_limits(store, config, route, key))
