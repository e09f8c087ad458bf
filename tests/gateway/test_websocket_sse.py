"""Long-lived responses: Server-Sent Events arrive as sent, WebSocket frames flow both ways."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from spork_cli.demo import build_demo_app, start_demo
from tests.gateway.conftest import (
    Client,
    Gateway,
    StubFactory,
    expect_problem,
    pool_of,
    single_service,
    wait_until,
)
from tests.support import LOOPBACK, Upstream, free_port

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
READ_LIMIT = 5.0  # bounds every read: a broken gateway fails the test instead of hanging it


@pytest.fixture
async def demo_url() -> AsyncIterator[str]:
    """The demo users service on a real socket (its runner cancels handlers on shutdown)."""
    port = free_port()
    runner = await start_demo(LOOPBACK, port, name="demo")
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        await runner.cleanup()


async def next_event(response: aiohttp.ClientResponse) -> bytes:
    async with asyncio.timeout(READ_LIMIT):
        return await response.content.readuntil(b"\n\n")


# --- Server-Sent Events --------------------------------------------------------------------------


async def test_sse_events_reach_the_client_before_the_stream_ends(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url))
    async with client.get("/sse?then=second&then=third") as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert await next_event(response) == b"data: 1\n\n"
        # The upstream is still holding the rest back: the first event was not buffered.
        assert upstream.events_sent == 1
        upstream.gate.set()
        assert await next_event(response) == b"data: second\n\n"
        assert await next_event(response) == b"data: third\n\n"
        async with asyncio.timeout(READ_LIMIT):
            assert await response.content.read() == b""


async def test_demo_sse_first_event_arrives_while_the_upstream_waits(
    gateway: Gateway, demo_url: str
) -> None:
    client = await gateway(single_service(demo_url, route={"path": "/api/users"}))
    async with client.get("/api/users/stream?n=3&interval_ms=30000") as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Demo-Instance"] == "demo"
        assert await next_event(response) == b'data: {"i":0}\n\n'


async def test_stream_longer_than_the_timeout_is_not_cut_while_data_flows(
    gateway: Gateway, demo_url: str
) -> None:
    client = await gateway(single_service(demo_url, timeout="300ms"))
    async with client.get("/stream?n=5&interval_ms=120") as response:
        assert response.status == 200
        async with asyncio.timeout(READ_LIMIT):
            body = await response.read()
    assert body.count(b"data: ") == 5


async def test_idle_gap_longer_than_the_timeout_cuts_the_stream(
    gateway: Gateway, demo_url: str
) -> None:
    client = await gateway(single_service(demo_url, timeout="300ms"))
    async with client.get("/stream?n=2&interval_ms=10000") as response:
        assert response.status == 200
        assert await next_event(response) == b'data: {"i":0}\n\n'
        with pytest.raises(aiohttp.ClientPayloadError):
            async with asyncio.timeout(READ_LIMIT):
                await response.read()


# --- WebSocket -----------------------------------------------------------------------------------


@pytest.fixture
async def ws_gateway(gateway: Gateway, aiohttp_server: ServerFactory) -> Client:
    server = await aiohttp_server(build_demo_app("ws-demo"))
    return await gateway(single_service(str(server.make_url("")).rstrip("/")))


async def test_websocket_text_echo_through_the_gateway(ws_gateway: Client) -> None:
    async with ws_gateway.ws_connect("/api/ws") as ws:
        for text in ("hello", "ünïcode ✓", "x" * 100_000):
            await ws.send_str(text)
            async with asyncio.timeout(READ_LIMIT):
                message = await ws.receive()
            assert message.type == WSMsgType.TEXT
            assert message.data == text


async def test_websocket_binary_echo_through_the_gateway(ws_gateway: Client) -> None:
    async with ws_gateway.ws_connect("/ws") as ws:
        for payload in (b"\x00\x01\x02\xff", os.urandom(300_000)):
            await ws.send_bytes(payload)
            async with asyncio.timeout(READ_LIMIT):
                message = await ws.receive()
            assert message.type == WSMsgType.BINARY
            assert message.data == payload


def upgrade_headers(**extra: str) -> dict[str, str]:
    return {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        **extra,
    }


async def test_websocket_handshake_response_carries_the_request_id(ws_gateway: Client) -> None:
    async with ws_gateway.get("/ws", headers=upgrade_headers(**{"X-Request-ID": "ws-1"})) as r:
        assert r.status == 101
        assert r.headers["X-Request-ID"] == "ws-1"
    # The client hung up without a close frame: the upstream side is released all the same.
    pool = pool_of(ws_gateway)
    await wait_until(lambda: pool.in_flight == 0, message="upstream websocket released")


def closing_ws_app() -> web.Application:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT and message.data == "bye":
                await ws.close(code=4001, message=b"done")
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    return app


async def test_websocket_upstream_close_code_reaches_the_client(
    gateway: Gateway, stub: StubFactory
) -> None:
    server = await stub(closing_ws_app(), "closer")
    client = await gateway(single_service(server.url))
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("bye")
        async with asyncio.timeout(READ_LIMIT):
            message = await ws.receive()
        assert message.type == WSMsgType.CLOSE
        assert ws.close_code == 4001


async def test_websocket_subprotocol_is_the_one_the_upstream_chose(ws_gateway: Client) -> None:
    # The demo echo accepts no subprotocol, so the client must not be told one was agreed.
    async with ws_gateway.ws_connect("/ws", protocols=("chat.v1",)) as ws:
        assert ws.protocol is None


@pytest.mark.observes("routes.websocket")
async def test_a_route_with_websocket_off_does_not_upgrade(
    gateway: Gateway, aiohttp_server: ServerFactory
) -> None:
    server = await aiohttp_server(build_demo_app("ws-demo"))
    url = str(server.make_url("")).rstrip("/")
    client = await gateway(single_service(url, route={"websocket": False}))
    async with client.get("/ws", headers=upgrade_headers()) as response:
        # Forwarded as a plain GET, hop-by-hop Upgrade dropped: the demo's WebSocket
        # endpoint refuses a request that asks for no upgrade.
        assert response.status == 400
        assert response.headers["X-Demo-Instance"] == "ws-demo"
        assert "Upgrade" not in response.headers
    with pytest.raises(aiohttp.WSServerHandshakeError):
        async with asyncio.timeout(READ_LIMIT):
            await client.ws_connect("/ws")


async def test_websocket_to_an_unreachable_upstream_is_502_problem(gateway: Gateway) -> None:
    client = await gateway(single_service(f"http://{LOOPBACK}:{free_port()}"))
    async with client.get("/ws", headers=upgrade_headers()) as response:
        body = await expect_problem(response, 502)
    assert body["type"] == "urn:spork:problem:upstream-unreachable"


async def test_websocket_upgrade_with_a_header_that_is_not_utf8_is_400_problem(
    ws_gateway: Client,
) -> None:
    key = base64.b64encode(os.urandom(16))
    reader, writer = await asyncio.open_connection(LOOPBACK, ws_gateway.port)
    try:
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n"
            b"X-A: \xff\r\n\r\n"
        )
        async with asyncio.timeout(READ_LIMIT):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"application/problem+json" in head
    assert pool_of(ws_gateway).in_flight == 0
