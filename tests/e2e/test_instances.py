"""`spork instances` lists running gateways from their heartbeats."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.support import SporkRunner, SporkServer, Upstream, free_ports, gateway_toml


def write_config(tmp_path: Path, name: str, upstream: Upstream, state: str) -> SporkServer:
    port, admin = free_ports(2)
    config = tmp_path / f"{name}.toml"
    config.write_text(gateway_toml(port, admin, {"svc": upstream.url}, {"/": "svc"}, extra=state))
    return SporkServer(config, port, admin, tmp_path / name)


async def test_gateways_sharing_redis_are_all_listed(
    tmp_path: Path, redis_url: str, upstream: Upstream, run_spork: SporkRunner
) -> None:
    state = f'[state]\nbackend = "redis"\nurl = "{redis_url}"\ntimeout = "500ms"'
    servers = [write_config(tmp_path, f"g{i}", upstream, state) for i in range(2)]
    try:
        await asyncio.gather(*(s.start() for s in servers))
        result = await asyncio.to_thread(
            run_spork, "-c", str(servers[0].config), "instances", "--json"
        )
        assert result.returncode == 0, result.stderr
        listed = json.loads(result.stdout)
        assert sorted(i["pid"] for i in listed) == sorted(s.pid for s in servers)
        assert {i["listen"] for i in listed} == {f"127.0.0.1:{s.port}" for s in servers}
    finally:
        for server in servers:
            server.kill()


async def test_memory_state_lists_the_running_gateway_itself(
    tmp_path: Path, upstream: Upstream, run_spork: SporkRunner
) -> None:
    server = write_config(tmp_path, "solo", upstream, "")
    try:
        await server.start()
        result = await asyncio.to_thread(run_spork, "-c", str(server.config), "instances")
        assert result.returncode == 0, result.stderr
        assert str(server.pid) in result.stdout
    finally:
        server.kill()
    gone = await asyncio.to_thread(run_spork, "-c", str(server.config), "instances")
    assert gone.returncode == 2
    assert gone.stderr.startswith("spork: cannot reach")
