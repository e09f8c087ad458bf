"""Hot reload of a running `spork serve`: file changes, SIGHUP, invalid files, requests in
flight across a reload. (Reloads under load: tests/reliability/test_reload_storm.py.)

Every file change is written the way editors save: a temporary file renamed over the config.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest

from tests.conftest import StartSpork
from tests.support import (
    LOOPBACK,
    SporkServer,
    Upstream,
    UpstreamFactory,
    eventually,
    free_ports,
    gateway_toml,
    replace_file,
)

RELOAD_DEADLINE = 1.0


async def served_by(http: aiohttp.ClientSession, url: str) -> str:
    """Which upstream answered ``url`` ("a", "b", ...), or "status N" when it was not a 200."""
    async with http.get(url) as response:
        await response.read()
        if response.status != 200:
            return f"status {response.status}"
        return response.headers.get("X-Upstream", "?")


async def last_reload(http: aiohttp.ClientSession, server: SporkServer) -> dict[str, Any] | None:
    async with http.get(f"{server.admin_url}/health/ready") as response:
        assert response.status == 200
        body: dict[str, Any] = orjson.loads(await response.read())
    return body["last_reload"]


async def reload_after(
    http: aiohttp.ClientSession, server: SporkServer, since: float, timeout: float = 5.0
) -> dict[str, Any]:
    """The first reload result the gateway recorded after wall-clock time ``since``."""

    async def probe() -> dict[str, Any] | None:
        last = await last_reload(http, server)
        return last if last is not None and last["at"] >= since else None

    return await eventually(probe, timeout=timeout, what="a reload after the write")


async def changes_within(
    http: aiohttp.ClientSession, url: str, expected: str, config: Path, text: str
) -> float:
    """Rewrite ``config`` and return the seconds until ``url`` is served by ``expected``."""
    started = time.monotonic()
    replace_file(config, text)

    async def probe() -> bool:
        return await served_by(http, url) == expected

    await eventually(probe, timeout=5.0, interval=0.01, what=f"{url} served by {expected}")
    return time.monotonic() - started


class Pair:
    """Two echo upstreams, "a" and "b", and a config writer for them."""

    def __init__(self, a: Upstream, b: Upstream, port: int, admin_port: int) -> None:
        self.a, self.b = a, b
        self.port, self.admin_port = port, admin_port

    def toml(self, routes: dict[str, str], **extra: str) -> str:
        services = {"a": self.a.url, "b": self.b.url}
        return gateway_toml(self.port, self.admin_port, services, routes, **extra)


@pytest.fixture
async def pair(upstream_factory: UpstreamFactory) -> Pair:
    a, b = await upstream_factory.many("a", "b")
    return Pair(a, b, *free_ports(2))


async def start(spork_server: StartSpork, pair: Pair, config: Path, *args: str) -> SporkServer:
    return await spork_server(config, pair.port, pair.admin_port, *args)


# --- valid changes -----------------------------------------------------------------------------


async def test_changed_route_target_is_served_within_a_second(
    tmp_path: Path, pair: Pair, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(pair.toml({"/api": "a"}))
    server = await start(spork_server, pair, config)
    url = f"{server.url}/api/thing"
    assert await served_by(http, url) == "a"

    elapsed = await changes_within(http, url, "b", config, pair.toml({"/api": "b"}))
    assert elapsed < RELOAD_DEADLINE

    result = await last_reload(http, server)
    assert result is not None
    assert result["result"] == "applied"
    assert result["needs_restart"] == []
    assert server.events("config reloaded")
    # And back again: a second change is just as quick.
    elapsed = await changes_within(http, url, "a", config, pair.toml({"/api": "a"}))
    assert elapsed < RELOAD_DEADLINE


async def test_added_route_is_served_within_a_second(
    tmp_path: Path, pair: Pair, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(pair.toml({"/api": "a"}))
    server = await start(spork_server, pair, config)
    assert await served_by(http, f"{server.url}/new/x") == "status 404"

    text = pair.toml({"/api": "a", "/new": "b"})
    elapsed = await changes_within(http, f"{server.url}/new/x", "b", config, text)
    assert elapsed < RELOAD_DEADLINE
    assert await served_by(http, f"{server.url}/api/x") == "a"
    assert pair.b.requests[-1].raw_path == "/new/x"


# --- invalid and static changes ----------------------------------------------------------------

# Text appended to a valid file, and the line of that text the error must point at.
INVALID_EDITS = {
    "unknown key": ('[[routes]]\npath = "/x"\nservice = "a"\nbogus = 1\n', 4),
    "unknown service": ('[[routes]]\npath = "/x"\nservice = "ghost"\n', 3),
    "toml syntax": ("[[routes]\n", 1),
}


@pytest.mark.parametrize("edit", INVALID_EDITS.values(), ids=INVALID_EDITS.keys())
async def test_invalid_file_keeps_the_old_table_serving(
    tmp_path: Path,
    pair: Pair,
    spork_server: StartSpork,
    http: aiohttp.ClientSession,
    edit: tuple[str, int],
) -> None:
    config = tmp_path / "gateway.toml"
    valid = pair.toml({"/api": "a"})
    config.write_text(valid)
    server = await start(spork_server, pair, config)
    url = f"{server.url}/api/x"

    # The change also retargets /api, so a half-applied file would show on the wire.
    retargeted = pair.toml({"/api": "b"})
    broken = retargeted + edit[0]
    since = time.time()
    replace_file(config, broken)
    result = await reload_after(http, server, since)
    assert result["result"] == "invalid", result
    assert await served_by(http, url) == "a"

    [error, *_] = result["errors"]
    assert error["file"].endswith("gateway.toml")
    assert error["line"] == len(retargeted.splitlines()) + edit[1], (error, broken)
    assert error["column"] >= 1
    assert error["message"]
    [failure] = await eventually(
        lambda: server.events("reload failed: config invalid, still serving the previous one"),
        what="the reload failure log line",
    )
    assert f"gateway.toml:{error['line']}:" in " ".join(failure["errors"])

    # Fixing the file applies the fix.
    elapsed = await changes_within(http, url, "b", config, pair.toml({"/api": "b"}))
    assert elapsed < RELOAD_DEADLINE
    assert server.running


async def test_static_change_needs_a_restart_and_is_not_applied(
    tmp_path: Path, pair: Pair, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(pair.toml({"/api": "a"}))
    server = await start(spork_server, pair, config)

    # A new state prefix together with a route change: the route applies, the prefix does not.
    moved = pair.toml({"/api": "b"}, extra='[state]\nprefix = "elsewhere"')
    elapsed = await changes_within(http, f"{server.url}/api/x", "b", config, moved)
    assert elapsed < RELOAD_DEADLINE
    result = await last_reload(http, server)
    assert result is not None
    assert result["result"] == "applied"
    assert result["needs_restart"] == ["state.prefix"]
    await eventually(
        lambda: server.events("these settings need a restart to change"),
        what="the needs-restart log line",
    )

    # Only the prefix differs from what is served now: nothing to apply, still reported.
    since = time.time()
    replace_file(config, moved + "\n# touched\n")
    result = await reload_after(http, server, since)
    assert result["result"] == "unchanged"
    assert result["needs_restart"] == ["state.prefix"]
    assert await served_by(http, f"{server.url}/api/x") == "b"


async def test_restart_only_settings_are_reported_and_keep_their_running_value(
    tmp_path: Path, pair: Pair, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(pair.toml({"/api": "a"}))
    server = await start(spork_server, pair, config)
    await served_by(http, f"{server.url}/api/x")  # a request, so latency buckets are shown

    restart_only = (
        '[state]\ntimeout = "200ms"\n[logging]\nlevel = "debug"\n'
        '[metrics]\npath = "/m2"\nbuckets = [0.75, 1.5]\n[server.timeouts]\nkeepalive = "5s"\n'
    )
    changed = pair.toml({"/api": "b"}, extra=restart_only)
    await changes_within(http, f"{server.url}/api/x", "b", config, changed)
    result = await last_reload(http, server)
    assert result is not None and result["result"] == "applied"
    assert sorted(result["needs_restart"]) == [
        "logging.level",
        "metrics.buckets",
        "metrics.path",
        "server.timeouts.keepalive",
        "state.timeout",
    ]
    # The running values stay: metrics where they were, with the buckets they had.
    async with http.get(f"{server.admin_url}/m2") as moved:
        assert moved.status == 404
    async with http.get(f"{server.admin_url}/metrics") as scraped:
        assert scraped.status == 200
        text = await scraped.text()
    assert 'le="0.005"' in text and 'le="0.75"' not in text
    assert "spork_config_restart_pending 5.0" in text
    async with http.get(f"{server.admin_url}/api/reloads") as reloads:
        assert (await reloads.json())["reloads"][0]["needs_restart"] == result["needs_restart"]

    # Back to the file the gateway runs: nothing pending any more.
    since = time.time()
    replace_file(config, pair.toml({"/api": "b"}))
    result = await reload_after(http, server, since)
    assert result["result"] == "unchanged" and result["needs_restart"] == []
    async with http.get(f"{server.admin_url}/metrics") as scraped:
        assert "spork_config_restart_pending 0.0" in await scraped.text()


async def test_a_secret_changed_in_the_file_is_applied_by_a_reload(
    tmp_path: Path, pair: Pair, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    old, new = "old-secret-" + "o" * 32, "new-secret-" + "n" * 32

    def text(secret: str) -> str:
        auth = f'[auth]\nalgorithms = ["HS256"]\nsecret = "{secret}"\n'
        return pair.toml({"/api": "a"}, route_extra='auth = "required"', extra=auth)

    def token(secret: str) -> dict[str, str]:
        claims = {"sub": "dev", "exp": int(time.time()) + 600}
        return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}

    config = tmp_path / "gateway.toml"
    config.write_text(text(old))
    server = await start(spork_server, pair, config)
    url = f"{server.url}/api/x"

    async def status(secret: str) -> int:
        async with http.get(url, headers=token(secret)) as response:
            await response.read()
            return response.status

    assert (await status(old), await status(new)) == (200, 401)
    since = time.time()
    replace_file(config, text(new))
    result = await reload_after(http, server, since)
    assert result["result"] == "applied", result
    assert (await status(old), await status(new)) == (401, 200)


async def test_command_line_port_overrides_are_not_reported_as_static_changes(
    tmp_path: Path, pair: Pair, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    config = tmp_path / "gateway.toml"
    file_port, file_admin = free_ports(2)
    config.write_text(
        gateway_toml(file_port, file_admin, {"a": pair.a.url, "b": pair.b.url}, {"/api": "a"})
    )
    server = await start(spork_server, pair, config)
    text = gateway_toml(file_port, file_admin, {"a": pair.a.url, "b": pair.b.url}, {"/api": "b"})
    await changes_within(http, f"{server.url}/api/x", "b", config, text)
    result = await last_reload(http, server)
    assert result is not None
    assert result["result"] == "applied"
    assert result["needs_restart"] == []


# --- SIGHUP ------------------------------------------------------------------------------------


async def test_sighup_reloads(
    tmp_path: Path, pair: Pair, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(pair.toml({"/api": "a"}))
    server = await start(spork_server, pair, config)

    since = time.time()
    server.send(signal.SIGHUP)
    result = await reload_after(http, server, since)
    assert result["trigger"] == "SIGHUP"
    assert result["result"] == "unchanged"
    assert server.running
    assert await served_by(http, f"{server.url}/api/x") == "a"


async def test_sighup_reloads_with_no_reload(
    tmp_path: Path, pair: Pair, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(pair.toml({"/api": "a"}))
    server = await start(spork_server, pair, config, "--no-reload")
    replace_file(config, pair.toml({"/api": "b"}))

    server.send(signal.SIGHUP)

    async def probe() -> bool:
        assert server.running, f"SIGHUP ended the gateway (exit {server.returncode})"
        try:
            return await served_by(http, f"{server.url}/api/x") == "b"
        except aiohttp.ClientConnectionError:
            return False  # the gateway is going away: the next round says so

    await eventually(probe, what="the change applied after SIGHUP")


# --- in-flight requests across a reload --------------------------------------------------------


async def test_request_reading_its_body_finishes_across_a_reload(
    tmp_path: Path, pair: Pair, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    config = tmp_path / "gateway.toml"
    text = gateway_toml(pair.port, pair.admin_port, {"api": pair.a.url}, {"/api": "api"})
    config.write_text(text)
    server = await start(spork_server, pair, config)

    reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
    try:
        writer.write(
            b"POST /api/upload HTTP/1.1\r\nHost: gateway\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 10\r\nExpect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        # "100 Continue" comes from the router, right before the gateway's handler runs.
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        writer.write(b"hello")
        await writer.drain()

        # The service moves to another endpoint: a new pool, the old one is retired.
        moved = gateway_toml(pair.port, pair.admin_port, {"api": pair.b.url}, {"/api": "api"})
        await changes_within(http, f"{server.url}/api/x", "b", config, moved)

        writer.write(b"world")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 200"), head
    assert [r.body for r in pair.a.requests if r.method == "POST"] == [b"helloworld"]
