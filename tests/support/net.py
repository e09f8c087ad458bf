"""Loopback ports: free ones, waiting for a listener, and the kernel's TCP socket table."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"
CLUSTER_BUS_OFFSET = 10000


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago; callers must tolerate the small race."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_cluster_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Distinct free ports whose cluster bus ports (port + 10000) are free too.

    Every candidate stays bound until all are chosen, so the kernel cannot hand out the same
    port twice and no bus port collides with another node's client port.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(200):
            if len(ports) == count:
                return ports
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
            if port + CLUSTER_BUS_OFFSET > 65535:
                continue
            bus = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(bus)
            try:
                bus.bind((host, port + CLUSTER_BUS_OFFSET))
            except OSError:
                continue
            ports.append(port)
        raise RuntimeError(f"could not find {count} free port pairs for a Redis Cluster")
    finally:
        for sock in held:
            sock.close()


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from exc
            time.sleep(0.02)


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports that were free a moment ago (all held while choosing)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


async def refuses(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing accepts TCP connections on the port any more; a connection that
    is neither accepted nor refused in time counts as not refused."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
    except ConnectionRefusedError:
        return True
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


TCP_ESTABLISHED = "01"
TCP_LISTEN = "0A"


def tcp_sockets() -> list[tuple[int, int, str, int]]:
    """IPv4 TCP sockets of this network namespace: (local port, remote port, state, inode)."""
    rows: list[tuple[int, int, str, int]] = []
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            rows.append(
                (int(local.rpartition(":")[2], 16), int(remote.rpartition(":")[2], 16),
                 state, int(inode))
            )  # fmt: skip
    return rows


# Machine-wide, not per run: two runs on one machine (or two xdist workers) share its ports.
FIXED_PORTS_LOCK = Path(tempfile.gettempdir()) / "spork-tests-fixed-ports.lock"


@contextlib.contextmanager
def hold_fixed_ports(timeout: float = 90.0) -> Iterator[None]:
    """Take turns with every other test process on the machine for the fixed ports the
    README's examples name (8080, 9901, 9100); raise TimeoutError after ``timeout``."""
    with FIXED_PORTS_LOCK.open("a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"another test process held {FIXED_PORTS_LOCK} for {timeout}s"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Relay:
    """A TCP relay on loopback to ``host:port``, for a link that fails while both ends stay
    up: `cut` drops every relayed connection and refuses new ones, `mend` accepts again on
    the same port. What the far end holds is untouched either way."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._relay, LOOPBACK, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def mend(self) -> None:
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_reader, far_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, far_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, far_writer), pipe(far_reader, writer))
        self._links.difference_update((writer, far_writer))
