"""Every table the CLI prints keeps every column and every value whole in a 60-column
terminal (as `key: value` blocks), and is one line per row where it fits."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console, Group
from typer.testing import CliRunner

from spork_cli.cli import app
from spork_cli.cli.cache import _table as cache_table
from spork_cli.cli.health import _table as health_table
from spork_cli.cli.state import _breakers_table, _instances_table, _limits_table
from spork_cli.cli.tables import Rows, show
from tests.support import PROJECT_ROOT

NOW = 1_700_000_000.0

LIMITS = [
    {
        "route": "/api/very/long/route/name/for/limits",
        "tier": "authenticated",
        "client": "user:alice@example.com",
        "remaining": 99,
        "limit": 100,
        "reset_after": 42.0,
    },
    {
        "route": "/api",
        "tier": "anonymous",
        "client": "ip:127.0.0.1",
        "remaining": 0,
        "limit": 5,
        "reset_after": 3.0,
    },
]
BREAKERS = [
    {
        "service": "payments-service-with-a-long-name",
        "state": "half_open",
        "failures": 12,
        "window_failures": 7,
        "window_requests": 20,
        "opened_at": NOW - 30,
        "next_probe_at": NOW + 5,
        "forced": "open",
    },
]
CACHE = [
    {
        "route": "/api/cached/reports/quarterly",
        "ttl": 30.0,
        "entries": 1234,
        "hits": 98765,
        "misses": 4321,
        "hit_ratio": 0.958,
        "stores": 4321,
    },
]
HEALTH = [
    {
        "service": "users",
        "endpoint": "https://users.internal.example.com:8443",
        "healthy": False,
        "http_status": None,
        "latency_ms": 2001.0,
        "path": "/health",
        "check": "default",
        "error": "Cannot connect to host users.internal.example.com:8443 ssl:default",
    },
    {
        "service": "users",
        "endpoint": "http://127.0.0.1:9100",
        "healthy": True,
        "http_status": 200,
        "latency_ms": 1.25,
        "path": "/status/204",
        "check": "configured",
        "error": None,
    },
]
INSTANCES = [
    {
        "id": "gateway-host-01-12345-a1b2c3",
        "pid": 12345,
        "listen": "0.0.0.0:8080",
        "admin": "127.0.0.1:9901",
        "version": "0.1.0",
        "started": NOW - 3600,
        "seen": NOW - 1,
    },
]

TABLES: dict[str, Any] = {
    "limits": lambda: _limits_table(LIMITS),
    "breakers": lambda: _breakers_table(BREAKERS, NOW),
    "cache stats": lambda: cache_table(CACHE),
    "health": lambda: health_table(HEALTH, "none"),
    "instances": lambda: _instances_table(INSTANCES, NOW),
}


def render(renderable: Any, width: int) -> str:
    out = io.StringIO()
    show(renderable, Console(file=out, width=width, color_system=None, legacy_windows=False))
    return out.getvalue()


def rows_of(renderable: Any) -> Rows:
    if isinstance(renderable, Group):
        (rows,) = [r for r in renderable.renderables if isinstance(r, Rows)]
        return rows
    assert isinstance(renderable, Rows)
    return renderable


def assert_whole(rows: Rows, text: str) -> None:
    """Every header, and every line of every cell, is in ``text`` unbroken."""
    for column in rows.columns:
        assert column in text, text
    for row in rows.rows:
        for cell in row:
            for line in cell.plain.split("\n"):
                assert line in text, (line, text)


@pytest.mark.parametrize("name", list(TABLES))
def test_at_60_columns_every_column_and_value_is_whole(name: str) -> None:
    renderable = TABLES[name]()
    text = render(renderable, 60)
    rows = rows_of(renderable)
    assert_whole(rows, text)
    # Folded: one "column: value" line per column and row.
    lines = text.splitlines()
    for column in rows.columns:
        assert sum(line.startswith(f"{column}:") for line in lines) == len(rows.rows), text


@pytest.mark.parametrize("name", list(TABLES))
def test_where_it_fits_it_is_one_line_per_row(name: str) -> None:
    renderable = TABLES[name]()
    text = render(renderable, 250)
    rows = rows_of(renderable)
    assert_whole(rows, text)
    header = text.splitlines()[0].split()
    assert " ".join(header) == " ".join(rows.columns)


def test_a_cell_of_several_lines_keeps_each_line_in_blocks() -> None:
    rows = Rows(("service", "endpoints"), [("api", "http://10.0.0.1:1\nhttp://10.0.0.2:2")])
    assert render(rows, 20).splitlines() == [
        "service:   api",
        "endpoints: http://10.0.0.1:1",
        "           http://10.0.0.2:2",
    ]


def test_cells_are_text_not_markup() -> None:
    text = render(Rows(("error",), [("[bold]x[/]",)]), 80)
    assert "[bold]x[/]" in text


def test_routes_at_60_columns_shows_every_route_in_full() -> None:
    config = str(PROJECT_ROOT / "gateway.toml")
    env = {"COLUMNS": "60", "NO_COLOR": "1"}
    shown = CliRunner().invoke(app, ["routes", "-c", config], env=env)
    data = json.loads(CliRunner().invoke(app, ["routes", "-c", config, "--json"]).output)
    assert shown.exit_code == 0, shown.output
    assert max(len(line) for line in shown.output.splitlines()) <= 60
    lines = shown.output.splitlines()
    for column in ("path", "methods", "service", "endpoints", "auth", "features"):
        assert sum(line.startswith(f"{column}:") for line in lines) == len(data)
    for row in data:
        assert f"path:      {row['path']}" in shown.output
        for endpoint in row["endpoints"]:
            assert endpoint in shown.output
        for feature in row["features"]:
            assert feature in shown.output


def test_breaker_times_are_relative_to_now() -> None:
    text = render(_breakers_table(BREAKERS, NOW), 250)
    assert "30s ago" in text and "in 5s" in text
