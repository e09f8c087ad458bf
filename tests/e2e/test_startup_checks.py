"""`spork serve` says at start, one line each, which service endpoint or state store it cannot
reach, and serves anyway; a Redis outage while serving is one line when it begins and one
when it ends (with the count of failed operations), however many requests it hits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartSpork
from tests.support import (
    LOOPBACK,
    RedisServer,
    SporkServer,
    Upstream,
    eventually,
    free_ports,
    gateway_toml,
    refuses,
    require_binary,
    self_signed_certificate,
    start_redis_server,
)

ENDPOINT_DOWN = "service endpoint unreachable: "
STORE_DOWN = "state store unreachable: "
STORE_BACK = "state store reachable again"
PASSWORD = "the-right-one"
LIMITED = 'rate_limit = { requests = 1000, per = "1h", key = ["route"] }'


def lines(server: SporkServer, start: str) -> list[dict[str, Any]]:
    return [e for e in server.events() if str(e.get("event", "")).startswith(start)]


def redis_state(url: str, on_error: str = "open") -> str:
    return (
        f'[state]\nbackend = "redis"\nurl = "{url}"\ntimeout = "100ms"\non_error = "{on_error}"\n'
    )


async def closed_port() -> int:
    (port,) = free_ports(1)
    assert await refuses(port)
    return port


async def state_errors(http: aiohttp.ClientSession, server: SporkServer) -> dict[str, float]:
    async with http.get(f"{server.admin_url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        sample.labels["op"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "spork_state_errors_total"
    }


async def test_an_endpoint_that_refuses_is_one_line_at_start_and_the_other_service_serves(
    tmp_path: Path, spork_server: StartSpork, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    port, admin = free_ports(2)
    down = f"http://{LOOPBACK}:{await closed_port()}"
    config = tmp_path / "gateway.toml"
    services = {"gone": down, "here": upstream.url}
    config.write_text(gateway_toml(port, admin, services, {"/gone": "gone", "/here": "here"}))
    server = await spork_server(config, port, admin, "--no-reload")

    async with http.get(f"{server.url}/here/x") as response:
        assert response.status == 200
        assert response.headers["X-Upstream"] == "upstream"
    await eventually(lambda: lines(server, ENDPOINT_DOWN), what="the unreachable endpoint's line")
    assert await server.stop() == 0, server.output()  # every line written
    found = [(e["service"], e["endpoint"], e["event"]) for e in lines(server, ENDPOINT_DOWN)]
    assert found == [("gone", down, ENDPOINT_DOWN + "connection refused")]


async def test_with_workers_the_line_is_said_once_not_by_every_worker(
    tmp_path: Path, spork_server: StartSpork, upstream: Upstream
) -> None:
    port, admin = free_ports(2)
    down = f"http://{LOOPBACK}:{await closed_port()}"
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_toml(port, admin, {"gone": down, "here": upstream.url}, {}))
    server = await spork_server(config, port, admin, "--no-reload", "--workers", "2", serving=2)

    await eventually(lambda: lines(server, ENDPOINT_DOWN), what="the unreachable endpoint's line")
    assert await server.stop() == 0, server.output()  # workers included: every line written
    assert [e["service"] for e in lines(server, ENDPOINT_DOWN)] == ["gone"]


async def test_a_redis_with_nothing_listening_is_one_line_and_requests_follow_on_error(
    tmp_path: Path, spork_server: StartSpork, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    port, admin = free_ports(2)
    store_port = await closed_port()
    url = f"redis://:{PASSWORD}@{LOOPBACK}:{store_port}/0"
    config = tmp_path / "gateway.toml"
    config.write_text(
        gateway_toml(
            port, admin, {"svc": upstream.url}, {"/": "svc"}, route_extra=LIMITED,
            extra=redis_state(url, on_error="open"),
        )
    )  # fmt: skip
    server = await spork_server(config, port, admin, "--no-reload")

    for _ in range(5):
        async with http.get(f"{server.url}/x") as response:
            # `open`: let through, with no limiter to say how many are left
            assert response.status == 200
            assert "X-RateLimit-Remaining" not in response.headers
    assert (await state_errors(http, server)).get("ratelimit") == 5
    assert await server.stop() == 0, server.output()
    found = [(e["store"], e["event"]) for e in lines(server, STORE_DOWN)]
    redacted = f"redis://:[redacted]@{LOOPBACK}:{store_port}/0"
    assert found == [(redacted, STORE_DOWN + "connection refused")]
    assert PASSWORD not in server.output()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own: the outage test kills it, and no other test may
    lose its store to that."""
    server = start_redis_server(require_binary("redis-server"), tmp_path / "own-redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def protected_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of its own that requires `PASSWORD` (set once it answers: the helper's
    readiness PING carries no password)."""
    server = start_redis_server(require_binary("redis-server"), tmp_path / "redis")
    try:
        with server.client(socket_timeout=5) as client:
            client.config_set("requirepass", PASSWORD)
        yield server
    finally:
        server.stop()


async def test_a_wrong_redis_password_is_one_line_saying_so(
    tmp_path: Path, spork_server: StartSpork, upstream: Upstream, protected_redis: RedisServer
) -> None:
    port, admin = free_ports(2)
    url = f"redis://:not-{PASSWORD}@{LOOPBACK}:{protected_redis.port}/0"
    config = tmp_path / "gateway.toml"
    config.write_text(
        gateway_toml(
            port, admin, {"svc": upstream.url}, {"/": "svc"}, route_extra=LIMITED,
            extra=redis_state(url),
        )
    )  # fmt: skip
    server = await spork_server(config, port, admin, "--no-reload")

    await eventually(lambda: lines(server, STORE_DOWN), what="the store's line")
    assert await server.stop() == 0, server.output()
    found = [e["event"] for e in lines(server, STORE_DOWN)]
    assert found == [STORE_DOWN + "wrong password (or user) in the state URL"]
    assert f"not-{PASSWORD}" not in server.output()


async def test_redis_killed_and_restarted_is_one_line_each_way_with_the_failed_count(
    tmp_path: Path,
    spork_server: StartSpork,
    upstream: Upstream,
    own_redis: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    port, admin = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(
        gateway_toml(
            port, admin, {"svc": upstream.url}, {"/": "svc"}, route_extra=LIMITED,
            extra=redis_state(own_redis.url),
        )
    )  # fmt: skip
    server = await spork_server(config, port, admin, "--no-reload")

    async def limited() -> bool:
        async with http.get(f"{server.url}/x") as response:
            assert response.status == 200
            return "X-RateLimit-Remaining" in response.headers

    assert await limited()
    assert await state_errors(http, server) == {}
    failed = 0
    try:
        await asyncio.to_thread(own_redis.stop, kill=True)
        for _ in range(20):
            failed += not await limited()
        began = await eventually(lambda: lines(server, STORE_DOWN), what="the outage's line")
    finally:
        await asyncio.to_thread(own_redis.start)
    ended = await eventually(lambda: lines(server, STORE_BACK), what="the end of the outage")
    assert await limited()

    errors = await state_errors(http, server)
    assert failed == 20 and errors.get("ratelimit") == failed
    assert [e["failed_operations"] for e in ended] == [sum(errors.values())]
    assert ended[0]["event"].endswith(f"; {int(sum(errors.values()))} operations failed")
    assert await server.stop() == 0, server.output()
    assert len(lines(server, STORE_DOWN)) == len(began) == 1
    assert len(lines(server, STORE_BACK)) == 1
    assert [e for e in server.events() if e.get("level") == "warning"] == began + ended


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[int]:
    """The TLS port of a redis-server of its own whose certificate is self-signed."""
    cert, key = self_signed_certificate(tmp_path)
    (tls_port,) = free_ports(1)
    tls = ("--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key))
    tls += ("--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no")
    server = start_redis_server(require_binary("redis-server"), tmp_path / "redis", extra_args=tls)
    try:
        yield tls_port
    finally:
        server.stop()


async def test_a_redis_certificate_not_trusted_is_one_line_saying_so(
    tmp_path: Path, spork_server: StartSpork, upstream: Upstream, tls_redis: int
) -> None:
    port, admin = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(
        gateway_toml(
            port, admin, {"svc": upstream.url}, {"/": "svc"}, route_extra=LIMITED,
            extra=redis_state(f"rediss://{LOOPBACK}:{tls_redis}/0"),
        )
    )  # fmt: skip
    server = await spork_server(config, port, admin, "--no-reload", env={"SSL_CERT_FILE": None})

    await eventually(lambda: lines(server, STORE_DOWN), what="the store's line")
    assert await server.stop() == 0, server.output()
    (line,) = [e["event"] for e in lines(server, STORE_DOWN)]
    # OpenSSL 3 says "self-signed", 1.1 "self signed"
    assert line.replace("self signed", "self-signed") == (
        STORE_DOWN + "TLS certificate rejected: self-signed certificate"
    )
