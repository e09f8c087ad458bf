"""The lean HTTP/1.1 upstream client against raw upstreams that write responses by hand.

Every upstream here is an `asyncio.start_server` on loopback that reads requests and writes
exactly the bytes a test gives it, split where a test wants the split. `Probe` stands in for the
client's connection protocol (a subclass that only records what arrives), so a test can wait
until one piece has been received before the next is written, and can read the peak size of the
receive buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import gc
import hashlib
import socket
import struct
import termios
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from spork_cli.gateway import h1
from tests.gateway.conftest import (
    Client,
    Gateway,
    expect_problem,
    pool_of,
    single_service,
    wait_until,
)
from tests.support import LOOPBACK, free_port, pattern_bytes

MiB = 1024 * 1024
NO_RETRIES = {"attempts": 0}
HOST = [("Host", "upstream.test")]


# --- the client side: a recording connection --------------------------------------------------


class Probe(h1._Connection):
    """The pool's connection protocol, recording what arrives and how large the buffer grew."""

    def __init__(self, made: list[Probe]) -> None:
        super().__init__()
        self.sizes: list[int] = []
        self.total = 0
        self.peak = 0
        self.pauses = 0
        self._arrived = asyncio.Event()
        made.append(self)

    def data_received(self, data: bytes) -> None:
        self.sizes.append(len(data))
        self.total += len(data)
        was_paused = self.paused
        super().data_received(data)
        self.peak = max(self.peak, len(self.buffer))
        if self.paused and not was_paused:
            self.pauses += 1
        self._arrived.set()

    @property
    def local_port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    async def until_received(self, total: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.total < total:
                self._arrived.clear()
                await self._arrived.wait()


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[Probe]:
    """Every upstream connection the pools open during the test, in order."""
    made: list[Probe] = []
    monkeypatch.setattr(h1, "_Connection", functools.partial(Probe, made))
    return made


@pytest.fixture
async def make_pool() -> AsyncIterator[Callable[..., h1.H1Pool]]:
    pools: list[h1.H1Pool] = []

    def make(port: int, limit: int = 4, connect_timeout: float = 2.0) -> h1.H1Pool:
        pool = h1.H1Pool(LOOPBACK, port, limit, connect_timeout)
        pools.append(pool)
        return pool

    try:
        yield make
    finally:
        for pool in pools:
            pool.close()


async def get(pool: h1.H1Pool, target: str = "/", timeout: float = 2.0) -> h1.Response:
    return await pool.request("GET", target, HOST, None, timeout)


async def read_all(response: h1.Response, timeout: float = 2.0) -> bytes:
    if response.body is not None:
        return response.body
    return b"".join([chunk async for chunk in response.chunks(timeout)])


# --- the upstream side: raw servers -----------------------------------------------------------


@dataclass
class Exchange:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int


@dataclass
class Peer:
    """One accepted connection."""

    server: RawServer
    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sent: int = 0
    closed_by_client: bool = False

    @property
    def port(self) -> int:
        port: int = self.writer.get_extra_info("peername")[1]
        return port

    async def request(self) -> Exchange | None:
        """The next request on this connection, or None once the client has closed it."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client = True
            return None
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        exchange = Exchange(method, target, headers, body, self.index)
        self.server.requests.append(exchange)
        return exchange

    async def send(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.writer.write(piece)
            self.sent += len(piece)
            await self.writer.drain()

    def push(self, data: bytes) -> None:
        """Write without waiting for the data to leave."""
        self.writer.write(data)
        self.sent += len(data)

    async def send_apart(self, probes: list[Probe], *pieces: bytes) -> None:
        """Each piece reaches the client in a read of its own: the next is written only once
        the client has received everything before it."""
        probe = await self.probe(probes)
        for piece in pieces:
            await self.send(piece)
            await probe.until_received(self.sent)

    async def probe(self, probes: list[Probe]) -> Probe:
        """The client's end of this connection."""
        found: list[Probe] = []

        def match() -> bool:
            found[:] = [p for p in probes if p.transport is not None and p.local_port == self.port]
            return bool(found)

        await wait_until(match, message="the client end of the connection")
        return found[0]

    async def until_client_closes(self) -> None:
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(64 * 1024):
                pass
        self.closed_by_client = True

    def reset(self) -> None:
        """Abort with a TCP RST rather than a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[Peer], Awaitable[None]]


@dataclass
class RawServer:
    handler: Handler
    port: int = 0
    peers: list[Peer] = field(default_factory=list)
    requests: list[Exchange] = field(default_factory=list)
    open: int = 0
    peak_open: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def accepted(self) -> int:
        return len(self.peers)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(self, len(self.peers), reader, writer)
        self.peers.append(peer)
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        try:
            await self.handler(peer)
        except (ConnectionError, asyncio.CancelledError):
            # Cancelled only at the end of a test. Finishing quietly keeps asyncio's
            # connected-callback bookkeeping from logging the cancellation as an error.
            pass
        finally:
            self.open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for peer in self.peers:
            peer.writer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()


def response(
    body: bytes = b"hello",
    *headers: str,
    status: str = "200 OK",
    version: str = "1.1",
    length: bool = True,
) -> bytes:
    lines = [f"HTTP/{version} {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def answering(*replies: bytes) -> Handler:
    """Answers the n-th request of each connection with replies[n], the last one repeating,
    and keeps the connection open until the client closes it."""

    async def handle(peer: Peer) -> None:
        count = 0
        while await peer.request() is not None:
            await peer.send(replies[min(count, len(replies) - 1)])
            count += 1

    return handle


def first_connection(bad: Handler, good: Handler) -> Handler:
    """`bad` on the first connection, `good` on every later one."""

    async def handle(peer: Peer) -> None:
        await (bad if peer.index == 0 else good)(peer)

    return handle


async def reply_then_wait_for_close(peer: Peer, *pieces: bytes) -> None:
    if await peer.request() is not None:
        await peer.send(*pieces)
        await peer.until_client_closes()


async def gateway_get(client: Client, path: str = "/x") -> tuple[int, bytes]:
    async with client.get(path) as reply:
        return reply.status, await reply.read()


async def assert_healthy(client: Client) -> None:
    """The gateway answers the next request normally."""
    async with asyncio.timeout(5):
        status, body = await gateway_get(client, "/after")
    assert (status, body) == (200, b"hello")


async def loop_turns(count: int) -> None:
    """Let callbacks already scheduled run: turns of the event loop, not a timed wait."""
    for _ in range(count):
        await asyncio.sleep(0)


def h1_pool(client: Client) -> h1.H1Pool:
    pool = pool_of(client).endpoints[0].h1
    assert pool is not None
    return pool


# --- keep-alive --------------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    async with RawServer(answering(response(b"hello"))) as server:
        pool = make_pool(server.port)
        for _ in range(5):
            reply = await get(pool)
            assert (reply.status, reply.reason, reply.body) == (200, "OK", b"hello")
        assert server.accepted == 1
        assert len(server.requests) == 5


async def test_sequential_requests_through_the_gateway_share_one_connection(
    gateway: Gateway,
) -> None:
    async with RawServer(answering(response(b"hello"))) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        for _ in range(5):
            assert await gateway_get(client) == (200, b"hello")
        assert server.accepted == 1
        assert [r.connection for r in server.requests] == [0] * 5
        # What the gateway sends upstream is well-formed HTTP/1.1 with the endpoint's Host.
        first = server.requests[0]
        assert (first.method, first.target) == ("GET", "/x")
        assert first.headers["host"] == f"{LOOPBACK}:{server.port}"


async def test_connection_close_from_upstream_means_a_new_connection(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    # The upstream says close but leaves the socket open: the client must close it itself.
    async with RawServer(answering(response(b"bye", "Connection: close"))) as server:
        pool = make_pool(server.port)
        for _ in range(3):
            assert (await get(pool)).body == b"bye"
        assert server.accepted == 3
        assert [r.connection for r in server.requests] == [0, 1, 2]
        await wait_until(lambda: all(p.closed_by_client for p in server.peers))


@pytest.mark.parametrize(
    ("headers", "reused"),
    [((), False), (("Connection: keep-alive",), True), (("Connection: Keep-Alive, X-A",), True)],
)
async def test_http10_response_is_reused_only_with_keep_alive(
    make_pool: Callable[..., h1.H1Pool], headers: tuple[str, ...], reused: bool
) -> None:
    async with RawServer(answering(response(b"old", *headers, version="1.0"))) as server:
        pool = make_pool(server.port)
        for _ in range(2):
            assert (await get(pool)).body == b"old"
        assert server.accepted == (1 if reused else 2)


async def test_connection_close_through_the_gateway_opens_new_connections(
    gateway: Gateway,
) -> None:
    async with RawServer(answering(response(b"hello", "Connection: close"))) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        for _ in range(3):
            assert await gateway_get(client) == (200, b"hello")
        assert server.accepted == 3


# --- body framing ------------------------------------------------------------------------------


async def test_small_content_length_body_is_read_whole(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    body = pattern_bytes(h1.SMALL_BODY)
    async with RawServer(answering(response(body, "Content-Type: application/x-test"))) as server:
        pool = make_pool(server.port)
        reply = await get(pool)
        assert reply.body == body
        assert reply.content_length() == len(body)
        assert ("Content-Type", "application/x-test") in reply.headers
        reply.close()  # nothing left to give up: the connection stays pooled
        assert (await get(pool)).body == body
        assert server.accepted == 1


async def test_large_content_length_body_is_streamed_then_reused(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    body = pattern_bytes(h1.SMALL_BODY + 1)
    async with RawServer(answering(response(body), response(b"next"))) as server:
        pool = make_pool(server.port)
        reply = await get(pool)
        assert reply.body is None
        assert reply.content_length() == len(body)
        assert await read_all(reply) == body
        assert (await get(pool)).body == b"next"
        assert server.accepted == 1


async def test_five_mib_through_the_gateway_is_intact(gateway: Gateway) -> None:
    body = pattern_bytes(5 * MiB + 7)
    async with RawServer(answering(response(body))) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        async with client.get("/big") as reply:
            assert reply.status == 200
            assert reply.headers["Content-Length"] == str(len(body))
            digest = hashlib.sha256()
            async for chunk in reply.content.iter_chunked(64 * 1024):
                digest.update(chunk)
        assert digest.hexdigest() == hashlib.sha256(body).hexdigest()
        assert await gateway_get(client) == (200, body)  # the same connection, reused
        assert server.accepted == 1


CHUNKED_HEAD = "Transfer-Encoding: chunked"
CHUNKED = (
    b"5;name=value\r\nhello\r\n"
    b'1;quoted="a;b"\r\n,\r\n'
    b"A \r\n world and\r\n"
    b"0;last\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
)


async def test_chunked_body_with_extensions_and_trailers(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    head = response(b"", CHUNKED_HEAD, "Trailer: X-Checksum, X-Other", length=False)
    async with RawServer(answering(head + CHUNKED, response(b"next"))) as server:
        pool = make_pool(server.port)
        reply = await get(pool)
        assert reply.body is None
        assert reply.content_length() is None
        names = {name.lower() for name, _ in reply.headers}
        assert not names & {"transfer-encoding", "trailer", "x-checksum", "content-length"}
        assert await read_all(reply) == b"hello, world and"
        assert (await get(pool)).body == b"next"  # the trailers were consumed: reusable
        assert server.accepted == 1


async def test_chunked_body_through_the_gateway(gateway: Gateway) -> None:
    head = response(b"", CHUNKED_HEAD, "Trailer: X-Checksum", length=False)
    async with RawServer(answering(head + CHUNKED)) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        for _ in range(2):
            async with client.get("/x") as reply:
                assert reply.status == 200
                assert await reply.read() == b"hello, world and"
                assert "X-Checksum" not in reply.headers
                assert "Trailer" not in reply.headers
        assert server.accepted == 1


async def test_transfer_encoding_wins_over_content_length(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    head = response(b"", "Content-Length: 3", CHUNKED_HEAD, length=False)
    async with RawServer(answering(head + b"4\r\nabcd\r\n0\r\n\r\n")) as server:
        pool = make_pool(server.port)
        reply = await get(pool)
        assert reply.content_length() is None
        assert await read_all(reply) == b"abcd"
        assert (await get(pool)).status == 200
        assert server.accepted == 1


def split_after(data: bytes, *marks: bytes) -> list[bytes]:
    """`data` cut just after each occurrence of the marks, in order."""
    pieces: list[bytes] = []
    start = 0
    for mark in marks:
        at = data.index(mark, start) + len(mark)
        pieces.append(data[start:at])
        start = at
    pieces.append(data[start:])
    return pieces


SPLIT_RESPONSE = (
    response(b"", CHUNKED_HEAD, length=False)
    + b"1a;ext=1\r\n"
    + b"abcdefghijklmnopqrstuvwxyz\r\n"
    + b"3\r\nxyz\r\n"
    + b"0\r\nX-T: 1\r\n\r\n"
)


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param(
            split_after(
                SPLIT_RESPONSE, b"HTTP/1", b"OK\r", b"chunked\r\n\r", b"\n1", b"a;e", b"=1\r"
            ),
            id="head-and-size-line",
        ),
        pytest.param(
            split_after(SPLIT_RESPONSE, b"wxyz\r", b"3\r\nxy", b"z\r\n0", b"\r", b"X-T: 1\r\n\r"),
            id="data-crlf-and-trailer",
        ),
        pytest.param([bytes([b]) for b in SPLIT_RESPONSE], id="byte-by-byte"),
    ],
)
async def test_chunked_response_split_at_awkward_places(
    make_pool: Callable[..., h1.H1Pool], probes: list[Probe], pieces: list[bytes]
) -> None:
    assert b"".join(pieces) == SPLIT_RESPONSE

    async def handle(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send_apart(probes, *pieces)

    async with RawServer(handle) as server:
        pool = make_pool(server.port)
        for _ in range(2):
            reply = await get(pool)
            assert await read_all(reply) == b"abcdefghijklmnopqrstuvwxyzxyz"
        assert server.accepted == 1
        # Every piece arrived in a read of its own, so every split was really exercised.
        assert probes[0].sizes == [len(p) for p in pieces] * 2


async def test_split_response_through_the_gateway(gateway: Gateway, probes: list[Probe]) -> None:
    pieces = [bytes([b]) for b in response(b"hello", "X-A: 1")]

    async def handle(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send_apart(probes, *pieces)

    async with RawServer(handle) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        for _ in range(2):
            async with client.get("/x") as reply:
                assert reply.status == 200
                assert reply.headers["X-A"] == "1"
                assert await reply.read() == b"hello"
        assert server.accepted == 1


async def test_body_read_until_close_then_connection_not_reused(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    async def handle(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(response(b"", "X-A: 1", length=False), b"until ", b"the end")
            peer.writer.write_eof()
            await peer.until_client_closes()

    async with RawServer(handle) as server:
        pool = make_pool(server.port)
        for _ in range(2):
            reply = await get(pool)
            assert reply.body is None
            assert await read_all(reply) == b"until the end"
        assert server.accepted == 2
        assert pool._idle == []


async def test_body_read_until_close_through_the_gateway(gateway: Gateway) -> None:
    body = pattern_bytes(300_000)

    async def handle(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(response(b"", length=False), body)

    async with RawServer(handle) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        for _ in range(2):
            assert await gateway_get(client) == (200, body)
        assert server.accepted == 2


# --- interim responses and bodiless responses ----------------------------------------------------


INTERIM = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
)


async def test_interim_responses_are_skipped(
    make_pool: Callable[..., h1.H1Pool], probes: list[Probe]
) -> None:
    final = response(b"final", "X-Final: yes")

    async def handle(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send_apart(probes, *split_after(INTERIM + final, b"Continue\r\n\r\n"))

    async with RawServer(handle) as server:
        pool = make_pool(server.port)
        for _ in range(2):
            reply = await get(pool)
            assert (reply.status, reply.body) == (200, b"final")
            assert ("X-Final", "yes") in reply.headers
            assert all(name != "Link" for name, _ in reply.headers)
        assert server.accepted == 1


async def test_interim_responses_are_skipped_through_the_gateway(gateway: Gateway) -> None:
    async with RawServer(answering(INTERIM + response(b"final"))) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        async with client.post("/x", data=b"{}") as reply:
            assert reply.status == 200
            assert "Link" not in reply.headers
            assert await reply.read() == b"final"
        assert server.requests[0].body == b"{}"


BODILESS = [
    ("GET", response(b"", "X-Kind: 204", status="204 No Content", length=False)),
    # A 304 and a HEAD response announce a length they never send.
    ("GET", response(b"", "Content-Length: 1000", "ETag: \"v1\"", status="304 Not Modified",
                     length=False)),
    ("HEAD", response(b"", "Content-Length: 5000", length=False)),
]  # fmt: skip


async def test_204_304_and_head_have_no_body_and_keep_the_connection(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    replies = [reply for _, reply in BODILESS] + [response(b"after")]
    async with RawServer(answering(*replies)) as server:
        pool = make_pool(server.port)
        statuses = []
        for method, _ in BODILESS:
            reply = await pool.request(method, "/", HOST, None, 2.0)
            assert reply.body == b""
            statuses.append(reply.status)
        assert statuses == [204, 304, 200]
        assert (await get(pool)).body == b"after"
        assert server.accepted == 1


async def test_204_304_and_head_through_the_gateway(gateway: Gateway) -> None:
    replies = [reply for _, reply in BODILESS] + [response(b"after")]
    async with RawServer(answering(*replies)) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        statuses = []
        for method, _ in BODILESS:
            async with asyncio.timeout(5), client.request(method, "/x") as reply:
                assert await reply.read() == b""
                statuses.append(reply.status)
        assert statuses == [204, 304, 200]
        assert await gateway_get(client) == (200, b"after")
        assert server.accepted == 1


# --- response headers --------------------------------------------------------------------------


HOP_HEADERS = (
    "Set-Cookie: a=1; Path=/",
    "Connection: keep-alive, X-Hop-Secret",
    "X-Hop-Secret: hidden",
    "Keep-Alive: timeout=5",
    "Proxy-Connection: keep-alive",
    "Proxy-Authenticate: Basic",
    "Trailer: X-Checksum",
    "Upgrade: h2c",
    "TE: trailers",
    "Set-Cookie: b=2; HttpOnly",
    "X-End-To-End: kept",
    "Set-Cookie: c=3",
)


async def test_hop_by_hop_headers_are_dropped_and_the_rest_kept_in_order(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    async with RawServer(answering(response(b"ok", *HOP_HEADERS))) as server:
        pool = make_pool(server.port)
        reply = await get(pool)
        assert reply.headers == [
            ("Set-Cookie", "a=1; Path=/"),
            ("Set-Cookie", "b=2; HttpOnly"),
            ("X-End-To-End", "kept"),
            ("Set-Cookie", "c=3"),
            ("Content-Length", "2"),
        ]
        await get(pool)
        assert server.accepted == 1  # "keep-alive" in Connection was honoured


async def test_hop_by_hop_headers_are_dropped_through_the_gateway(gateway: Gateway) -> None:
    async with RawServer(answering(response(b"ok", *HOP_HEADERS))) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        async with client.get("/x") as reply:
            assert reply.status == 200
            assert await reply.read() == b"ok"
            headers = reply.headers
        assert headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; HttpOnly", "c=3"]
        assert headers["X-End-To-End"] == "kept"
        for name in ("X-Hop-Secret", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
                     "Trailer", "Upgrade", "TE"):  # fmt: skip
            assert name not in headers, name


# --- malformed responses -----------------------------------------------------------------------


MALFORMED = {
    "garbage-status-line": b"SPDY/3 200 OK\r\nContent-Length: 0\r\n\r\n",
    "non-numeric-status": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    "short-status-line": b"HTTP/1.1 20\r\nContent-Length: 0\r\n\r\n",
    "negative-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
    "invalid-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
    "header-without-colon": b"HTTP/1.1 200 OK\r\nX-Broken header\r\nContent-Length: 0\r\n\r\n",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n",
    # Never finished: the client must give up past 64 KiB without waiting for the end.
    "head-over-64-kib": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (h1.MAX_HEAD + 1024),
    "small-body-cut-short": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
}


def malformed_once(reply: bytes) -> Handler:
    async def bad(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(reply)
            peer.writer.write_eof()  # only meaningful mid-body; harmless otherwise
            await peer.until_client_closes()

    return first_connection(bad, answering(response(b"hello")))


@pytest.mark.parametrize("reply", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_response_raises_upstream_error(
    make_pool: Callable[..., h1.H1Pool], reply: bytes
) -> None:
    async with RawServer(malformed_once(reply)) as server:
        pool = make_pool(server.port)
        with pytest.raises(h1.UpstreamError) as caught:
            await get(pool)
        # A malformed answer is not "closed unanswered": nothing may retry it silently.
        assert type(caught.value) is h1.UpstreamError
        assert (await get(pool)).body == b"hello"
        assert server.accepted == 2
        assert server.peers[0].closed_by_client
        assert pool._open == 1


@pytest.mark.parametrize("reply", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_response_is_502_problem_through_the_gateway(
    gateway: Gateway, reply: bytes
) -> None:
    async with RawServer(malformed_once(reply)) as server:
        client = await gateway(single_service(server.url, retries={"attempts": 2}))
        async with client.get("/x") as answer:
            problem = await expect_problem(answer, 502)
        assert problem["type"] == "urn:spork:problem:upstream-error"
        assert len(server.requests) == 1  # an invalid answer is not retried
        await assert_healthy(client)


STREAMED_BREAKS = {
    "bad-chunk-size": response(b"", CHUNKED_HEAD, length=False) + b"5\r\nhello\r\nzz\r\n",
    "chunk-without-crlf": response(b"", CHUNKED_HEAD, length=False) + b"5\r\nhelloXX",
    "chunk-size-line-too-long": response(b"", CHUNKED_HEAD, length=False) + b"1" * 5000,
    "closed-mid-chunk": response(b"", CHUNKED_HEAD, length=False) + b"100\r\nshort",
    "closed-mid-large-body": response(b"", f"Content-Length: {2 * MiB}", length=False)
    + pattern_bytes(300_000),
}


def streamed_break_once(reply: bytes) -> Handler:
    async def bad(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(reply)
            peer.writer.write_eof()  # ends the bodies that are cut short
            await peer.until_client_closes()

    return first_connection(bad, answering(response(b"hello")))


@pytest.mark.parametrize("reply", STREAMED_BREAKS.values(), ids=STREAMED_BREAKS.keys())
async def test_streamed_body_breaking_off_raises_upstream_error(
    make_pool: Callable[..., h1.H1Pool], reply: bytes
) -> None:
    async with RawServer(streamed_break_once(reply)) as server:
        pool = make_pool(server.port)
        answer = await get(pool)
        assert answer.status == 200
        with pytest.raises(h1.UpstreamError):
            await read_all(answer)
        assert pool._open == 0
        assert (await get(pool)).body == b"hello"
        assert server.accepted == 2


@pytest.mark.parametrize("reply", STREAMED_BREAKS.values(), ids=STREAMED_BREAKS.keys())
async def test_streamed_body_breaking_off_cuts_the_client_response(
    gateway: Gateway, reply: bytes
) -> None:
    # The head was relayed before the body broke off: a cut connection, never a clean end.
    async with RawServer(streamed_break_once(reply)) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        async with asyncio.timeout(5), client.get("/x") as answer:
            assert answer.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await answer.read()
        await assert_healthy(client)


def reset_mid_body(probes: list[Probe]) -> Handler:
    """A read-until-close body aborted with a RST once the client has read the first part."""

    async def bad(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send_apart(probes, response(b"", length=False) + b"first part")
            probe = await peer.probe(probes)
            await wait_until(lambda: not probe.buffer, message="the first part consumed")
            peer.reset()

    return first_connection(bad, answering(response(b"hello")))


async def test_reset_during_body_read_until_close_is_an_error(
    make_pool: Callable[..., h1.H1Pool], probes: list[Probe]
) -> None:
    async with RawServer(reset_mid_body(probes)) as server:
        pool = make_pool(server.port)
        answer = await get(pool)
        with pytest.raises(h1.UpstreamError):
            async for _ in answer.chunks(2.0):
                pass


async def test_reset_during_body_read_until_close_cuts_the_client_response(
    gateway: Gateway, probes: list[Probe]
) -> None:
    async with RawServer(reset_mid_body(probes)) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        async with asyncio.timeout(5), client.get("/x") as answer:
            assert answer.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await answer.read()


async def test_conflicting_content_lengths_are_rejected(gateway: Gateway) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 3\r\n\r\nhello"
    async with RawServer(malformed_once(reply)) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        async with client.get("/x") as answer:
            await expect_problem(answer, 502)


async def test_status_code_out_of_range_is_502_not_a_wait(gateway: Gateway) -> None:
    async def odd(peer: Peer) -> None:
        await reply_then_wait_for_close(peer, b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n")

    async with RawServer(first_connection(odd, answering(response(b"hello")))) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES, timeout="500ms"))
        async with client.get("/x") as answer:
            await expect_problem(answer, 502)


# --- stale pooled connections ------------------------------------------------------------------


def dies_on_second_request() -> Handler:
    """Answers one request, then takes the next one in and hangs up without an answer: what a
    client sees when the upstream closes an idle connection just as a request goes out."""

    async def first(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(response(b"first"))
        await peer.request()

    return first_connection(first, answering(response(b"fresh")))


async def test_stale_connection_is_retried_once_for_idempotent_requests(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    async with RawServer(dies_on_second_request()) as server:
        pool = make_pool(server.port)
        assert (await get(pool)).body == b"first"
        reply = await pool.request("PUT", "/", HOST, b"x", 2.0)
        assert reply.body == b"fresh"
        assert server.accepted == 2
        assert [(r.method, r.connection) for r in server.requests] == [
            ("GET", 0),
            ("PUT", 0),
            ("PUT", 1),
        ]
        assert pool._open == 1


async def test_stale_connection_is_not_retried_for_post(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    async with RawServer(dies_on_second_request()) as server:
        pool = make_pool(server.port)
        assert (await get(pool)).body == b"first"
        with pytest.raises(h1.Disconnected):
            await pool.request("POST", "/", HOST, b"{}", 2.0)
        assert [r.method for r in server.requests] == ["GET", "POST"]
        assert server.accepted == 1
        assert pool._open == 0


async def test_stale_connection_through_the_gateway(gateway: Gateway) -> None:
    async with RawServer(dies_on_second_request()) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        assert await gateway_get(client) == (200, b"first")
        assert await gateway_get(client) == (200, b"fresh")  # transparent
        assert server.accepted == 2


async def test_stale_connection_post_is_not_replayed_through_the_gateway(
    gateway: Gateway,
) -> None:
    async with RawServer(dies_on_second_request()) as server:
        client = await gateway(single_service(server.url, retries={"attempts": 2}))
        assert await gateway_get(client) == (200, b"first")
        async with client.post("/x", data=b'{"pay": 1}') as answer:
            problem = await expect_problem(answer, 502)
        assert problem["type"] == "urn:spork:problem:upstream-unreachable"
        assert [r.method for r in server.requests].count("POST") == 1
        assert server.accepted == 1


async def test_idle_connection_closed_by_upstream_is_not_used(
    make_pool: Callable[..., h1.H1Pool], probes: list[Probe]
) -> None:
    async def close_after_answering(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(response(b"once"))  # keep-alive, yet the upstream hangs up

    async with RawServer(close_after_answering) as server:
        pool = make_pool(server.port)
        assert (await get(pool)).body == b"once"
        await wait_until(lambda: probes[0].closed, message="the close noticed")
        reply = await pool.request("POST", "/", HOST, b"{}", 2.0)
        assert reply.body == b"once"
        assert [(r.method, r.connection) for r in server.requests] == [("GET", 0), ("POST", 1)]


# --- timeouts ----------------------------------------------------------------------------------


async def silent(peer: Peer) -> None:
    await peer.request()
    await peer.until_client_closes()


async def test_upstream_silent_before_the_head_is_504_in_about_the_timeout(
    gateway: Gateway,
) -> None:
    async with RawServer(silent) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES, timeout="300ms"))
        started = time.monotonic()
        async with client.get("/x") as answer:
            problem = await expect_problem(answer, 504)
        elapsed = time.monotonic() - started
        assert problem["type"] == "urn:spork:problem:upstream-timeout"
        assert 0.25 <= elapsed < 2.0
        await wait_until(lambda: server.peers[0].closed_by_client)


async def test_upstream_silent_before_the_head_raises_upstream_timeout(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    async with RawServer(silent) as server:
        pool = make_pool(server.port)
        started = time.monotonic()
        with pytest.raises(h1.UpstreamTimeout):
            await get(pool, timeout=0.2)
        assert 0.15 <= time.monotonic() - started < 1.5
        assert pool._open == 0


async def silent_mid_body(peer: Peer) -> None:
    if await peer.request() is not None:
        await peer.send(response(b"", f"Content-Length: {MiB}", length=False), b"x" * 1000)
        await peer.until_client_closes()


async def test_upstream_silent_mid_body_cuts_the_client_response(gateway: Gateway) -> None:
    async with RawServer(silent_mid_body) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES, timeout="300ms"))
        started = time.monotonic()
        async with asyncio.timeout(5), client.get("/x") as answer:
            assert answer.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await answer.read()
        assert time.monotonic() - started < 2.0
        await wait_until(lambda: server.peers[0].closed_by_client)
        assert h1_pool(client)._open == 0


async def test_upstream_silent_mid_body_raises_upstream_timeout(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    async with RawServer(silent_mid_body) as server:
        pool = make_pool(server.port)
        answer = await get(pool)
        with pytest.raises(h1.UpstreamTimeout):
            await read_all(answer, timeout=0.2)
        assert pool._open == 0


async def test_head_timeout_is_not_lost_when_data_arrives_as_it_fires(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    timeout = 0.3

    async def trickle(peer: Peer) -> None:
        if await peer.request() is None:
            return
        loop = asyncio.get_running_loop()
        # The client's head timer was started just before the request was sent, so it is due
        # a little before `seen + timeout`. Shortly before that, one byte of a head arrives and
        # the loop stays busy past the deadline (as under load): the next turn of the loop
        # then has both the readable socket and the expired timer to run.
        seen = loop.time()

        def byte_then_busy() -> None:
            peer.writer.write(b"H")
            while loop.time() < seen + timeout + 0.02:
                pass

        loop.call_at(seen + timeout - 0.05, byte_then_busy)
        await peer.until_client_closes()

    async with RawServer(trickle) as server:
        pool = make_pool(server.port)
        with pytest.raises(h1.UpstreamTimeout):
            async with asyncio.timeout(timeout + 1.5):
                await get(pool, timeout=timeout)


# --- the pool limit ----------------------------------------------------------------------------


@pytest.mark.observes("services.max_connections")
async def test_pool_limit_holds_under_concurrency_through_the_gateway(gateway: Gateway) -> None:
    release = asyncio.Event()

    async def slow(peer: Peer) -> None:
        while await peer.request() is not None:
            await release.wait()
            await peer.send(response(b"hello"))

    async with RawServer(slow) as server:
        client = await gateway(
            single_service(server.url, retries=NO_RETRIES, max_connections=2, timeout="10s")
        )
        pool = h1_pool(client)
        tasks = [asyncio.create_task(gateway_get(client, f"/{i}")) for i in range(5)]
        try:
            await wait_until(lambda: len(server.requests) == 2 and len(pool._waiters) == 3)
            assert server.open == 2
            release.set()
            async with asyncio.timeout(5):
                results = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert results == [(200, b"hello")] * 5
        assert server.peak_open == 2
        assert server.accepted == 2
        assert sorted(r.target for r in server.requests) == [f"/{i}" for i in range(5)]


async def test_waiter_cancelled_after_wake_up_does_not_strand_the_next(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    async with RawServer(answering(response(pattern_bytes(MiB)))) as server:
        pool = make_pool(server.port, limit=1)
        holder = await get(pool)
        woken = asyncio.create_task(get(pool))
        await wait_until(lambda: len(pool._waiters) == 1)
        other = asyncio.create_task(get(pool))
        await wait_until(lambda: len(pool._waiters) == 2)
        holder.close()  # sets the result of woken's waiter...
        woken.cancel()  # ...and woken is cancelled before it runs to take the slot
        with pytest.raises(asyncio.CancelledError):
            await woken
        try:
            async with asyncio.timeout(2):
                reply = await other
            reply.close()
        finally:
            other.cancel()
            await asyncio.gather(other, return_exceptions=True)


async def test_cancelled_connect_gives_its_slot_back(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    async with RawServer(answering(response(b"hello"))) as server:
        pool = make_pool(server.port, limit=1)
        task = asyncio.create_task(get(pool))
        await asyncio.sleep(0)  # one loop turn: the task is now inside create_connection
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool._open == 0
        async with asyncio.timeout(2):
            assert (await get(pool)).body == b"hello"


async def test_close_during_a_suspended_body_stream_releases_once(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    async with RawServer(answering(response(pattern_bytes(MiB)))) as server:
        pool = make_pool(server.port, limit=1)
        answer = await get(pool)
        stream = answer.chunks(2.0)
        assert await anext(stream)
        answer.close()  # what _relay_h1's finally does when writing to the client fails
        await stream.aclose()  # what the event loop does once the generator is collected
        assert pool._open == 0


async def test_client_hanging_up_mid_stream_keeps_the_pool_limit(
    gateway: Gateway, probes: list[Probe]
) -> None:
    release = asyncio.Event()
    big = response(pattern_bytes(8 * MiB))

    async def upstream(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if request.target == "/big":
                await peer.send(big)
            else:
                await release.wait()
                await peer.send(response(b"hello"))

    async with RawServer(upstream) as server:
        client = await gateway(
            single_service(server.url, retries=NO_RETRIES, max_connections=1, timeout="10s")
        )
        pool = h1_pool(client)
        async with client.get("/big") as answer:
            assert len(await answer.content.readexactly(64 * 1024)) == 64 * 1024
            # The client stops reading: the gateway ends up waiting to write to it, with the
            # upstream connection's buffer full and its reading paused.
            await wait_until(lambda: probes[0].paused, message="the upstream reading paused")
            answer.close()  # then hangs up, most of the body unread
        await wait_until(lambda: server.open == 0, message="the upstream connection closed")
        # The relay's abandoned body generator is finalized once collected; the loop then
        # runs its aclose() within a few turns.
        gc.collect()
        await loop_turns(5)
        tasks = [asyncio.create_task(gateway_get(client, f"/{i}")) for i in range(2)]
        try:
            await wait_until(lambda: len(server.requests) + len(pool._waiters) >= 3)
            release.set()
            async with asyncio.timeout(5):
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert server.peak_open == 1


# --- flow control ------------------------------------------------------------------------------


async def test_slow_reader_of_50_mib_keeps_the_upstream_buffer_bounded(
    gateway: Gateway, probes: list[Probe]
) -> None:
    size = 50 * MiB
    piece = pattern_bytes(256 * 1024)

    async def upstream(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(response(b"", f"Content-Length: {size}", length=False))
            for _ in range(size // len(piece)):
                await peer.send(piece)
            await peer.until_client_closes()

    async with RawServer(upstream) as server:
        client = await gateway(single_service(server.url, retries=NO_RETRIES))
        digest = hashlib.sha256()
        received = 0
        async with asyncio.timeout(15), client.get("/x") as answer:
            assert answer.status == 200
            while chunk := await answer.content.read(16 * 1024):
                digest.update(chunk)
                received += len(chunk)
                await asyncio.sleep(0)  # a slow reader: one small read per turn of the loop
        assert received == size
        assert digest.hexdigest() == hashlib.sha256(piece * (size // len(piece))).hexdigest()
        (probe,) = probes
        assert probe.pauses > 0, "the reader never fell behind: nothing was tested"
        assert probe.peak <= 2 * h1.READ_BUFFER
        assert server.accepted == 1


def readable_bytes(probe: Probe) -> int:
    assert probe.transport is not None
    buf = bytearray(4)
    fcntl.ioctl(probe.transport.get_extra_info("socket").fileno(), termios.FIONREAD, buf)
    count: int = struct.unpack("i", buf)[0]
    return count


async def one_read_response(peer: Peer, probes: list[Probe], lead: bytes, rest: bytes) -> None:
    """`lead` in a read of its own, then all of `rest` in a single read: reading is paused
    until the whole of it waits in the socket, as when the event loop is busy."""
    probe = await peer.probe(probes)
    await peer.send_apart(probes, lead)
    assert probe.transport is not None
    sock = probe.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MiB)  # room for all of `rest`
    probe.transport.pause_reading()
    peer.push(rest)
    await wait_until(lambda: readable_bytes(probe) == len(rest), message="all of it queued")
    probe.transport.resume_reading()


async def test_small_body_arriving_with_a_partial_head_is_read(
    make_pool: Callable[..., h1.H1Pool], probes: list[Probe]
) -> None:
    body = pattern_bytes(h1.SMALL_BODY)
    reply = response(body, "X-Padding: " + "p" * 8000)

    async def upstream(peer: Peer) -> None:
        while await peer.request() is not None:
            if peer.sent == 0:
                await peer.send(response(b"warm-up"))
            else:
                await one_read_response(peer, probes, reply[:10], reply[10:])

    async with RawServer(upstream) as server:
        pool = make_pool(server.port)
        assert (await get(pool)).body == b"warm-up"
        answer = await get(pool, timeout=1.0)
        assert answer.body == body


async def test_head_over_64_kib_in_one_read_is_rejected(
    make_pool: Callable[..., h1.H1Pool], probes: list[Probe]
) -> None:
    reply = response(b"x", "X-Big: " + "a" * (h1.MAX_HEAD + 1024))

    async def upstream(peer: Peer) -> None:
        if await peer.request() is not None:
            await one_read_response(peer, probes, reply[:10], reply[10:])
            await peer.until_client_closes()

    async with RawServer(upstream) as server:
        pool = make_pool(server.port)
        with pytest.raises(h1.UpstreamError):
            await get(pool)


# --- connecting --------------------------------------------------------------------------------


async def test_connection_refused_is_connect_failed(
    make_pool: Callable[..., h1.H1Pool],
) -> None:
    pool = make_pool(free_port())
    with pytest.raises(h1.ConnectFailed):
        await get(pool)
    assert pool._open == 0


async def test_connection_refused_is_502_problem_through_the_gateway(gateway: Gateway) -> None:
    client = await gateway(single_service(f"http://{LOOPBACK}:{free_port()}", retries=NO_RETRIES))
    async with client.get("/x") as answer:
        problem = await expect_problem(answer, 502)
    assert problem["type"] == "urn:spork:problem:upstream-unreachable"


@contextlib.contextmanager
def listener(backlog: int) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, 0))
        sock.listen(backlog)
        yield sock
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def never_accepting() -> AsyncIterator[int]:
    """A port whose accept queue is full: further connection attempts go unanswered."""
    loop = asyncio.get_running_loop()
    fillers: list[socket.socket] = []
    with listener(0) as sock:
        port = sock.getsockname()[1]
        try:
            for _ in range(8):
                filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                filler.setblocking(False)
                fillers.append(filler)
                try:
                    async with asyncio.timeout(0.2):
                        await loop.sock_connect(filler, (LOOPBACK, port))
                except TimeoutError:
                    break
            else:
                pytest.skip("the kernel kept accepting connections on a full backlog")
            yield port
        finally:
            for filler in fillers:
                filler.close()


async def test_connect_timeout_is_upstream_timeout(make_pool: Callable[..., h1.H1Pool]) -> None:
    async with never_accepting() as port:
        pool = make_pool(port, connect_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(h1.UpstreamTimeout):
            await get(pool)
        assert time.monotonic() - started < 1.5
        assert pool._open == 0


@pytest.mark.observes("services.connect_timeout")
async def test_connect_timeout_is_504_problem_through_the_gateway(gateway: Gateway) -> None:
    async with never_accepting() as port:
        client = await gateway(
            single_service(f"http://{LOOPBACK}:{port}", retries=NO_RETRIES, connect_timeout="200ms")
        )
        started = time.monotonic()
        async with client.get("/x") as answer:
            problem = await expect_problem(answer, 504)
        assert problem["type"] == "urn:spork:problem:upstream-timeout"
        assert time.monotonic() - started < 1.5  # the 200 ms, not the default 2 s
