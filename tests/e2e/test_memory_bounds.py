"""`spork serve` on the memory store with a small `state.max_keys`, flooded with distinct
`X-Api-Key` values: a forced-open breaker stays open, a limited client stays limited, and the
clients past capacity get the route's `on_error` (here `closed`: a 503 problem)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson

from tests.conftest import StartSpork
from tests.support import (
    SporkRunner,
    SporkServer,
    Upstream,
    eventually,
    free_ports,
    gateway_toml,
)

MAX_KEYS = 100
FLOOD = 500
LIMIT = 'rate_limit = { requests = 2, per = "1h", key = ["header:X-Api-Key"], on_error = "closed" }'


def config_text(port: int, admin: int, upstream: Upstream) -> str:
    extra = f"""
[state]
max_keys = {MAX_KEYS}

[[services]]
name = "flaky"
endpoints = ["{upstream.url}"]
breaker = {{ failures = 3, cooldown = "1h", max_cooldown = "1h" }}

[[services]]
name = "svc"
endpoints = ["{upstream.url}"]

[[routes]]
path = "/flaky/"
service = "flaky"

[[routes]]
path = "/api/"
service = "svc"
{LIMIT}
"""
    return gateway_toml(port, admin, {}, {}, extra=extra)


async def answer(http: aiohttp.ClientSession, url: str, api_key: str = "-") -> tuple[int, str]:
    """The status and, for a problem, its type's last part."""
    async with http.get(url, headers={"X-Api-Key": api_key}) as response:
        body = await response.read()
        if response.content_type != "application/problem+json":
            return response.status, ""
        return response.status, str(orjson.loads(body)["type"]).rsplit(":", 1)[-1]


async def flaky_refused(http: aiohttp.ClientSession, server: SporkServer) -> bool:
    return (await answer(http, f"{server.url}/flaky/x"))[0] == 503


async def test_a_flood_of_client_keys_evicts_neither_a_forced_breaker_nor_a_live_limit(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, run_spork: SporkRunner
) -> None:
    port, admin = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(config_text(port, admin, upstream))
    server = await spork_server(config, port, admin)
    async with aiohttp.ClientSession() as http:
        forced = await asyncio.to_thread(run_spork, "-c", str(config), "breakers", "open", "flaky")
        assert forced.returncode == 0, forced.stderr
        # the gateway's breaker cache sees the forced state within 250 ms
        await eventually(lambda: flaky_refused(http, server), what="the forced breaker refusing")
        limited = [await answer(http, f"{server.url}/api/x", "limited") for _ in range(3)]
        assert [status for status, _ in limited] == [200, 200, 429]

        flood: list[tuple[int, str]] = []
        for start in range(0, FLOOD, 50):
            flood += await asyncio.gather(
                *(
                    answer(http, f"{server.url}/api/x", f"flood-{i}")
                    for i in range(start, start + 50)
                )
            )

        # One key is the limited client's; the flood fills the rest, then gets on_error.
        assert sorted(set(flood)) == [(200, ""), (503, "state-unavailable")]
        assert flood.count((200, "")) == MAX_KEYS - 1
        assert await answer(http, f"{server.url}/api/x", "limited") == (429, "rate-limited")
        assert await answer(http, f"{server.url}/flaky/x") == (503, "breaker-open")
