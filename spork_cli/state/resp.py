"""A lean, pipelined asyncio client for standalone Redis (RESP2), for the gateway's hot path.

    RespError                  anything this client raises on purpose
     ├── ReplyError            the server answered a command with an error reply
     ├── ProtocolError         the server sent bytes that are not RESP2
     └── ConnectionError       cannot connect or authenticate, the connection was lost with
                               the call in flight, or the client is closed (also an OSError)

Replies: bulk and simple strings -> bytes, integer -> int, array -> list, nil -> None. An
error nested in an array is returned as a ReplyError value, not raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl as _ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from spork_cli.state.resp_wire import (
    HAVE_HIREDIS,
    NEED_MORE,
    Arg,
    ConnectionError,
    ProtocolError,
    PythonReader,
    Reader,
    ReplyError,
    RespError,
    encode,
    new_reader,
    pack,
)

USER_TIMEOUT = 10.0  # seconds sent data may go unacknowledged before the connection fails
USER_TIMEOUT_OPTION: int | None = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux

__all__ = [
    "HAVE_HIREDIS",
    "NEED_MORE",
    "Arg",
    "ConnectionError",
    "ProtocolError",
    "PythonReader",
    "Reader",
    "ReplyError",
    "RespClient",
    "RespError",
    "Script",
    "encode",
    "new_reader",
]


class Script:
    """A Lua script known by its SHA1, so calls send the digest instead of the source."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _Connection(asyncio.Protocol):
    """One socket; replies arrive in command order, so each resolves the oldest waiter."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reader: Reader) -> None:
        self._loop = loop
        self._reader = reader
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self.lost = False
        self._reason = ""
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX and USER_TIMEOUT_OPTION:
            # A peer that vanishes without a reset (a cut network) fails this connection after
            # USER_TIMEOUT instead of the kernel's ~15 minutes, with its waiters.
            sock.setsockopt(socket.IPPROTO_TCP, USER_TIMEOUT_OPTION, int(USER_TIMEOUT * 1000))

    def send(self, data: bytes) -> asyncio.Future[Any]:
        fut = self._loop.create_future()
        if self.lost:  # lost after the caller got it, before the caller resumed
            fut.set_exception(ConnectionError(self._reason))
            return fut
        self._waiters.append(fut)
        # Commands issued in one loop iteration go out in one write: one syscall for the
        # whole burst, and Redis reads them in one go too.
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(data)
        return fut

    def _flush(self) -> None:
        if not self.lost and self._transport is not None:
            out = self._out
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        self._out = []

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiters = self._waiters
        while True:
            try:
                reply = self._reader.gets()
            except ProtocolError as exc:
                self._drop(f"Redis sent a malformed reply ({exc})")
                return
            if reply is NEED_MORE:
                return
            if not waiters:
                self._drop("Redis sent a reply nobody asked for")
                return
            fut = waiters.popleft()
            # A cancelled caller leaves its slot in the queue; its reply ends here.
            if fut.done():
                continue
            if type(reply) is ReplyError:
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def _drop(self, reason: str) -> None:
        self._fail(reason)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, reason: str) -> None:
        if not self.lost:
            self.lost, self._reason = True, reason
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError(reason))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("connection to Redis lost" + (f": {exc}" if exc else ""))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        self._fail("the client was closed")
        if self._transport is not None:
            self._transport.close()


class RespClient:
    """Commands pipelined over ``connections`` sockets (round-robin), reconnecting on demand.

    A call that fails because the connection went away is not retried: it may have run.
    Bound each call with ``asyncio.timeout``; a cancelled call does not disturb the others.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        *,
        unix_path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        ssl: _ssl.SSLContext | None = None,
        connect_timeout: float,
        connections: int = 1,
        use_hiredis: bool | None = None,
        require_master: bool = False,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self._host, self._port, self._unix_path = host, port, unix_path
        self._username, self._password, self._db, self._ssl = username, password, db, ssl
        self._connect_timeout = connect_timeout
        self._use_hiredis = use_hiredis
        # Sentinel's master: a connection to a server that has become a replica is refused,
        # so the caller asks the sentinels again instead of reading stale data.
        self._require_master = require_master
        self._conns: list[_Connection | None] = [None] * connections
        self._connecting: list[asyncio.Task[_Connection] | None] = [None] * connections
        self._next = 0
        self._closed = False
        self.where = unix_path or f"{host}:{port}"

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        connect_timeout: float,
        connections: int = 1,
        use_hiredis: bool | None = None,
    ) -> RespClient:
        """``redis://[user:pass@]host[:port][/db]``, ``rediss://…[?ssl_cert_reqs=none]`` or
        ``unix:///path[?db=N][&password=…]``."""
        parts = urlsplit(url)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        options: dict[str, Any] = {}
        username = unquote(parts.username) if parts.username else query.get("username")
        password = unquote(parts.password) if parts.password else query.get("password")
        db = query.get("db", "0")
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"no socket path in {url!r}")
            options["unix_path"] = unquote(parts.path)
        elif parts.scheme in ("redis", "rediss"):
            options["host"] = parts.hostname or "localhost"
            options["port"] = parts.port or 6379
            db = parts.path.strip("/") or db
        else:
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        if parts.scheme == "rediss":
            context = _ssl.create_default_context()
            if query.get("ssl_cert_reqs", "").lower() == "none":
                context.check_hostname = False
                context.verify_mode = _ssl.CERT_NONE
            options["ssl"] = context
        if not db.isdigit():
            raise ValueError(f"bad database number {db!r} in {url!r}")
        return cls(
            username=username,
            password=password,
            db=int(db),
            connect_timeout=connect_timeout,
            connections=connections,
            use_hiredis=use_hiredis,
            **options,
        )

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply; an error reply raises ReplyError."""
        index = self._next
        if len(self._conns) > 1:
            self._next = (index + 1) % len(self._conns)
        conn = self._conns[index]
        if conn is None or conn.lost:
            conn = await self._connection(index)
        return await conn.send(pack(args))

    async def pipeline(self, *commands: Sequence[Arg]) -> list[Any]:
        """Send ``commands`` back to back on one connection, nothing in between (as ASKING and
        the command it applies to must be); the replies, error replies as ReplyError values."""
        index = self._next
        if len(self._conns) > 1:
            self._next = (index + 1) % len(self._conns)
        conn = self._conns[index]
        if conn is None or conn.lost:
            conn = await self._connection(index)
        sent = [conn.send(pack(tuple(command))) for command in commands]
        return list(await asyncio.gather(*sent, return_exceptions=True))

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run ``script`` by digest, sending the source (which caches it) only on NOSCRIPT."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def _connection(self, index: int) -> _Connection:
        if self._closed:
            raise ConnectionError("the Redis client is closed")
        task = self._connecting[index]
        if task is None:
            task = self._connecting[index] = asyncio.create_task(self._open(index))
        # Shielded: one caller giving up must not abort the attempt the others wait on.
        return await asyncio.shield(task)

    async def _open(self, index: int) -> _Connection:
        loop = asyncio.get_running_loop()
        reader = new_reader(use_hiredis=self._use_hiredis)
        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._unix_path is not None:
                    _, conn = await loop.create_unix_connection(
                        lambda: _Connection(loop, reader), self._unix_path
                    )
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop, reader),
                        self._host,
                        self._port,
                        ssl=self._ssl,
                        server_hostname=self._host if self._ssl else None,
                    )
                try:
                    await self._handshake(conn)
                except BaseException:
                    conn.close()
                    raise
        except ConnectionError:
            raise
        except TimeoutError as exc:
            raise ConnectionError(
                f"no connection to Redis at {self.where} within {self._connect_timeout:g}s"
            ) from exc
        except OSError as exc:
            raise ConnectionError(f"cannot connect to Redis at {self.where}: {exc}") from exc
        finally:
            self._connecting[index] = None
        self._conns[index] = conn
        if self._closed:
            conn.close()
            raise ConnectionError("the Redis client is closed")
        return conn

    async def _handshake(self, conn: _Connection) -> None:
        try:
            if self._username is not None and self._password is not None:
                await conn.send(encode(("AUTH", self._username, self._password)))
            elif self._password is not None:
                await conn.send(encode(("AUTH", self._password)))
            if self._db:
                await conn.send(encode(("SELECT", self._db)))
            if self._require_master:
                role = await conn.send(encode(("ROLE",)))
                if not role or role[0] != b"master":
                    raise ConnectionError(f"Redis at {self.where} is no longer the master")
        except ReplyError as exc:
            raise ConnectionError(f"Redis at {self.where} refused the connection: {exc}") from exc

    def close(self) -> None:
        """Fail every call in flight and close the sockets; later calls raise."""
        self._closed = True
        for conn in self._conns:
            if conn is not None:
                conn.close()

    @property
    def finished(self) -> bool:
        """Closed, with no socket or connect attempt left for aclose() to wait for."""
        return (
            self._closed
            and not any(self._connecting)
            and all(conn.closed.done() for conn in self._conns if conn)
        )

    async def aclose(self) -> None:
        """close(), then wait until the sockets and any connect attempt are finished."""
        self.close()
        # A connect attempt that finishes now closes its own socket, so wait for it first.
        await asyncio.gather(*[t for t in self._connecting if t], return_exceptions=True)
        await asyncio.gather(*[conn.closed for conn in self._conns if conn])

    async def __aenter__(self) -> RespClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
