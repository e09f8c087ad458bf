"""What one client may hold of the listener: the time and bytes of a request head, pauses in
a body, and a share of the open connections (``[server]`` and ``[server.timeouts]``).

``ProblemRequestHandler`` (protocol.py) applies the first three per connection;
``Refusal`` answers the connections past ``max_connections``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import structlog

from spork_cli.headers import SERVER
from spork_cli.middleware.request_id import request_id
from spork_cli.problems import CONTENT_TYPE, problem_body

if TYPE_CHECKING:
    from spork_cli.config.model import Server

log = structlog.get_logger("spork.serve")

# After an answer given before the body's end, what the client still sends is discarded for
# this long before the connection closes (Envoy's delayed_close_timeout is 1 s too): a close
# with unread bytes would be a reset, and the client's TCP stack may drop the answer with it.
LINGER = 1.0
# A refused connection is answered and closed within this; past REFUSING such connections at
# once, a new one is closed without an answer, so refusals cannot hold descriptors either.
REFUSAL_GRACE = 1.0
REFUSING = 256
REFUSAL_LOG_EVERY = 10.0


@dataclass(frozen=True, slots=True)
class Bounds:
    """The listener's limits, read once at start (they are static settings)."""

    header_timeout: float = 10.0
    body_idle: float = 30.0
    body_total: float = 60.0
    max_header_size: int = 32 * 1024
    max_connections: int = 1024

    @classmethod
    def of(cls, server: Server) -> Bounds:
        return cls(
            header_timeout=server.timeouts.header,
            body_idle=server.timeouts.body_idle,
            body_total=server.timeouts.body,
            max_header_size=server.max_header_size,
            max_connections=server.max_connections,
        )


DEFAULT_BOUNDS = Bounds()


def head_size(method: str, path: str, raw_headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The bytes of a parsed request head: request line and fields with their separators."""
    size = len(method) + len(path) + 12  # " ", " HTTP/1.1", CRLF
    for name, value in raw_headers:
        size += len(name) + len(value) + 4  # ": ", CRLF
    return size


class Refusals:
    """The connections one listener is refusing now, and the answer they get."""

    def __init__(self, edge_headers: Callable[[], Iterable[tuple[str, str]]]) -> None:
        self.edge_headers = edge_headers
        self.open = 0
        self.count = 0
        self._logged = 0.0

    def answer(self, limit: int) -> bytes:
        rid = request_id(None)
        body = problem_body(
            503,
            "too-many-connections",
            f"the gateway holds its most client connections ({limit}); try again shortly",
            rid,
        )
        lines = [
            "HTTP/1.1 503 Service Unavailable",
            f"Content-Type: {CONTENT_TYPE}",
            f"Content-Length: {len(body)}",
            "Connection: close",
            "Retry-After: 1",
            f"Server: {SERVER}",
            f"X-Request-ID: {rid}",
            *(f"{name}: {value}" for name, value in self.edge_headers()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def note(self, limit: int) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._logged >= REFUSAL_LOG_EVERY:
            self._logged = now
            log.warning(
                "refusing client connections: server.max_connections reached",
                max_connections=limit,
                refused=self.count,
            )


class Refusal(asyncio.Protocol):
    """A connection past ``max_connections``: a 503 problem, then the close. What the client
    sends is never parsed."""

    def __init__(self, refusals: Refusals, limit: int) -> None:
        self.refusals = refusals
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike: no isinstance.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        refusals = self.refusals
        refusals.note(self.limit)
        if refusals.open >= REFUSING:
            transport.abort()
            return
        refusals.open += 1
        self.counted = True
        transport.write(refusals.answer(self.limit))
        if transport.can_write_eof():
            transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(REFUSAL_GRACE, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # discarded: the answer does not depend on it

    def eof_received(self) -> bool:
        return False  # the client is done too: close

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.counted:
            self.counted = False
            self.refusals.open -= 1
