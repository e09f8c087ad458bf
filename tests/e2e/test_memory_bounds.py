"""`spork serve` on the memory store with a small `state.max_keys`, flooded with distinct
`X-Api-Key` values: a forced-open breaker stays open, a limited client stays limited, the
clients past capacity are refused (503 `limiter-full`, whatever `on_error` says), and a flood
through one route leaves another route's new clients their room and its limits exact."""

from __future__ import annotations

import asyncio
import time
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
LIMIT = 'rate_limit = { requests = 2, per = "1h", key = ["header:X-Api-Key"] }'  # on_error open


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
        if response.status == 503 and response.headers.get("Retry-After") is not None:
            assert int(response.headers["Retry-After"]) >= 1
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

        # One key is the limited client's; the flood fills the rest, then is refused.
        assert sorted(set(flood)) == [(200, ""), (503, "limiter-full")]
        assert flood.count((200, "")) == MAX_KEYS - 1
        assert await answer(http, f"{server.url}/api/x", "limited") == (429, "rate-limited")
        assert await answer(http, f"{server.url}/flaky/x") == (503, "breaker-open")


LOGIN_PERIOD = 2.0  # /login admits 3 per period: one every 2/3 s after the first three
PUBLIC_LIMIT = (
    'rate_limit = { requests = 10, per = "1m", algorithm = "sliding_window", '
    'key = ["header:X-Api-Key"] }'
)


def repro_config(port: int, admin: int, upstream: Upstream) -> str:
    extra = f"""
[state]
max_keys = {MAX_KEYS}

[[services]]
name = "svc"
endpoints = ["{upstream.url}"]

[[routes]]
path = "/login"
service = "svc"
rate_limit = {{ requests = 3, per = "{LOGIN_PERIOD:g}s", key = ["ip"] }}

[[routes]]
path = "/public"
service = "svc"
{PUBLIC_LIMIT}
"""
    return gateway_toml(port, admin, {}, {}, extra=extra)


async def logins(http: aiohttp.ClientSession, server: SporkServer, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        async with http.get(f"{server.url}/login") as response:
            await response.read()
            statuses.append(response.status)
    return statuses


async def flood(http: aiohttp.ClientSession, server: SporkServer, keys: range) -> list[str]:
    """One /public request for each key; each answer as "200" or the problem's slug."""
    answers = await asyncio.gather(*(answer(http, f"{server.url}/public", f"k{i}") for i in keys))
    return [slug or str(status) for status, slug in answers]


async def test_a_flood_through_one_route_neither_unlimits_nor_starves_another(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork
) -> None:
    port, admin = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(repro_config(port, admin, upstream))
    server = await spork_server(config, port, admin)
    async with aiohttp.ClientSession() as http:
        assert await logins(http, server, 5) == [200, 200, 200, 429, 429]

        # /public holds its reserve (a quarter of max_keys, two limited routes sharing half)
        # and the common half; the next are refused, not admitted uncounted.
        answers = await flood(http, server, range(150))
        assert answers.count("200") == 3 * MAX_KEYS // 4
        assert answers.count("limiter-full") == 150 - 3 * MAX_KEYS // 4

        # /login's new clients have room, and their limits count.
        for host in range(2, 7):
            connector = aiohttp.TCPConnector(local_addr=(f"127.0.0.{host}", 0))
            async with aiohttp.ClientSession(connector=connector) as other:
                assert await logins(other, server, 4) == [200, 200, 200, 429]

        async def login_entries_lapsed() -> bool:
            async with http.get(f"{server.admin_url}/api/limits?route=/login") as response:
                rows: list[object] = (await response.json())["limits"]
                return rows == []

        await eventually(login_entries_lapsed, timeout=10.0, what="/login's entries to lapse")
        assert set(await flood(http, server, range(150, 170))) == {"limiter-full"}

        started = time.monotonic()
        statuses = await logins(http, server, 20)
        elapsed = time.monotonic() - started
        # Limited again from its first request: three at once, then one per 2/3 s at most.
        assert statuses[:3] == [200, 200, 200] and 429 in statuses
        assert statuses.count(200) <= 3 + int(elapsed / (LOGIN_PERIOD / 3)) + 1
