"""`spork serve` and `spork limits` with their state behind a real Redis Sentinel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from spork_cli.state import limit_key
from tests.conftest import StartSpork
from tests.support import SporkRunner, Upstream, free_ports, gateway_toml
from tests.support.sentinel import RedisSentinel, keys_on

LIMIT = 5
RATE_LIMIT = f'rate_limit = {{ requests = {LIMIT}, per = "1m", key = ["header:X-Client"] }}'


def write_config(tmp_path: Path, name: str, upstream: Upstream, url: str) -> tuple[Path, int, int]:
    port, admin = free_ports(2)
    config = tmp_path / f"{name}.toml"
    state = f'[state]\nbackend = "redis"\nurl = "{url}"\ntimeout = "500ms"'
    config.write_text(
        gateway_toml(
            port,
            admin,
            {"svc": upstream.url},
            {"/api/": "svc"},
            route_extra=RATE_LIMIT,
            extra=state,
        )
    )
    return config, port, admin


async def test_gateways_share_a_limit_through_the_sentinel_discovered_master(
    tmp_path: Path,
    redis_sentinel: RedisSentinel,
    redis_sentinel_url: str,
    upstream: Upstream,
    spork_server: StartSpork,
    http: aiohttp.ClientSession,
    run_spork: SporkRunner,
) -> None:
    configs = [write_config(tmp_path, f"g{i}", upstream, redis_sentinel_url) for i in range(2)]
    servers = await asyncio.gather(*(spork_server(*config) for config in configs))

    # Two gateways, requests alternating between them: together they admit exactly the limit.
    statuses = []
    for i in range(LIMIT + 2):
        server = servers[i % 2]
        async with http.get(f"{server.url}/api/x", headers={"X-Client": "alpha"}) as response:
            statuses.append(response.status)
    assert statuses == [200] * LIMIT + [429] * 2
    async with http.get(f"{servers[0].url}/api/x", headers={"X-Client": "beta"}) as response:
        assert response.status == 200
    assert len(upstream.requests) == LIMIT + 1

    key = limit_key("spork", "/api/", "header:x-client=alpha")
    assert key in keys_on(redis_sentinel.master)

    # The CLI finds the same master through the sentinels named in the config.
    result = await asyncio.to_thread(run_spork, "-c", str(configs[0][0]), "limits", "--json")
    assert result.returncode == 0, result.stderr
    left = {row["client"]: row["remaining"] for row in json.loads(result.stdout)}
    assert left == {"header:x-client=alpha": 0, "header:x-client=beta": LIMIT - 1}
