"""Bodies and connections are bounded, against `spork serve` processes over raw sockets:
compressed bodies go upstream as sent (and are inflated, bounded, only where a schema reads
them), request heads have a deadline and a size, bodies may not stall, an answer given before
the body's end closes the connection, and connections past ``max_connections`` are refused."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.conftest import StartSpork
from tests.support import (
    LOOPBACK,
    SporkServer,
    eventually,
    free_ports,
    gateway_toml,
    proc_status_kib,
    serve_app,
)

MIB = 1024 * 1024
SECRET = "0123456789abcdef0123456789abcdef"


@cache
def member(inflated: int) -> bytes:
    """One gzip member of ``inflated`` zero bytes (about a thousandth of that)."""
    return gzip.compress(bytes(inflated), compresslevel=9)


def bomb(inflated_gib: int = 1) -> bytes:
    """About 1 MiB per GiB inflated: gzip members of 64 MiB of zeros, one after another
    (RFC 1952 section 2.2), so building it takes a fraction of a second."""
    return member(64 * MIB) * (16 * inflated_gib)


# --- a raw upstream: sees the bytes the gateway forwards, never inflating them ---------------


@dataclass
class RawUpstream:
    url: str = ""
    received: int = 0  # body bytes of the upload in progress so far
    uploads: list[tuple[dict[str, str], str, int]] = field(default_factory=list)

    async def upload(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        self.received = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            self.received += len(chunk)
        self.uploads.append((dict(request.headers), digest.hexdigest(), self.received))
        return web.json_response({"bytes": self.received})

    async def ping(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"pong": True})


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    state = RawUpstream()
    app = web.Application(handler_args={"auto_decompress": False}, client_max_size=64 * MIB)
    app.router.add_route("*", "/open/upload", state.upload)
    app.router.add_route("*", "/{tail:.*}", state.ping)
    runner, port = await serve_app(app, LOOPBACK, 0)
    state.url = f"http://{LOOPBACK}:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


Start = Callable[..., Awaitable[SporkServer]]


@pytest.fixture
def bounded(tmp_path: Path, spork_server: StartSpork, raw_upstream: RawUpstream) -> Start:
    """``await bounded(*args, **settings)`` starts `spork serve` with small bounds (each
    overridable as a ``[server]`` or ``[server.timeouts]`` key) and three routes: ``/open/``
    (no checks), ``/checked/`` (a body_schema, and ``max_body``) and ``/private/`` (a token
    required; left out with ``private=False``, as workers on memory state refuse it)."""
    (tmp_path / "any.json").write_text(json.dumps({"type": "object"}))

    async def start(
        *args: str,
        serving: int = 1,
        max_body: str = "8MiB",
        private: bool = True,
        **settings: object,
    ) -> SporkServer:
        server = {"max_connections": 16, "max_header_size": "32KiB"}
        timeouts = {"header": "500ms", "body_idle": "500ms", "body": "30s", "keepalive": "75s"}
        for key, value in settings.items():
            (timeouts if key in timeouts else server)[key] = value

        def lines(table: dict[str, object]) -> str:
            return "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())

        port, admin_port = free_ports(2)
        config = tmp_path / "gateway.toml"
        config.write_text(
            gateway_toml(
                port,
                admin_port,
                {"svc": raw_upstream.url},
                {},
                server_extra=lines(server) + "\n\n[server.timeouts]\n" + lines(timeouts),
                extra=(
                    f'[auth]\nalgorithms = ["HS256"]\nsecret = "{SECRET}"\n\n'
                    '[[routes]]\npath = "/open/"\nservice = "svc"\n\n'
                    '[[routes]]\npath = "/checked/"\nservice = "svc"\n'
                    f'body_schema = "any.json"\nmax_body = "{max_body}"\n\n'
                    + (
                        '[[routes]]\npath = "/private/"\nservice = "svc"\nauth = "required"\n'
                        if private
                        else ""
                    )
                ),
            )
        )
        return await spork_server(config, port, admin_port, *args, serving=serving)

    return start


# --- a raw HTTP/1.1 client ---------------------------------------------------------------------


@dataclass
class Raw:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *fields = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in fields:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def closed(self) -> bool:
        """Whether the gateway ends the connection (EOF) with nothing more sent."""
        return await self.reader.read(1) == b""

    def close(self) -> None:
        self.writer.transport.abort()


Connect = Callable[[SporkServer], Awaitable[Raw]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """``await connect(server)``: a raw connection to the gateway, closed after the test."""
    opened: list[Raw] = []

    async def open_connection(server: SporkServer) -> Raw:
        reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
        opened.append(Raw(reader, writer))
        return opened[-1]

    yield open_connection
    for raw in opened:
        raw.writer.close()
        with suppress(OSError):
            await raw.writer.wait_closed()


def head(method: str, path: str, *fields: str) -> bytes:
    return "\r\n".join((f"{method} {path} HTTP/1.1", "Host: gateway", *fields, "", "")).encode()


def problem_of(status: int, body: bytes, slug: str) -> dict[str, object]:
    document: dict[str, object] = orjson.loads(body)
    assert document["status"] == status
    assert document["type"] == f"urn:spork:problem:{slug}"
    return document


async def ping(server: SporkServer) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"{server.url}/open/ping") as response,
    ):
        return response.status


# --- compressed bodies -------------------------------------------------------------------------


async def test_a_gzip_bomb_on_an_open_route_goes_upstream_as_sent_while_others_are_served(
    bounded: Start, raw_upstream: RawUpstream, connect: Connect
) -> None:
    server = await bounded(body_idle="30s")
    data = bomb()
    connection = await connect(server)
    fields = ("Content-Encoding: gzip", f"Content-Length: {len(data)}")
    await connection.send(head("POST", "/open/upload", *fields) + data[:-1])
    # In flight: everything but the last byte is upstream, and nothing was inflated on the way.
    await eventually(lambda: raw_upstream.received == len(data) - 1, timeout=20)
    assert await ping(server) == 200  # another client is served meanwhile
    assert raw_upstream.received == len(data) - 1 and not raw_upstream.uploads
    await connection.send(data[-1:])
    status, _, _ = await connection.response()
    assert status == 200
    [(headers, digest, size)] = raw_upstream.uploads
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Length"] == str(len(data))


async def test_a_gzip_bomb_on_a_body_schema_route_is_a_413_in_bounded_memory(
    bounded: Start, raw_upstream: RawUpstream, connect: Connect
) -> None:
    server = await bounded(max_body="2MiB")
    data = bomb()
    before = proc_status_kib(server.pid)
    connection = await connect(server)
    fields = ("Content-Type: application/json", "Content-Encoding: gzip")
    await connection.send(head("POST", "/checked/x", *fields, f"Content-Length: {len(data)}"))
    await connection.send(data)
    _, _, body = await connection.response()
    problem_of(413, body, "body-too-large")
    assert proc_status_kib(server.pid) - before < 64 * 1024  # KiB: far from a GiB
    assert raw_upstream.uploads == []
    assert await ping(server) == 200


@pytest.mark.parametrize("route", ["open", "checked"])
async def test_a_61_kb_bomb_is_no_500(
    bounded: Start, raw_upstream: RawUpstream, route: str
) -> None:
    server = await bounded()
    data = member(60 * MIB)
    assert 55_000 < len(data) < 65_000
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.url}/{route}/upload", data=data, headers=headers, auto_decompress=False
        ) as response,
    ):
        body = await response.read()
    if route == "open":  # forwarded as sent
        assert response.status == 200, body
        assert raw_upstream.uploads[0][1:] == (hashlib.sha256(data).hexdigest(), len(data))
    else:  # inflated past the route's max_body (8 MiB)
        problem_of(413, body, "body-too-large")
    assert "Traceback" not in server.logs()


# --- request heads -----------------------------------------------------------------------------


@pytest.mark.observes("server.timeouts.header")
async def test_a_head_sent_too_slowly_is_a_408_and_the_connection_closes(
    bounded: Start,
    connect: Connect,
) -> None:
    server = await bounded()
    connection = await connect(server)
    await connection.send(b"GET /open/x HTTP/1.1\r\nHost: gateway\r\n")

    async def trickle() -> None:  # a field every 100 ms, never the blank line
        for i in range(100):
            await asyncio.sleep(0.1)
            await connection.send(f"X-Slow-{i}: a\r\n".encode())

    dribbling = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(10):
            _, headers, body = await connection.response()
            assert not dribbling.done()  # answered while the head was still coming
            problem_of(408, body, "request-timeout")
            assert headers["connection"] == "close"
            assert await connection.closed()
    finally:
        dribbling.cancel()


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    bounded: Start,
    connect: Connect,
) -> None:
    server = await bounded()
    connection = await connect(server)
    async with asyncio.timeout(10):
        assert await connection.closed()


@pytest.mark.parametrize("writes", ["one write", "in pieces"])
async def test_a_64_kib_head_is_a_431_problem(
    bounded: Start, writes: str, connect: Connect
) -> None:
    server = await bounded()
    fields = [f"X-Filler-{i}: {'a' * 1000}" for i in range(64)]  # each well under 16 KiB
    data = head("GET", "/open/x", *fields)
    connection = await connect(server)
    if writes == "one write":
        await connection.send(data)
    else:
        for start in range(0, len(data), 4096):
            await connection.send(data[start : start + 4096])
    async with asyncio.timeout(10):
        _, headers, body = await connection.response()
        problem_of(431, body, "header-too-large")
        assert headers["connection"] == "close"
        assert await connection.closed()


@pytest.mark.observes("server.max_header_size")
async def test_a_head_past_a_lowered_max_header_size_is_a_431_problem(
    bounded: Start, connect: Connect
) -> None:
    server = await bounded(max_header_size="8KiB")
    small = head("GET", "/open/x", *(f"X-Filler-{i}: {'a' * 1000}" for i in range(4)))
    large = head("GET", "/open/x", *(f"X-Filler-{i}: {'a' * 1000}" for i in range(12)))
    assert len(small) < 8 * 1024 < len(large) < 32 * 1024  # the default would take both
    connection = await connect(server)
    await connection.send(small)
    async with asyncio.timeout(10):
        assert (await connection.response())[0] == 200
        await connection.send(large)
        _, headers, body = await connection.response()
        problem_of(431, body, "header-too-large")
        assert headers["connection"] == "close"
        assert await connection.closed()


@pytest.mark.parametrize(
    ("line", "status", "slug"),
    [
        (f"GET /open/{'a' * 9000} HTTP/1.1", 414, "uri-too-long"),
        (f"GET /open/x HTTP/1.1\r\nX-Big: {'a' * 20000}", 431, "header-too-large"),
    ],
)
async def test_a_line_over_the_parser_limits_is_its_own_status(
    bounded: Start, line: str, status: int, slug: str, connect: Connect
) -> None:
    server = await bounded(max_header_size="64KiB")
    connection = await connect(server)
    await connection.send(f"{line}\r\nHost: gateway\r\n\r\n".encode())
    async with asyncio.timeout(10):
        _, _, body = await connection.response()
    problem_of(status, body, slug)


# --- bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "length", "sent"),
    [
        ("open", 100, 6),  # read whole, then forwarded
        ("open", 300_000, 100_000),  # streamed upstream as it comes
        ("checked", 100, 6),  # read by the validator
    ],
)
@pytest.mark.observes("server.timeouts.body_idle")
async def test_a_body_that_stops_coming_is_a_408_and_the_connection_closes(
    bounded: Start,
    raw_upstream: RawUpstream,
    route: str,
    length: int,
    sent: int,
    connect: Connect,
) -> None:
    server = await bounded()
    connection = await connect(server)
    fields = ("Content-Type: application/json", f"Content-Length: {length}")
    await connection.send(head("POST", f"/{route}/upload", *fields) + b" " * sent)
    async with asyncio.timeout(10):
        _, headers, body = await connection.response()
        problem_of(408, body, "body-timeout")
        assert headers["connection"] == "close"
        assert await connection.closed()
    assert raw_upstream.uploads == []


@pytest.mark.parametrize(
    ("route", "length"),
    [("open", 1000), ("open", 300_000), ("checked", 1000)],
    ids=["read-whole", "streamed", "validated"],
)
@pytest.mark.observes("server.timeouts.body")
async def test_a_body_that_trickles_past_timeouts_body_is_a_408(
    bounded: Start, raw_upstream: RawUpstream, route: str, length: int, connect: Connect
) -> None:
    # One byte every 100 ms never pauses as long as body_idle (500 ms), but the whole body
    # would take minutes: timeouts.body (1.5 s) ends it.
    server = await bounded(body="1500ms")
    connection = await connect(server)
    fields = ("Content-Type: application/json", f"Content-Length: {length}")
    await connection.send(head("POST", f"/{route}/upload", *fields))

    async def trickle() -> None:
        for _ in range(length):
            await connection.send(b" ")
            await asyncio.sleep(0.1)  # the client's pace: what is under test

    sending = asyncio.ensure_future(trickle())
    try:
        async with asyncio.timeout(10):
            _, headers, body = await connection.response()
    finally:
        sending.cancel()
    problem = problem_of(408, body, "body-timeout")
    assert "timeouts.body)" in str(problem["detail"])
    assert headers["connection"] == "close"
    assert raw_upstream.uploads == []


@pytest.mark.parametrize(("route", "length"), [("open", 1000), ("open", 300_000)])
async def test_a_client_leaving_mid_body_is_logged_as_499_without_a_traceback(
    bounded: Start, raw_upstream: RawUpstream, route: str, length: int, connect: Connect
) -> None:
    server = await bounded(body_idle="30s")
    connection = await connect(server)
    await connection.send(head("POST", f"/{route}/upload", f"Content-Length: {length}") + b"ab")
    connection.close()

    async def logged() -> list[dict[str, object]] | None:
        lines = [e for e in server.events("request") if e.get("method") == "POST"]
        return lines or None

    (line,) = await eventually(logged, timeout=10, what="the access log line of the request")
    assert line["status"] == 499  # nginx's "client closed request"
    assert "Traceback" not in server.output()
    assert await ping(server) == 200


@pytest.mark.parametrize(
    ("path", "fields", "status"),
    [
        ("/nowhere", (), 404),
        ("/private/x", (), 401),
        ("/checked/x", ("Content-Type: application/json",), 413),  # past max_body
        ("/checked/x", ("Content-Type: application/json", "Content-Encoding: br"), 415),
    ],
)
async def test_an_answer_before_the_body_closes_the_connection_without_reading_it(
    bounded: Start,
    raw_upstream: RawUpstream,
    path: str,
    fields: tuple[str, ...],
    status: int,
    connect: Connect,
) -> None:
    server = await bounded(body_idle="30s")
    connection = await connect(server)
    gib = 1024 * MIB
    request = head("POST", path, f"Content-Length: {gib}", *fields)
    await connection.send(request + bytes(64 * 1024))
    async with asyncio.timeout(10):
        got, headers, _ = await connection.response()
        assert got == status
        assert headers["connection"] == "close"
        # The end comes now, though all but 64 KiB of the gigabyte is still to be sent.
        assert await connection.closed()
    assert await ping(server) == 200


# --- connections -------------------------------------------------------------------------------


@pytest.mark.observes("server.max_connections")
async def test_connections_past_max_connections_are_refused_while_the_others_work(
    bounded: Start,
    connect: Connect,
) -> None:
    server = await bounded(max_connections=4, header="30s")
    request = head("GET", "/open/ping")
    held = [await connect(server) for _ in range(4)]
    for connection in held:
        await connection.send(request)
        assert (await connection.response())[0] == 200
    extra = await connect(server)
    async with asyncio.timeout(10):
        _, headers, body = await extra.response()
        problem_of(503, body, "too-many-connections")
        assert headers["connection"] == "close"
        assert headers["retry-after"] == "1"
        assert await extra.closed()
    for connection in held:  # the connections open before go on
        await connection.send(request)
        assert (await connection.response())[0] == 200
    held.pop().close()

    async def served_again() -> bool:
        return await ping(server) == 200

    await eventually(served_again, timeout=10, what="a freed slot taking a new connection")
    for connection in held:
        connection.close()


@pytest.mark.observes("server.timeouts.keepalive")
async def test_an_idle_keep_alive_connection_is_closed_after_timeouts_keepalive(
    bounded: Start, connect: Connect
) -> None:
    server = await bounded(keepalive="300ms", header="30s")
    connection = await connect(server)
    await connection.send(head("GET", "/open/ping"))
    async with asyncio.timeout(10):
        status, headers, _ = await connection.response()
    assert status == 200
    assert headers.get("connection", "keep-alive").lower() != "close"
    # The default (75 s) would hold the idle connection open far past this bound.
    async with asyncio.timeout(5):
        assert await connection.closed()


async def test_the_bounds_hold_in_every_worker(bounded: Start, connect: Connect) -> None:
    server = await bounded("--workers", "2", serving=2, private=False)
    data = head("GET", "/open/x", *(f"X-Filler-{i}: {'a' * 1000}" for i in range(64)))
    for _ in range(4):  # the kernel spreads connections over both workers
        connection = await connect(server)
        await connection.send(data)
        async with asyncio.timeout(10):
            _, _, body = await connection.response()
        problem_of(431, body, "header-too-large")
        silent = await connect(server)
        async with asyncio.timeout(10):
            assert await silent.closed()
