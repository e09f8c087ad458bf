"""Three `spork serve` processes on one shared state store, and the checks that they behave as
one gateway: one rate limit, one breaker per service, one revocation list, one instance list.

Every instance serves the same gateway.toml (only the ports differ, from the command line), as
a deployment behind a load balancer would. The state store fails `closed`, so a store error
shows up as a 503 the checks refuse, never as a request quietly admitted.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from tests.authgw.conftest import AUDIENCE, ISSUER, SECRET, bearer, claims, sign
from tests.conftest import CLI_ENV, StartSpork
from tests.support import (
    LOOPBACK,
    SporkRunner,
    SporkServer,
    Upstream,
    assert_problem,
    eventually,
    free_ports,
    gateway_toml,
)

INSTANCES = 3
LIMIT = 12
REQUESTS = 45  # spread evenly over the instances, all in flight at once
FAILURES = 3  # consecutive upstream failures that open a breaker
REVOCATION_CACHE_TTL = 1.0  # auth.revocation_cache_ttl of the fleet
# A breaker state read from the store is trusted for 250 ms (spork_cli.policies.breaker.CACHE_TTL);
# the rest is room for a busy machine.
BREAKER_DEADLINE = 2.0
REVOCATION_DEADLINE = REVOCATION_CACHE_TTL + 2.0
# Services with a breaker; each scenario trips one that no earlier scenario touched.
BREAKERS = ("b1", "b2")


def fleet_toml(state_url: str, upstream: Upstream, flaky: Upstream, port: int, admin: int) -> str:
    """The gateway.toml every instance serves: a rate-limited route, a route that needs a
    token, and one route per breaker service (all breakers on the ``flaky`` upstream)."""
    breakers = "\n".join(
        f"""
[[services]]
name = "{name}"
endpoints = ["{flaky.url}"]
retries = {{ attempts = 0 }}
breaker = {{ failures = {FAILURES}, cooldown = "1m" }}

[[routes]]
path = "/{name}"
service = "{name}"
strip_prefix = true
"""
        for name in BREAKERS
    )
    extra = f"""
[state]
backend = "redis"
url = "{state_url}"
timeout = "1s"
on_error = "closed"

[auth]
algorithms = ["HS256"]
secret = "{SECRET}"
issuer = "{ISSUER}"
audience = ["{AUDIENCE}"]
revocation_cache_ttl = "{REVOCATION_CACHE_TTL:g}s"

[[services]]
name = "svc"
endpoints = ["{upstream.url}"]

[[routes]]
path = "/limited"
service = "svc"
rate_limit = {{ requests = {LIMIT}, per = "1m", key = ["header:X-Client"] }}

[[routes]]
path = "/private"
service = "svc"
auth = "required"
{breakers}"""
    return gateway_toml(port, admin, {}, {}, extra=extra)


@dataclass(frozen=True)
class Reply:
    """One response of an instance, read in full."""

    status: int
    content_type: str
    headers: CIMultiDictProxy[str]
    body: bytes

    async def read(self) -> bytes:
        return self.body


async def problem(reply: Reply, status: int, type: str | None = None) -> dict[str, Any]:
    """`assert_problem` of a reply already read in full."""
    return await assert_problem(reply, status, type)


@dataclass
class Fleet:
    config: Path
    servers: list[SporkServer]
    upstream: Upstream
    flaky: Upstream
    http: aiohttp.ClientSession
    run_spork: SporkRunner

    async def spork(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`spork -c <the fleet's config> ARGS` as a process; asserts it succeeded."""
        result = await asyncio.to_thread(
            self.run_spork, "-c", str(self.config), *args, cwd=self.config.parent, env=CLI_ENV
        )
        assert result.returncode == 0, f"spork {' '.join(args)}\n{result.stdout}{result.stderr}"
        return result

    async def get(
        self, server: SporkServer, path: str, headers: dict[str, str] | None = None
    ) -> Reply:
        """GET ``path`` from one instance."""
        async with self.http.get(f"{server.url}{path}", headers=headers) as response:
            body = await response.read()
            return Reply(response.status, response.content_type, response.headers, body)

    async def status(
        self, server: SporkServer, path: str, headers: dict[str, str] | None = None
    ) -> int:
        return (await self.get(server, path, headers)).status


