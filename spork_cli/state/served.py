"""One memory store for every worker of `spork serve --workers N`.

The supervisor holds the memory store and serves its primitives on a Unix socket in its
private run directory (mode 0700); each worker's store is a `ServedStore` that sends every
call there. Each primitive is one atomic call on one event loop, as in one process, so the
workers behave as one gateway: a limit counts every worker's requests, a breaker forced or a
token revoked through the admin API applies in all of them, and `spork instances` lists them.

A frame is a 4-byte big-endian length and a pickle of ``(method, args)`` one way and of
``(status, value)`` the other. Answers come in the order of the calls on a connection, so a
worker sends calls without waiting (one connection, pipelined). Unpickling accepts only the
state dataclasses: nothing else can be built from a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pickle
import socket
import struct
from collections import deque
from collections.abc import Mapping
from typing import Any

import structlog

from spork_cli import state as state_types
from spork_cli.config.model import State
from spork_cli.errors import StateError
from spork_cli.state.memory_limiter import LimiterFull

log = structlog.get_logger("spork.state")

SOCKET_ENV = "SPORK_STATE_SOCKET"  # set by the supervisor for its workers
_LENGTH = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024  # a cached response is at most the cache's max_body; far below
# What a worker may ask: the StateStore primitives, never start or close.
METHODS = frozenset(
    {
        "scan",
        "delete",
        "ping",
        "revoke",
        "is_revoked",
        "heartbeat",
        "instances",
        "rate_limit",
        "breaker_allow",
        "breaker_record",
        "breaker_read",
        "breaker_force",
        "breaker_reset",
        "cache_get",
        "cache_set",
        "cache_invalidate",
        "cache_count",
        "cache_stats",
    }
)
_CLASSES = {
    cls.__name__: cls
    for cls in (
        state_types.LimitResult,
        state_types.BreakerPolicy,
        state_types.BreakerDecision,
        state_types.BreakerState,
        state_types.CacheHit,
    )
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == state_types.__name__ and name in _CLASSES:
            return _CLASSES[name]
        raise pickle.UnpicklingError(f"{module}.{name} is not a state value")


def _dumps(value: object) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


def _loads(payload: bytes) -> Any:
    return _Unpickler(io.BytesIO(payload)).load()


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > MAX_FRAME:
        raise pickle.UnpicklingError(f"a frame of {length} bytes is over the limit")
    return _loads(await reader.readexactly(length))


class StoreServer:
    """Serves ``store``'s primitives on the Unix socket ``path`` (in the supervisor)."""

    def __init__(
        self, store: state_types.StateStore, path: str, *, children_only: bool = False
    ) -> None:
        self.store = store
        self.path = path
        # Answer only this process's own children (the workers), by the peer's credentials:
        # another process of the same user cannot read or change the state.
        self.children_only = children_only
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, self.path)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.children_only and not _is_child(writer):
            log.warning("refused a state connection from outside this gateway's workers")
            writer.close()
            return
        self._connections.add(writer)
        try:
            while True:
                try:
                    method, args = await _read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                writer.write(_dumps(await self._call(method, args)))
                if writer.transport.get_write_buffer_size() > 1024 * 1024:
                    await writer.drain()
        except (pickle.UnpicklingError, ValueError, TypeError) as exc:
            log.warning("a worker sent what is not a state call; closing it", error=str(exc))
        except ConnectionError:
            return
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _call(self, method: str, args: tuple[Any, ...]) -> tuple[str, Any]:
        if method not in METHODS:
            return ("state", f"{method!r} is not a state primitive")
        try:
            return ("ok", await getattr(self.store, method)(*args))
        except ValueError as exc:
            return ("value", str(exc))
        except LimiterFull as exc:
            # A refusal, not an outage: the worker refuses the new client as one process does.
            return ("full", (str(exc), exc.retry_after))
        except StateError as exc:
            return ("state", str(exc))
        except Exception as exc:  # never take the supervisor down for one call
            log.exception("a state call failed", method=method)
            return ("state", f"{method} failed: {exc}")


