"""Three gateway processes sharing one Redis admit exactly the configured limit between them,
on a single redis-server and on a 3-node Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import SporkServer, Upstream, free_ports, gateway_toml

LIMIT = 20
REQUESTS = 75


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[list[SporkServer]]:
    started: list[SporkServer] = []
    yield started
    for server in started:
        server.kill()


async def run_three(
    tmp_path: Path, state_url: str, upstream_url: str, started: list[SporkServer]
) -> list[int]:
    for i in range(3):
        port, admin = free_ports(2)
        config = tmp_path / f"gateway-{i}.toml"
        config.write_text(
            gateway_toml(
                port,
                admin,
                {"svc": upstream_url},
                {"/": "svc"},
                route_extra=f'rate_limit = {{ requests = {LIMIT}, per = "1m", key = ["route"] }}',
                extra=f'[state]\nbackend = "redis"\nurl = "{state_url}"\ntimeout = "500ms"',
            )
        )
        server = SporkServer(config, port, admin, tmp_path / f"server-{i}")
        started.append(server)
    await asyncio.gather(*(s.start() for s in started))
    async with aiohttp.ClientSession() as http:

        async def hit(n: int) -> int:
            server = started[n % 3]
            async with http.get(f"{server.url}/x") as response:
                await response.read()
                return response.status

        gate = asyncio.Semaphore(12)

        async def bounded(n: int) -> int:
            async with gate:
                return await hit(n)

        return await asyncio.gather(*(bounded(n) for n in range(REQUESTS)))


@pytest.mark.observes("state.backend", "state.url")
async def test_three_gateways_on_one_redis_admit_exactly_the_limit(
    tmp_path: Path, redis_url: str, upstream: Upstream, servers: list[SporkServer]
) -> None:
    statuses = await run_three(tmp_path, redis_url, upstream.url, servers)
    assert statuses.count(200) == LIMIT
    assert statuses.count(429) == REQUESTS - LIMIT


async def test_three_gateways_on_a_cluster_admit_exactly_the_limit(
    tmp_path: Path, redis_cluster_url: str, upstream: Upstream, servers: list[SporkServer]
) -> None:
    statuses = await run_three(tmp_path, redis_cluster_url, upstream.url, servers)
    assert statuses.count(200) == LIMIT
    assert statuses.count(429) == REQUESTS - LIMIT
