"""Revocation shared through a real redis-server: two `spork serve` processes see a token
revoked by the CLI (or by the other's admin API) at once; Redis outages follow on_error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from spork_cli.config.model import GatewayConfig
from tests.authgw.conftest import (
    AUDIENCE,
    ISSUER,
    SECRET,
    Client,
    auth_section,
    bearer,
    claims,
    echoed,
    gateway_config,
    problem,
    sign,
    unverified,
)
from tests.conftest import StartSpork
from tests.support import (
    RedisServer,
    Upstream,
    eventually,
    free_ports,
    gateway_toml,
    run_spork,
)

Gateway = Callable[[GatewayConfig], Awaitable[Client]]


def redis_gateway_toml(upstream: Upstream, redis_url: str, port: int, admin_port: int) -> str:
    extra = f"""
[state]
backend = "redis"
url = "{redis_url}"
on_error = "closed"

[auth]
algorithms = ["HS256"]
secret = "{SECRET}"
issuer = "{ISSUER}"
audience = ["{AUDIENCE}"]
"""
    return gateway_toml(
        port,
        admin_port,
        {"svc": upstream.url},
        {"/api": "svc"},
        route_extra='auth = "required"',
        extra=extra,
    )


async def status_of(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any]:
    async with http.get(url, headers=bearer(token)) as response:
        raw = await response.read()
        body = orjson.loads(raw) if response.status != 200 else None
        return response.status, body


async def refused(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any] | None:
    status, body = await status_of(http, url, token)
    return (status, body) if status != 200 else None


async def test_revocation_in_redis_is_seen_by_both_gateways(
    tmp_path: Path,
    upstream: Upstream,
    redis_url: str,
    redis_server: RedisServer,
    spork_server: StartSpork,
    http: aiohttp.ClientSession,
) -> None:
    port_a, admin_a, port_b, admin_b = free_ports(4)
    config = tmp_path / "gateway.toml"
    config.write_text(redis_gateway_toml(upstream, redis_url, port_a, admin_a))
    a, b = await asyncio.gather(
        spork_server(config, port_a, admin_a, "--no-reload"),
        spork_server(config, port_b, admin_b, "--no-reload"),
    )
    urls = (f"{a.url}/api/x", f"{b.url}/api/x")
    payload = claims(exp=int(time.time()) + 600)
    token, spare, bystander = sign(payload), sign(claims()), sign(claims(sub="bob"))
    for url in urls:
        for jwt in (token, token, spare, bystander):  # the second is served from the cache
            assert (await status_of(http, url, jwt))[0] == 200

    revoked_at = time.time()
    result = await asyncio.to_thread(
        run_spork, "-c", str(config), "token", "revoke", token, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f"in {redis_url}" in result.stdout
    # Each gateway asks the store again once its last check is older than
    # auth.revocation_cache_ttl (1 s).
    for url in urls:
        status, body = await eventually(
            lambda url=url: refused(http, url, token), timeout=3.0, what=f"{url} refusing"
        )
        assert (status, body["reason"]) == (401, "revoked")
        assert (await status_of(http, url, bystander))[0] == 200

    key = f"spork:{{jwt}}:revoked:{payload['jti']}"
    with redis_server.client(socket_timeout=5) as client:
        assert client.exists(key) == 1
        ttl = client.pttl(key) / 1000
    remaining = payload["exp"] - revoked_at
    assert remaining - 5 <= ttl <= remaining + 1, (ttl, remaining)

    # Revoked through one gateway's admin API, the token is refused by the other too.
    spare_jti = unverified(spare)["jti"]
    async with http.post(
        f"{a.admin_url}/api/revocations", json={"jti": spare_jti, "ttl": 60}
    ) as response:
        assert response.status == 200, await response.text()
    status, body = await eventually(
        lambda: refused(http, urls[1], spare), timeout=3.0, what="the other gateway refusing"
    )
    assert (status, body["reason"]) == (401, "revoked")

    # verify reads Redis itself and names the revocation.
    result = await asyncio.to_thread(
        run_spork, "-c", str(config), "token", "verify", token, cwd=tmp_path
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert any(line.startswith("FAIL") and "revoked" in line for line in result.stdout.splitlines())


@pytest.mark.parametrize("policy", ["closed", "open", "local"])
async def test_redis_outage_follows_on_error(
    gateway: Gateway,
    upstream: Upstream,
    redis_url: str,
    redis_server: RedisServer,
    policy: str,
) -> None:
    state = {"backend": "redis", "url": redis_url, "on_error": policy}
    # Asked on every request, so the outage meets the cached token too.
    auth = auth_section(revocation_cache_ttl="0s")
    client = await gateway(gateway_config(upstream.url, auth=auth, state=state))
    cached = sign(claims())
    await echoed(await client.get("/private", headers=bearer(cached)))

    redis_server.stop()
    try:
        for token in (cached, sign(claims(sub="fresh"))):
            started = time.monotonic()
            response = await client.get("/private", headers=bearer(token))
            if policy == "closed":
                body = await problem(response, 503)
                assert body["type"] == "urn:spork:problem:state-unavailable"
                assert "Traceback" not in body["detail"]
            else:
                await echoed(response)
            assert time.monotonic() - started < 1.0
        # Routes that check no token do not touch the store.
        await echoed(await client.get("/open"))
    finally:
        redis_server.start()

    async def served() -> bool:
        response = await client.get("/private", headers=bearer(cached))
        await response.read()
        return response.status == 200

    await eventually(served, timeout=10.0, interval=0.05, what="the gateway after Redis returned")
