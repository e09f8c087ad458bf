"""A running `spork serve` against upstreams that die, stall or speak WebSocket, and clients
that send garbage: the gateway answers as configured and stays healthy."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiohttp
import orjson

from tests.conftest import RepoConfig, StartSpork
from tests.support import LOOPBACK, UpstreamFactory, eventually, free_ports, gateway_toml


async def test_an_endpoint_dying_mid_run_moves_traffic_to_the_other(
    tmp_path: Path,
    spork_server: StartSpork,
    upstream_factory: UpstreamFactory,
    http: aiohttp.ClientSession,
) -> None:
    a, b = await upstream_factory.many("a", "b")
    port, admin = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(
        gateway_toml(
            port,
            admin,
            {"svc": [a.url, b.url]},
            {"/": "svc"},
            service_extra='passive = { failures = 2, cooldown = "1h" }\n'
            'retries = { attempts = 1, backoff = "1ms" }',
        )
    )
    server = await spork_server(config, port, admin)
    seen = set()
    for _ in range(10):
        async with http.get(f"{server.url}/x") as response:
            assert response.status == 200
            seen.add(response.headers["X-Upstream"])
    assert seen == {"a", "b"}

    await a.stop()
    statuses = []
    served_by = []
    for _ in range(40):
        async with http.get(f"{server.url}/x") as response:
            statuses.append(response.status)
            served_by.append(response.headers.get("X-Upstream"))
    # Connect errors are retried on the other endpoint, and the dead one is ejected.
    assert statuses == [200] * 40
    assert set(served_by) == {"b"}
    async with http.get(f"{server.admin_url}/health/services") as health:
        report = orjson.loads(await health.read())
    [svc] = report["services"]
    dead = next(e for e in svc["endpoints"] if e["url"] == a.url)
    assert dead["ejected"] is True


async def test_a_slow_upstream_gives_504_in_time_and_others_keep_working(
    tmp_path: Path,
    spork_server: StartSpork,
    upstream_factory: UpstreamFactory,
    http: aiohttp.ClientSession,
) -> None:
    up = await upstream_factory("slow")
    port, admin = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(
        gateway_toml(port, admin, {"svc": up.url}, {"/": "svc"}, service_extra='timeout = "300ms"')
    )
    server = await spork_server(config, port, admin)
    started = time.monotonic()
    async with http.get(f"{server.url}/slow?ms=3000") as response:
        assert response.status == 504
        assert response.content_type == "application/problem+json"
        body = orjson.loads(await response.read())
    assert time.monotonic() - started < 2.0
    assert body["status"] == 504 and body["request_id"]
    async with http.get(f"{server.url}/fast") as response:
        assert response.status == 200


async def test_websocket_echo_through_the_running_gateway(
    repo_config: RepoConfig, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server = await spork_server(repo_config.path, repo_config.port, repo_config.admin_port)
    async with http.ws_connect(f"{server.url}/api/users/ws") as ws:
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "hello"
        await ws.send_bytes(b"\x00\x01\x02")
        assert (await ws.receive(timeout=5)).data == b"\x00\x01\x02"


def _raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=5) as conn:
        conn.sendall(payload)
        chunks = []
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET /api/users HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET /api/users HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n",
    b"GET /api/users HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    b"POST /api/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(40)),
    # aiohttp's parser lets this through with no target at all.
    b"CONNECT  \r\nHost: x\r\nConnection: close\r\n\r\n",
    # Answered (404) without reading the body, which aiohttp then drains and cannot inflate.
    b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 8\r\n"
    b"Connection: close\r\n\r\nnot gzip",
]


async def test_malformed_requests_get_problem_json_with_security_headers_and_the_gateway_stays_up(
    repo_config: RepoConfig, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server = await spork_server(repo_config.path, repo_config.port, repo_config.admin_port)
    loop = asyncio.get_running_loop()
    for payload in MALFORMED:
        answer = await loop.run_in_executor(None, _raw, repo_config.port, payload)
        assert b"Traceback" not in answer
        assert answer, f"no answer to {payload[:60]!r}"
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]
        assert b"content-type: application/problem+json" in head.lower(), answer[:300]
        assert orjson.loads(body)["status"] == status, answer[:300]
        # The repo's config keeps the default security-header preset.
        assert b"\r\nx-content-type-options: nosniff" in head.lower(), head
        assert b"\r\nx-request-id: " in head.lower(), head
    async with http.get(f"{server.url}/api/users/1") as response:
        assert response.status == 200
    assert server.running
    assert "Traceback" not in server.output()
    # An answer aiohttp makes before routing still has its access-log line.
    await eventually(
        lambda: any(e["method"] == "CONNECT" for e in server.events("request")),
        what="the CONNECT's access-log line",
    )
