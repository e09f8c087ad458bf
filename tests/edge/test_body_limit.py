"""Body limits end to end, on a plain route (the proxy counts) and on a validated one (the
validator counts): 413 problem+json as soon as the Content-Length or the streamed bytes pass the
limit, while the client is still sending, and without the body reaching the upstream."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from spork_cli.config.model import GatewayConfig
from tests.edge.conftest import Backend, Connect, Gateway, edge_config

LIMIT = 4096
KINDS = ["plain", "validated"]


@pytest.fixture
def limited(backend: Backend, tmp_path: Path) -> GatewayConfig:
    schema = tmp_path / "any.json"
    schema.write_text(json.dumps({"type": "object"}))
    return edge_config(
        backend.url,
        {"path": "/plain", "max_body": f"{LIMIT}B"},
        {"path": "/validated", "max_body": f"{LIMIT}B", "body_schema": str(schema)},
    )


def head(path: str, framing: str) -> bytes:
    return (
        f"POST /{path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n\r\n"
    ).encode()


def assert_413(status: int, body: bytes) -> None:
    assert status == 413, body
    problem = orjson.loads(body)
    assert problem["type"] == "urn:spork:problem:body-too-large"
    assert problem["detail"] == f"the request body is larger than {LIMIT} bytes"


@pytest.mark.parametrize("kind", KINDS)
async def test_content_length_over_the_limit_is_refused_before_any_byte(
    gateway: Gateway,
    limited: GatewayConfig,
    backend: Backend,
    raw_connection: Connect,
    kind: str,
) -> None:
    client = await gateway(limited)
    connection = await raw_connection(client)
    # Announces a gigabyte and sends none of it: only an answer that does not wait can come.
    await connection.send(head(kind, "Content-Length: 1000000000"))
    status, headers, body = await connection.head()
    assert_413(status, body)
    assert headers["Content-Type"] == "application/problem+json"
    assert backend.calls == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_chunked_body_is_cut_off_once_it_passes_the_limit(
    gateway: Gateway,
    limited: GatewayConfig,
    backend: Backend,
    raw_connection: Connect,
    kind: str,
) -> None:
    client = await gateway(limited)
    connection = await raw_connection(client)
    await connection.send(head(kind, "Transfer-Encoding: chunked"))
    # One kilobyte at a time, waiting for each to be taken; the body never ends, so the 413
    # can only come from counting, not from having read it all.
    chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
    for _ in range(LIMIT // 1024 + 1):
        await connection.send(chunk)
    status, _, body = await connection.head()
    assert_413(status, body)
    if kind == "validated":
        assert backend.calls == 0
    else:
        # The proxy streams what it was given and stops at the limit: nothing complete arrives.
        assert all(len(seen.body) <= LIMIT for seen in backend.seen)


@pytest.mark.parametrize("kind", KINDS)
async def test_chunked_body_at_the_limit_goes_through(
    gateway: Gateway,
    limited: GatewayConfig,
    backend: Backend,
    raw_connection: Connect,
    kind: str,
) -> None:
    client = await gateway(limited)
    connection = await raw_connection(client)
    payload = b"{" + b" " * (LIMIT - 2) + b"}"
    await connection.send(head(kind, "Transfer-Encoding: chunked"))
    await connection.send(f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n")
    status, _, body = await connection.head()
    assert status == 200, body
    [seen] = backend.seen
    assert seen.body == payload


async def test_content_length_over_the_limit_via_a_client_library(
    gateway: Gateway, limited: GatewayConfig, backend: Backend
) -> None:
    client = await gateway(limited)
    data = b"{" + b" " * LIMIT + b"}"
    for path in ("/plain", "/validated"):
        async with client.post(path, data=data, headers={"Content-Type": "application/json"}) as r:
            assert_413(r.status, await r.read())
    assert backend.calls == 0


async def test_the_gateway_keeps_serving_after_cutting_bodies_off(
    gateway: Gateway, limited: GatewayConfig, backend: Backend, raw_connection: Connect
) -> None:
    client = await gateway(limited)
    for kind in KINDS:
        connection = await raw_connection(client)
        await connection.send(head(kind, "Transfer-Encoding: chunked"))
        await connection.send((b"400\r\n" + b" " * 1024 + b"\r\n") * 5)
        status, _, body = await connection.head()
        assert_413(status, body)
        await connection.close()
    async with client.post("/validated", json={"fine": True}) as response:
        assert response.status == 200