_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _is_child(writer: asyncio.StreamWriter) -> bool:
    """Whether the peer of this Unix socket connection is a child of this process (Linux's
    SO_PEERCRED; where it is missing, the directory's 0700 alone guards the socket)."""
    peercred = getattr(socket, "SO_PEERCRED", None)
    sock = writer.get_extra_info("socket")
    if peercred is None or sock is None:
        return True
    pid, _, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, peercred, _PEERCRED.size))
    try:
        with open(f"/proc/{pid}/stat") as stat:
            parent = int(stat.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return False
    return parent == os.getpid()


class ServedStore:
    """A worker's store: every call goes to the supervisor's memory store (`StoreServer`)."""

    backend = "memory"

    def __init__(self, config: State, path: str) -> None:
        self.prefix = config.prefix
        self.timeout = config.timeout
        self.path = path
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        # The calls sent on the current connection and not answered yet, in order; a new
        # connection starts a new queue, so no answer can reach a call of another one.
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._connecting: asyncio.Lock | None = None

    def share_limits(self, tiers: object) -> None:
        """The supervisor's store shares its limiter room out by its own config."""

    async def start(self) -> None:
        try:
            await self._connect()
        except StateError as exc:
            log.warning("the supervisor's state store is not reachable yet", error=str(exc))

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        self._fail(StateError("the state store is closed"))

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(self.path), self.timeout
                )
            except (OSError, TimeoutError) as exc:
                raise StateError(f"the supervisor's state store at {self.path}: {exc}") from exc
            self._writer = writer
            pending: deque[asyncio.Future[Any]] = deque()
            self._pending = pending
            self._reader_task = asyncio.create_task(self._answers(reader, writer, pending))
            return writer

    async def _answers(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pending: deque[asyncio.Future[Any]],
    ) -> None:
        try:
            while True:
                answer = await _read_frame(reader)
                future = pending.popleft()  # IndexError: an answer nobody asked for
                if not future.done():
                    future.set_result(answer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever ends this connection ends it for its calls
            if self._writer is writer:
                self._writer = None
            writer.close()
            self._fail(StateError(f"the supervisor's state store went away: {exc!r}"), pending)

    def _fail(self, error: StateError, pending: deque[asyncio.Future[Any]] | None = None) -> None:
        pending = self._pending if pending is None else pending
        while pending:
            future = pending.popleft()
            if not future.done():
                future.set_exception(error)

    async def _call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        writer = self._writer
        if writer is None or writer.is_closing():
            writer = await self._connect()
        frame = _dumps((method, args))
        if len(frame) - _LENGTH.size > MAX_FRAME:
            # Refused here, for this call alone: the supervisor would drop the connection.
            raise StateError(f"{method}: {len(frame)} bytes is more than the store takes")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(future)  # the queue of the connection `writer` belongs to
        writer.write(frame)
        try:
            status, value = await asyncio.wait_for(future, timeout or self.timeout)
        except TimeoutError:
            raise StateError(f"the state store did not answer {method} in time") from None
        if status == "ok":
            return value
        if status == "value":
            raise ValueError(value)
        if status == "full":
            message, retry_after = value
            raise LimiterFull(message, retry_after)
        raise StateError(value)

    async def ping(self, timeout: float | None = None) -> None:
        await self._call("ping", timeout=timeout)

    async def scan(self, match: str, limit: int = 10_000) -> list[str]:
        return await self._call("scan", match, limit)  # type: ignore[no-any-return]

    async def delete(self, keys: list[str]) -> int:
        return await self._call("delete", keys)  # type: ignore[no-any-return]

    async def revoke(self, jti: str, ttl: float) -> None:
        await self._call("revoke", jti, ttl)

    async def is_revoked(self, jti: str) -> bool:
        return await self._call("is_revoked", jti)  # type: ignore[no-any-return]

    async def heartbeat(self, instance: str, info: bytes, ttl: float) -> None:
        await self._call("heartbeat", instance, info, ttl)

    async def instances(self) -> dict[str, bytes]:
        return await self._call("instances")  # type: ignore[no-any-return]

    async def rate_limit(
        self, key: str, algorithm: str, rate: int, period: float, burst: int, cost: int = 1
    ) -> state_types.LimitResult:
        return await self._call(  # type: ignore[no-any-return]
            "rate_limit", key, algorithm, rate, period, burst, cost
        )

    async def breaker_allow(
        self, key: str, policy: state_types.BreakerPolicy
    ) -> state_types.BreakerDecision:
        return await self._call("breaker_allow", key, policy)  # type: ignore[no-any-return]

    async def breaker_record(
        self, key: str, policy: state_types.BreakerPolicy, success: bool, probe: bool
    ) -> state_types.BreakerState:
        return await self._call(  # type: ignore[no-any-return]
            "breaker_record", key, policy, success, probe
        )

    async def breaker_read(self, key: str) -> state_types.BreakerState | None:
        return await self._call("breaker_read", key)  # type: ignore[no-any-return]

    async def breaker_force(
        self, key: str, state: state_types.ForcedState | None
    ) -> state_types.BreakerState | None:
        return await self._call("breaker_force", key, state)  # type: ignore[no-any-return]

    async def breaker_reset(self, key: str) -> None:
        await self._call("breaker_reset", key)

    async def cache_get(self, key: str, marker: str) -> state_types.CacheHit | None:
        return await self._call("cache_get", key, marker)  # type: ignore[no-any-return]

    async def cache_set(
        self, key: str, value: bytes, ttl: float, marker: str, asked: float
    ) -> bool:
        return await self._call(  # type: ignore[no-any-return]
            "cache_set", key, value, ttl, marker, asked
        )

    async def cache_invalidate(self, marker: str, ttl: float) -> None:
        await self._call("cache_invalidate", marker, ttl)

    async def cache_count(self, stats: str, counts: Mapping[str, int]) -> None:
        await self._call("cache_count", stats, dict(counts))

    async def cache_stats(self, stats: str) -> dict[str, int]:
        return await self._call("cache_stats", stats)  # type: ignore[no-any-return]
