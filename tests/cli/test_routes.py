"""`spork routes` shows the table the gateway compiles, without importing the gateway."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from spork_cli.config.load import load_config
from spork_cli.gateway.compile import Resources, close_table, compile_table
from spork_cli.gateway.table import config_rows, route_rows
from tests.support import PROJECT_ROOT, Processes, spork_env

CONFIG = PROJECT_ROOT / "gateway.toml"

# What serving needs and showing the table does not: the server and its app, pools and
# client sessions (aiohttp), middleware, metrics, logging and JWT keys.
HEAVY = (
    "aiohttp",
    "spork_cli.gateway.app",
    "spork_cli.gateway.compile",
    "spork_cli.gateway.metrics",
    "spork_cli.gateway.proxy",
    "spork_cli.gateway.server",
    "spork_cli.gateway.upstream",
    "spork_cli.middleware",
    "prometheus_client",
    "structlog",
    "jwt",
)

RUN_AND_LIST_MODULES = """
import json, sys
from spork_cli.cli import main
out = sys.argv.pop(1)
try:
    main()
finally:
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def test_routes_imports_none_of_the_gateway(tmp_path: Path, processes: Processes) -> None:
    listing = tmp_path / "modules.json"
    result = processes.run(
        sys.executable,
        "-c",
        RUN_AND_LIST_MODULES,
        str(listing),
        "routes",
        "-c",
        str(CONFIG),
        env=spork_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "/api/users" in result.stdout
    modules = json.loads(listing.read_text())
    assert "spork_cli.gateway.table" in modules  # the list is of the run that showed routes
    loaded = [m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]
    assert loaded == []


async def test_rows_are_those_of_the_compiled_table() -> None:
    config = load_config(CONFIG)
    table = await compile_table(config, None, Resources(base_dir=CONFIG.parent))
    try:
        compiled = route_rows(table)
    finally:
        await close_table(table, 0)
    assert config_rows(config) == compiled
    assert len(compiled) == len(config.routes)