async def start_fleet(
    tmp_path: Path,
    state_url: str,
    upstream: Upstream,
    flaky: Upstream,
    spork_server: StartSpork,
    http: aiohttp.ClientSession,
    run_spork: SporkRunner,
) -> Fleet:
    """Three instances of one config on the store at ``state_url``, started side by side."""
    ports = free_ports(2 * INSTANCES)
    config = tmp_path / "gateway.toml"
    # The file names the first instance's ports; every instance gets its own on the command
    # line, as `spork serve --port --admin-port` would on three hosts.
    config.write_text(fleet_toml(state_url, upstream, flaky, ports[0], ports[1]))
    servers = await asyncio.gather(
        *(
            spork_server(config, ports[2 * i], ports[2 * i + 1], "--no-reload")
            for i in range(INSTANCES)
        )
    )
    return Fleet(config, list(servers), upstream, flaky, http, run_spork)


# -- (a) one rate limit ---------------------------------------------------------------------


async def assert_one_rate_limit(fleet: Fleet, client: str) -> None:
    """``REQUESTS`` requests of one client, spread over the instances and all in flight at
    once: exactly ``LIMIT`` reach the upstream, every other one is a 429 problem."""
    headers = {"X-Client": client}

    async def hit(n: int) -> Reply:
        return await fleet.get(fleet.servers[n % INSTANCES], f"/limited/{n}", headers)

    responses = await asyncio.gather(*(hit(n) for n in range(REQUESTS)))
    statuses = [response.status for response in responses]
    assert (statuses.count(200), statuses.count(429)) == (LIMIT, REQUESTS - LIMIT), statuses
    for response in responses:
        if response.status == 429:
            await problem(response, 429, "rate-limited")
            assert int(response.headers["Retry-After"]) >= 1
    forwarded = [r for r in fleet.upstream.requests if r.headers.get("X-Client") == client]
    assert len(forwarded) == LIMIT


# -- (b) one breaker per service ------------------------------------------------------------


async def breaker_open_everywhere(fleet: Fleet, service: str) -> None:
    """Every instance answers 503 breaker-open for the service without calling upstream."""
    before = len(fleet.flaky.requests)
    for server in fleet.servers:
        body = await problem(await fleet.get(server, f"/{service}/status/200"), 503)
        assert body["type"].endswith(":breaker-open"), body
        assert body["service"] == service
    assert len(fleet.flaky.requests) == before, "an instance called the upstream anyway"


async def eventually_everywhere(fleet: Fleet, path: str, wanted: int, what: str) -> None:
    """Every instance answers ``path`` with ``wanted`` within ``BREAKER_DEADLINE``."""

    async def answers(server: SporkServer) -> bool:
        return await fleet.status(server, path) == wanted

    for server in fleet.servers:
        await eventually(
            partial(answers, server),
            timeout=BREAKER_DEADLINE,
            interval=0.05,
            what=f"{server.url}: {what}",
        )


async def breaker_row(fleet: Fleet, service: str) -> dict[str, Any]:
    shown = await fleet.spork("breakers", "--json")
    rows: dict[str, dict[str, Any]] = {row["service"]: row for row in json.loads(shown.stdout)}
    return rows[service]


