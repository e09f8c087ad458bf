"""A lean HTTP/1.1 client for the common proxy case: plain-text upstreams, small request
bodies, keep-alive connections.

Per request it does a fraction of the work of aiohttp's general-purpose client (no request
and response objects with dozens of fields, no cookie jar, no tracing hooks, one timer),
which is most of what a proxy spends its CPU on. Responses of known small size are read
whole; anything else (chunked, large, until-close) is handed over as a stream with flow
control. WebSockets, streamed request bodies and TLS upstreams keep using aiohttp's client.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import cast

IDLE_LIMIT = 15.0  # reuse a pooled connection only this long: upstreams close idle ones
READ_BUFFER = 256 * 1024  # past this much unread body, stop reading from the socket
SMALL_BODY = 256 * 1024  # responses up to this size (known in advance) are read whole
MAX_HEAD = 64 * 1024
HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    )
)


class UpstreamError(Exception):
    """The upstream broke the exchange (reset, malformed response): a 502."""


class ConnectFailed(UpstreamError):
    """No connection could be opened (refused, unreachable): safe to retry elsewhere."""


class Disconnected(UpstreamError):
    """The upstream closed the connection before answering at all: retryable."""


class UpstreamTimeout(UpstreamError):
    """The upstream was silent for longer than the timeout: a 504."""


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_waiter",
        "buffer",
        "closed",
        "error",
        "failure",
        "idle_since",
        "paused",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.error: BaseException | None = None
        self.paused = False
        self.idle_since = 0.0
        self.failure: BaseException | None = None  # a timeout that fired: raised by wait()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_BUFFER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        """The timeout's way in: the current (or next) wait raises ``exc``."""
        self.failure = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def wait(self) -> None:
        """Until more data, EOF or an error arrives."""
        if self.failure is not None:
            raise self.failure
        if self.closed:
            raise UpstreamError("the upstream closed the connection") from self.error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def consumed(self) -> None:
        if self.paused and len(self.buffer) <= READ_BUFFER // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def resume(self) -> None:
        """Read on whatever is buffered: the reader needs more before it can consume."""
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class H1Pool:
    """Keep-alive connections to one upstream endpoint, at most ``limit`` at once."""

    def __init__(self, host: str, port: int, limit: int, connect_timeout: float) -> None:
        self.host = host
        self.port = port
        self.limit = limit
        self.connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def _acquire(self) -> tuple[_Connection, bool]:
        """A connection and whether it was reused."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and not conn.buffer and now - conn.idle_since < IDLE_LIMIT:
                return conn, True
            self._discard(conn)
        while self._open >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # the slot handed to us goes to the next in line
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if self._idle:
                return await self._acquire()
        self._open += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await asyncio.get_running_loop().create_connection(
                    _Connection, self.host, self.port
                )
        except TimeoutError as exc:
            self._open -= 1
            self._wake_one()
            raise UpstreamTimeout("connecting timed out") from exc
        except OSError as exc:
            self._open -= 1
            self._wake_one()
            raise ConnectFailed(exc.strerror or str(exc)) from exc
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise
        return conn, False

    def _release(self, conn: _Connection, reusable: bool) -> None:
        if reusable and not conn.closed and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            self._discard(conn)
        self._wake_one()

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open -= 1

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        timeout: float,
    ) -> Response:
        """Send one request; the response head (and small bodies) read within ``timeout``
        of silence. The connection goes back to the pool once the body is consumed."""
        idempotent = method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE")
        head = _request_head(method, target, headers, body)
        for attempt in (0, 1):
            conn, reused = await self._acquire()
            try:
                assert conn.transport is not None
                conn.transport.write(head + body if body else head)
                return await _read_response(self, conn, method, timeout)
            except _StaleConnection as exc:
                # A pooled connection the upstream had closed: nothing was processed, so
                # one try on a fresh connection is safe (RFC 9112, 9.3.1) when idempotent.
                self._release(conn, False)
                if attempt or not reused or not idempotent:
                    raise Disconnected("the upstream closed the connection unanswered") from exc
            except BaseException:
                self._release(conn, False)
                raise
        raise AssertionError("unreachable")


class _StaleConnection(UpstreamError):
    pass


def _request_head(
    method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes | None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers:
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body) if body else 0}")
    lines.append("\r\n")
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: this gives the client's
    # bytes back exactly, whether they were UTF-8 or not (obs-text, RFC 9110 5.5).
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


class Response:
    """A response head; ``body`` is set when it was read whole, else use ``chunks()``."""

    __slots__ = (
        "_conn",
        "_mode",
        "_pool",
        "_remaining",
        "_reusable",
        "body",
        "headers",
        "reason",
        "status",
    )

    def __init__(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self._pool: H1Pool | None = None
        self._conn: _Connection | None = None
        self._mode = ""
        self._remaining = 0
        self._reusable = True

    def content_length(self) -> int | None:
        for name, value in self.headers:
            if name.lower() == "content-length":
                return int(value)
        return None

    async def chunks(self, timeout: float) -> AsyncIterator[bytes]:
        """The body of a streamed response, as it arrives."""
        conn, pool = self._conn, self._pool
        assert conn is not None and pool is not None
        clean = False
        try:
            if self._mode == "length":
                while self._remaining > 0:
                    if not conn.buffer:
                        await _wait(conn, timeout)
                    piece = bytes(conn.buffer[: self._remaining])
                    del conn.buffer[: len(piece)]
                    conn.consumed()
                    self._remaining -= len(piece)
                    yield piece
                clean = True
            elif self._mode == "chunked":
                async for piece in _dechunk(conn, timeout):
                    yield piece
                clean = True
            else:  # until the upstream closes
                while True:
                    if conn.buffer:
                        piece = bytes(conn.buffer)
                        conn.buffer.clear()
                        conn.consumed()
                        yield piece
                    elif conn.closed:
                        if conn.error is not None:
                            raise UpstreamError("the upstream reset the connection mid-body")
                        break
                    else:
                        try:
                            await _wait(conn, timeout)
                        except UpstreamError:
                            if conn.closed and conn.error is None:
                                break
                            raise
        finally:
            # close() may have released it already (the client went away mid-stream).
            if self._conn is conn:
                self._conn = None
                pool._release(conn, clean and self._mode != "close" and self._reusable)

    def close(self) -> None:
        """Give up on an unread body: the connection cannot be reused."""
        if self._conn is not None and self._pool is not None:
            self._pool._release(self._conn, False)
            self._conn = None


async def _wait(conn: _Connection, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    conn.failure = None
    timer = loop.call_later(timeout, conn.fail, UpstreamTimeout("the upstream went silent"))
    try:
        await conn.wait()
    finally:
        timer.cancel()
        conn.failure = None


async def _read_response(pool: H1Pool, conn: _Connection, method: str, timeout: float) -> Response:
    loop = asyncio.get_running_loop()
    # One timer for the head (and a small body): cheaper than a timeout scope per wait.
    conn.failure = None
    timer = loop.call_later(timeout, conn.fail, UpstreamTimeout("the upstream did not answer"))
    try:
        while True:
            end = conn.buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(conn.buffer) > MAX_HEAD:
                    raise UpstreamError("the response head is too large")
                if conn.closed:
                    if not conn.buffer:
                        raise _StaleConnection("closed before answering")
                    raise UpstreamError("the upstream closed mid-response")
                await conn.wait()
                end = conn.buffer.find(b"\r\n\r\n")
            if end > MAX_HEAD:
                raise UpstreamError("the response head is too large")
            head = bytes(conn.buffer[:end])
            del conn.buffer[: end + 4]
            status, reason, headers, length, chunked, keep = _parse_head(head)
            if status >= 200 or status == 101:
                break
            # 1xx interim responses (100 Continue, 103 Early Hints) are not relayed.
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        response = Response(status, reason, headers, None)
        response._pool, response._conn = pool, conn
        if no_body:
            response.body = b""
            pool._release(conn, keep)
            response._conn = None
            return response
        if length is not None and not chunked and length <= SMALL_BODY:
            while len(conn.buffer) < length:
                if conn.closed:
                    raise UpstreamError("the upstream closed mid-body")
                conn.resume()
                await conn.wait()
            response.body = bytes(conn.buffer[:length])
            del conn.buffer[:length]
            conn.consumed()
            pool._release(conn, keep)
            response._conn = None
            return response
        if chunked:
            response._mode = "chunked"
        elif length is not None:
            response._mode, response._remaining = "length", length
        else:
            response._mode = "close"
        response._reusable = keep
        return response
    finally:
        timer.cancel()
        conn.failure = None


def _parse_head(head: bytes) -> tuple[int, str, list[tuple[str, str]], int | None, bool, bool]:
    lines = head.split(b"\r\n")
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
        raise UpstreamError("not an HTTP/1.x response")
    code = status_line[9:12]
    if not code.isdigit() or not 100 <= int(code) <= 599:
        raise UpstreamError("malformed status line")
    status = int(code)
    reason = status_line[13:].decode("latin-1")
    keep = status_line[7:8] == b"1"  # HTTP/1.1 keeps alive unless told otherwise
    length: int | None = None
    chunked = False
    headers: list[tuple[str, str]] = []
    drop: set[bytes] = set()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1:] in (b" ", b"\t"):
            raise UpstreamError("malformed response header")
        key = name.lower()
        value = value.strip()
        if key == b"content-length":
            if not value.isdigit():
                raise UpstreamError("malformed Content-Length")
            if length is not None and length != int(value):
                raise UpstreamError("conflicting Content-Length headers")
            length = int(value)
            continue
        if key == b"transfer-encoding":
            chunked = value.lower().endswith(b"chunked")
            continue
        if key == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"close" in tokens:
                keep = False
            elif b"keep-alive" in tokens:
                keep = True
            drop |= tokens
            continue
        if key in HOP_BY_HOP:
            continue
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    if drop:
        headers = [(k, v) for k, v in headers if k.lower().encode("latin-1") not in drop]
    if length is not None and not chunked:
        headers.append(("Content-Length", str(length)))
    if chunked:
        length = None
    return status, reason, headers, length, chunked, keep


async def _dechunk(conn: _Connection, timeout: float) -> AsyncIterator[bytes]:
    while True:
        end = conn.buffer.find(b"\r\n")
        while end < 0:
            if len(conn.buffer) > 4096:
                raise UpstreamError("malformed chunk size")
            await _wait(conn, timeout)
            end = conn.buffer.find(b"\r\n")
        size_text = bytes(conn.buffer[:end]).split(b";", 1)[0].strip()
        del conn.buffer[: end + 2]
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
            raise UpstreamError("malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            # Trailers (rare) end with an empty line; they are not relayed.
            while True:
                end = conn.buffer.find(b"\r\n")
                while end < 0:
                    await _wait(conn, timeout)
                    end = conn.buffer.find(b"\r\n")
                line = bytes(conn.buffer[:end])
                del conn.buffer[: end + 2]
                if not line:
                    return
        remaining = size
        while remaining > 0:
            if not conn.buffer:
                await _wait(conn, timeout)
            piece = bytes(conn.buffer[:remaining])
            del conn.buffer[: len(piece)]
            conn.consumed()
            remaining -= len(piece)
            yield piece
        while len(conn.buffer) < 2:
            await _wait(conn, timeout)
        if conn.buffer[:2] != b"\r\n":
            raise UpstreamError("malformed chunk")
        del conn.buffer[:2]
