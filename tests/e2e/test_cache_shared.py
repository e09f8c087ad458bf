"""Two `spork serve` processes sharing one redis-server share one response cache: what one
fetched, the other serves, and `spork cache purge` empties it for both."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from tests.conftest import StartSpork
from tests.support import (
    SporkRunner,
    SporkServer,
    Upstream,
    eventually,
    free_ports,
    gateway_toml,
)

CACHED = 'name = "shared"\ncache = { ttl = "30s", default_ttl = "30s" }'


async def get(http: aiohttp.ClientSession, server: SporkServer, path: str) -> tuple[str, bytes]:
    # One name for both, as behind a load balancer: the Host is part of the cache key.
    async with http.get(server.url + path, headers={"Host": "api.example"}) as response:
        assert response.status == 200
        return response.headers["X-Cache"], await response.read()


async def test_a_miss_on_one_gateway_is_a_hit_on_the_other_and_purge_empties_both(
    tmp_path: Path,
    upstream: Upstream,
    redis_url: str,
    spork_server: StartSpork,
    run_spork: SporkRunner,
    http: aiohttp.ClientSession,
) -> None:
    state = f'[state]\nbackend = "redis"\nurl = "{redis_url}"\ntimeout = "500ms"'
    configs: list[tuple[Path, int, int]] = []
    for name in ("a", "b"):
        port, admin = free_ports(2)
        path = tmp_path / f"{name}.toml"
        services, routes = {"svc": upstream.url}, {"/api/": "svc"}
        path.write_text(
            gateway_toml(port, admin, services, routes, route_extra=CACHED, extra=state)
        )
        configs.append((path, port, admin))
    a, b = await asyncio.gather(*(spork_server(*config) for config in configs))

    # The echo body carries the request id of the request that reached the upstream, so an
    # identical body on the other gateway can only have come from the shared cache.
    miss_a, body_x = await get(http, a, "/api/x")
    hit_b, shared_x = await get(http, b, "/api/x")
    miss_b, body_y = await get(http, b, "/api/y")
    hit_a, shared_y = await get(http, a, "/api/y")
    assert (miss_a, hit_b, miss_b, hit_a) == ("MISS", "HIT", "MISS", "HIT")
    assert (shared_x, shared_y) == (body_x, body_y)
    assert len(upstream.requests) == 2

    def spork(*args: str) -> str:
        result = run_spork("-c", str(configs[0][0]), "cache", *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    async def counted() -> bool:
        # Each gateway adds its counts to Redis's every half second.
        [row] = json.loads(await asyncio.to_thread(spork, "stats", "--json"))
        return (row["entries"], row["hits"], row["misses"], row["stores"]) == (2, 2, 2, 2)

    await eventually(counted, what="both gateways' counts in Redis")
    purged = await asyncio.to_thread(spork, "purge")
    assert purged.strip() == "purged 2 cached responses of every cached route"

    assert [(await get(http, a, "/api/y"))[0], (await get(http, b, "/api/x"))[0]] == [
        "MISS",
        "MISS",
    ]
    assert len(upstream.requests) == 4
    assert [(await get(http, a, "/api/x"))[0], (await get(http, b, "/api/y"))[0]] == [
        "HIT",
        "HIT",
    ]