async def assert_one_breaker(fleet: Fleet, service: str, via: int) -> None:
    """Failures through instance ``via`` open the service's breaker for all three; `spork
    breakers` shows it open; `spork breakers close|open` applies on every instance."""
    tripping = fleet.servers[via]
    before = len(fleet.flaky.requests)
    statuses = [await fleet.status(tripping, f"/{service}/status/500") for _ in range(FAILURES)]
    assert statuses == [500] * FAILURES
    assert len(fleet.flaky.requests) == before + FAILURES
    # The last failure was recorded in the store before its 500 was sent, and the other
    # instances have no cached view of this breaker: the very next request is refused.
    await breaker_open_everywhere(fleet, service)

    row = await breaker_row(fleet, service)
    assert (row["state"], row["failures"], row["forced"]) == ("open", FAILURES, None), row

    await fleet.spork("breakers", "close", service)
    await eventually_everywhere(fleet, f"/{service}/status/200", 200, "forced closed")
    await fleet.spork("breakers", "open", service)
    await eventually_everywhere(fleet, f"/{service}/status/200", 503, "forced open")
    await breaker_open_everywhere(fleet, service)


# -- (c) one revocation list ----------------------------------------------------------------


async def refused_as_revoked(fleet: Fleet, server: SporkServer, token: str) -> bool:
    response = await fleet.get(server, "/private/me", bearer(token))
    if response.status == 200:
        return False
    body = await problem(response, 401)
    assert body["reason"] == "revoked", body
    return True


async def assert_one_revocation_list(
    fleet: Fleet, revoke: Callable[[str, dict[str, Any]], Awaitable[int | None]]
) -> None:
    """A token every instance has accepted (and cached) is refused by all three within
    ``auth.revocation_cache_ttl`` of being revoked; another token stays good.

    ``revoke(token, claims)`` revokes it and returns the index of the instance whose admin API
    it used (that one must refuse at once), or None.
    """
    payload = claims(exp=int(time.time()) + 600)
    token, bystander = sign(payload), sign(claims(sub="bob"))
    for server in fleet.servers:
        for jwt in (token, token, bystander):  # the second is answered from the cache
            assert await fleet.status(server, "/private/me", bearer(jwt)) == 200

    through = await revoke(token, payload)
    started = time.monotonic()
    if through is not None:
        assert await refused_as_revoked(fleet, fleet.servers[through], token)
    for server in fleet.servers:
        await eventually(
            partial(refused_as_revoked, fleet, server, token),
            timeout=REVOCATION_DEADLINE,
            interval=0.05,
            what=f"{server.url} refusing the revoked token",
        )
    took = time.monotonic() - started
    assert took <= REVOCATION_DEADLINE, took
    for server in fleet.servers:
        assert await fleet.status(server, "/private/me", bearer(bystander)) == 200


def revoke_with_cli(fleet: Fleet) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    async def revoke(token: str, payload: dict[str, Any]) -> None:
        result = await fleet.spork("token", "revoke", token)
        assert payload["jti"] in result.stdout

    return revoke


def revoke_with_admin_api(
    fleet: Fleet, index: int
) -> Callable[[str, dict[str, Any]], Awaitable[int]]:
    async def revoke(token: str, payload: dict[str, Any]) -> int:
        url = f"{fleet.servers[index].admin_url}/api/revocations"
        async with fleet.http.post(url, json={"jti": payload["jti"], "ttl": 600}) as response:
            assert response.status == 200, await response.text()
        return index

    return revoke


# -- (d) one instance list ------------------------------------------------------------------


async def assert_one_instance_list(fleet: Fleet) -> None:
    """`spork instances` lists every instance: its pid, listener and admin listener."""
    wanted = {(s.pid, f"{LOOPBACK}:{s.port}", f"{LOOPBACK}:{s.admin_port}") for s in fleet.servers}

    async def listed() -> set[tuple[int, str, str]] | None:
        result = await fleet.spork("instances", "--json")
        seen = {(i["pid"], i["listen"], i["admin"]) for i in orjson.loads(result.stdout)}
        return seen if seen == wanted else None

    # Each instance writes its heartbeat as it starts; allow for one still on its way.
    await eventually(listed, timeout=10.0, interval=0.2, what="spork instances listing all")
