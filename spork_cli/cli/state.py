"""`spork instances`: the running gateways, from their heartbeats in the state store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spork_cli.errors import UsageError

if TYPE_CHECKING:
    from spork_cli.config.model import GatewayConfig


def register(app: typer.Typer) -> None:
    app.command("instances")(instances)


def _config(path: Path) -> GatewayConfig:
    from spork_cli.config.load import load_config

    if not path.exists():
        raise UsageError(f"{path}: no such file (pass -c FILE)")
    return load_config(path)


def instances(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List running gateways: from Redis with shared state, else from the running gateway."""
    import asyncio

    config = _config(ctx.obj)
    found = asyncio.run(_instances(config))
    found.sort(key=lambda i: (i.get("host", ""), i.get("pid", 0)))
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo("no running gateway has announced itself")
        raise typer.Exit(1)
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("instance", "pid", "listen", "admin", "version", "up", "seen"):
        table.add_column(column)
    now = time.time()
    for item in found:
        table.add_row(
            str(item.get("id")),
            str(item.get("pid")),
            str(item.get("listen")),
            str(item.get("admin") or "-"),
            str(item.get("version")),
            _ago(now - float(item.get("started", now)), suffix=""),
            _ago(now - float(item.get("seen", now))),
        )
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)
    console.print(table)


def _ago(seconds: float, suffix: str = " ago") -> str:
    from spork_cli.auth.verify import human_duration

    return human_duration(max(seconds, 0)) + suffix


async def _instances(config: GatewayConfig) -> list[dict[str, Any]]:
    import orjson

    from spork_cli.errors import StateError
    from spork_cli.state import store_from_config

    if config.state.backend == "redis":
        store = store_from_config(config.state.model_copy(update={"timeout": 2.0}))
        try:
            raw = await store.instances()
        except StateError as exc:
            raise UsageError(f"cannot reach the state store: {exc}") from exc
        finally:
            await store.close()
        return [orjson.loads(v) for v in raw.values()]
    return await _via_admin(config)


async def _via_admin(config: GatewayConfig) -> list[dict[str, Any]]:
    import aiohttp

    from spork_cli.cli.token import _admin

    base, headers = _admin(config)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session,
            session.get(f"{base}/api/instances", headers=headers) as response,
        ):
            if response.status != 200:
                raise UsageError(f"the gateway answered {response.status}")
            body = await response.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UsageError(
            f"cannot reach the running gateway's admin API at {base} (memory state lives in "
            "the gateway process; is `spork serve` running?)"
        ) from exc
    items = body.get("instances", [])
    return [i for i in items if isinstance(i, dict)]
