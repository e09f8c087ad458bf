"""`spork cache stats|purge`: with Redis state straight from Redis (the entries written by a
gateway in process), with memory state through a running `spork serve`'s admin API, and the
usage errors (one line on stderr, exit 2)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from spork_cli.config.load import load_config
from spork_cli.gateway.admin import build_admin_app
from spork_cli.gateway.app import build_app
from spork_cli.gateway.keys import TABLE
from tests.cache.conftest import ROUTE, Client, ClientFactory, fetch
from tests.conftest import StartSpork
from tests.support import (
    LOOPBACK,
    SporkRunner,
    Upstream,
    eventually,
    free_port,
    free_ports,
    gateway_toml,
    reap,
    spork_env,
)

CACHED = (
    f'name = "{ROUTE}"\ncache = {{ ttl = "30s", default_ttl = "30s", vary = ["Accept-Language"] }}'
)


@dataclass(frozen=True)
class Config:
    path: Path
    port: int
    admin_port: int


def write_config(
    tmp_path: Path, origin_url: str, state: str = "", route_extra: str = CACHED
) -> Config:
    port, admin = free_ports(2)
    path = tmp_path / "gateway.toml"
    path.write_text(
        gateway_toml(
            port, admin, {"svc": origin_url}, {"/": "svc"}, route_extra=route_extra, extra=state
        )
    )
    return Config(path, port, admin)


def redis_state(url: str) -> str:
    return f'[state]\nbackend = "redis"\nurl = "{url}"\ntimeout = "500ms"'


class Cli:
    """`spork -c CONFIG cache ...` in a thread, so the test's event loop keeps serving."""

    def __init__(self, run_spork: SporkRunner, config: Path) -> None:
        self.run_spork = run_spork
        self.config = config

    async def __call__(self, *args: str) -> str:
        result = await asyncio.to_thread(self.run_spork, "-c", str(self.config), "cache", *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout

    async def rows(self, *args: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(await self("stats", *args, "--json"))
        return rows


async def fill(client: Client | aiohttp.ClientSession, base: str = "") -> str:
    """Three entries (two variants of /r/p?x=1, one /r/q) and one hit; the X-Cache-Key of
    /r/q."""
    for lang in ("en", "fr"):
        answer = await fetch(client, f"{base}/r/p?x=1", headers={"Accept-Language": lang})
        assert answer.headers["X-Cache"] == "MISS"
    q = await fetch(client, f"{base}/r/q")
    assert (await fetch(client, f"{base}/r/q")).headers["X-Cache"] == "HIT"
    return q.headers["X-Cache-Key"]


async def cache_of(client: Client | aiohttp.ClientSession, path: str, **headers: str) -> str:
    return (await fetch(client, path, headers=headers)).headers["X-Cache"]


async def _rows_are(cli: Cli, expected: list[dict[str, Any]]) -> bool:
    return await cli.rows() == expected


async def check_stats_and_purge(
    cli: Cli, client: Client | aiohttp.ClientSession, base: str = ""
) -> None:
    q_key = await fill(client, base)
    expected = {
        "route": ROUTE,
        "ttl": 30.0,
        "entries": 3,
        "hits": 1,
        "misses": 3,
        "stale": 0,
        "revalidated": 0,
        "bypasses": 0,
        "stores": 3,
        "invalidations": 0,
        "hit_ratio": 0.25,
    }
    # Straight from Redis the counts arrive within half a second; through the admin API the
    # running gateway counts its own first.
    await eventually(lambda: _rows_are(cli, [expected]), what="the counters")
    table = await cli("stats", ROUTE)
    assert re.search(r"\bc\s+30s\s+3\s+1\s+0\s+0\s+3\s+25%\s+0\s+3\s+0\b", table), table

    out = await cli("purge", ROUTE, "--path", "/r/p?x=1")
    assert out.strip() == f"purged 2 cached responses of route {ROUTE}"
    assert (await cli.rows(ROUTE))[0]["entries"] == 1
    assert await cache_of(client, f"{base}/r/q") == "HIT"
    assert await cache_of(client, f"{base}/r/p?x=1", **{"Accept-Language": "fr"}) == "MISS"

    out = await cli("purge", "--key", q_key)
    assert out.strip() == "purged 1 cached response of every cached route"
    assert await cache_of(client, f"{base}/r/q") == "MISS"

    out = await cli("purge", ROUTE)
    assert out.strip() == f"purged 2 cached responses of route {ROUTE}"

    async def emptied() -> bool:
        row = (await cli.rows())[0]
        return (row["entries"], row["stores"]) == (0, 5)  # the counters stay

    await eventually(emptied, what="an empty route with its counters")
    assert await cache_of(client, f"{base}/r/q") == "MISS"


async def test_stats_and_purge_straight_from_redis(
    tmp_path: Path,
    origin: Upstream,
    aiohttp_client: ClientFactory,
    run_spork: SporkRunner,
    redis_url: str,
) -> None:
    config = write_config(tmp_path, origin.url, redis_state(redis_url))
    client = await aiohttp_client(build_app(load_config(config.path)))
    await check_stats_and_purge(Cli(run_spork, config.path), client)


async def test_stats_and_purge_through_the_running_gateway_with_memory_state(
    tmp_path: Path,
    origin: Upstream,
    spork_server: StartSpork,
    run_spork: SporkRunner,
    http: aiohttp.ClientSession,
) -> None:
    config = write_config(tmp_path, origin.url)
    server = await spork_server(config.path, config.port, config.admin_port)
    await check_stats_and_purge(Cli(run_spork, config.path), http, server.url)


async def test_an_empty_key_never_purges_everything(
    tmp_path: Path, origin: Upstream, aiohttp_client: ClientFactory, run_spork: SporkRunner
) -> None:
    config = write_config(tmp_path, origin.url)
    client = await aiohttp_client(build_app(load_config(config.path)))
    # The running gateway's admin API, on the port the CLI reads from the config.
    admin = web.AppRunner(build_admin_app(client.app[TABLE]))
    await admin.setup()
    try:
        await web.TCPSite(admin, LOOPBACK, config.admin_port).start()
        await fill(client)
        result = await asyncio.to_thread(
            run_spork, "-c", str(config.path), "cache", "purge", "--key", ""
        )
        assert "Traceback" not in result.stderr
        assert await cache_of(client, "/r/q") == "HIT"
    finally:
        await admin.cleanup()


# --- usage errors --------------------------------------------------------------------------------


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("command", [("stats", "nope"), ("purge", "nope")])
def test_an_unknown_route_is_a_usage_error(
    tmp_path: Path, run_spork: SporkRunner, command: tuple[str, ...]
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    result = run_spork("-c", str(config.path), "cache", *command)
    one_line_error(result, "no cached route is named 'nope'", f"cached: {ROUTE}")


@pytest.mark.parametrize("command", [("stats",), ("purge",)])
def test_a_config_without_cached_routes_is_a_usage_error(
    tmp_path: Path, run_spork: SporkRunner, command: tuple[str, ...]
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", route_extra="")
    result = run_spork("-c", str(config.path), "cache", *command)
    one_line_error(result, "no route has a [routes.cache] section")


@pytest.mark.parametrize("command", [("stats",), ("purge", ROUTE), ("stats", "--json")])
def test_unreachable_redis_is_a_usage_error(
    tmp_path: Path, run_spork: SporkRunner, command: tuple[str, ...]
) -> None:
    nothing = f"redis://127.0.0.1:{free_port()}/0"
    config = write_config(tmp_path, "http://127.0.0.1:9", redis_state(nothing))
    result = run_spork("-c", str(config.path), "cache", *command)
    one_line_error(result, "cannot reach the state store")
    assert result.stdout == ""


def test_memory_state_without_a_running_gateway_is_a_usage_error(
    tmp_path: Path, run_spork: SporkRunner
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    result = run_spork("-c", str(config.path), "cache", "stats")
    one_line_error(result, "cannot reach the running gateway's admin API")


def test_a_path_must_start_with_a_slash(tmp_path: Path, run_spork: SporkRunner) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    result = run_spork("-c", str(config.path), "cache", "purge", "--path", "r/p")
    one_line_error(result, "--path must start with '/'")


# --- watch ---------------------------------------------------------------------------------------


def test_watch_refreshes_until_interrupted(tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", redis_state(redis_url))
    proc = subprocess.Popen(
        [sys.executable, "-m", "spork_cli", "-c", str(config.path), "cache", "stats", "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=spork_env(),
    )
    try:
        assert proc.stdout is not None
        # A timestamp and the route's row, then the same again a refresh later.
        seen: list[str] = []
        while seen.count("row") < 2:
            line = proc.stdout.readline()
            assert line, "the watch ended by itself"
            if re.fullmatch(r"\d\d:\d\d:\d\d\n", line):
                seen.append("stamp")
            elif line.split()[:2] == [ROUTE, "30s"]:
                seen.append("row")
        assert seen == ["stamp", "row", "stamp", "row"]
        # Interrupted while it waits for the next refresh, as a person would.
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    finally:
        reap(proc)
