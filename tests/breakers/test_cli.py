"""`spork breakers`: show, and force a state every instance honours (Redis directly, or the
running gateway's admin API with memory state)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support import SporkRunner, SporkServer, Upstream, free_ports, gateway_toml

BREAKER = 'breaker = { failures = 3, cooldown = "1m" }'


def server_for(tmp_path: Path, name: str, upstream: Upstream, state: str) -> SporkServer:
    port, admin = free_ports(2)
    config = tmp_path / f"{name}.toml"
    config.write_text(
        gateway_toml(
            port, admin, {"svc": upstream.url}, {"/": "svc"}, service_extra=BREAKER, extra=state
        )
    )
    return SporkServer(config, port, admin, tmp_path / name)


async def status(http: aiohttp.ClientSession, server: SporkServer) -> int:
    async with http.get(f"{server.url}/x") as response:
        return response.status


async def eventually_status(http: aiohttp.ClientSession, server: SporkServer, wanted: int) -> None:
    deadline = time.monotonic() + 2
    while await status(http, server) != wanted:
        assert time.monotonic() < deadline, f"never answered {wanted}"


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_force_open_then_reset(
    tmp_path: Path,
    upstream: Upstream,
    run_spork: SporkRunner,
    redis_url: str,
    backend: str,
) -> None:
    state = f'[state]\nbackend = "redis"\nurl = "{redis_url}"' if backend == "redis" else ""
    servers = [server_for(tmp_path, "a", upstream, state)]
    if backend == "redis":
        servers.append(server_for(tmp_path, "b", upstream, state))
    config = str(servers[0].config)
    try:
        await asyncio.gather(*(s.start() for s in servers))
        async with aiohttp.ClientSession() as http:
            assert [await status(http, s) for s in servers] == [200] * len(servers)
            forced = await asyncio.to_thread(run_spork, "-c", config, "breakers", "open", "svc")
            assert forced.returncode == 0, forced.stderr
            for server in servers:
                await eventually_status(http, server, 503)
            shown = await asyncio.to_thread(run_spork, "-c", config, "breakers", "--json")
            [row] = json.loads(shown.stdout)
            assert (row["service"], row["state"], row["forced"]) == ("svc", "open", "open")
            reset = await asyncio.to_thread(run_spork, "-c", config, "breakers", "reset", "svc")
            assert reset.returncode == 0, reset.stderr
            for server in servers:
                await eventually_status(http, server, 200)
    finally:
        for server in servers:
            server.kill()


def test_unknown_service_and_service_without_breaker_are_usage_errors(
    tmp_path: Path, upstream: Upstream, run_spork: SporkRunner
) -> None:
    port, admin = free_ports(2)
    config = tmp_path / "g.toml"
    config.write_text(gateway_toml(port, admin, {"svc": upstream.url}, {"/": "svc"}))
    unknown = run_spork("-c", str(config), "breakers", "open", "nope")
    assert unknown.returncode == 2 and "no service named 'nope'" in unknown.stderr
    plain = run_spork("-c", str(config), "breakers", "open", "svc")
    assert plain.returncode == 2 and "has no [services.breaker]" in plain.stderr
