"""How the Redis store reaches its data: one server, a Cluster (keys routed to the node that
owns their slot), or the master a Sentinel names. Each is a thin layer over `RespClient`.

Every link offers the same three calls: ``call(key, *args)`` runs a command on the node that
holds ``key``, ``evalsha(script, keys, args)`` a script on the node holding its keys (one
slot: the store hash-tags them), and ``primaries()`` the clients of every primary (for SCAN).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from spork_cli.state.resp import Arg, ConnectionError, ReplyError, RespClient, Script
from spork_cli.state.sentinel import Sentinel

SLOTS = 16384


class Link(Protocol):
    where: str

    async def call(self, key: str, *args: Arg) -> Any: ...

    async def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any: ...

    async def primaries(self) -> list[RespClient]: ...

    async def aclose(self) -> None: ...


class Standalone:
    def __init__(self, client: RespClient) -> None:
        self.client = client
        self.where = client.where

    async def call(self, key: str, *args: Arg) -> Any:
        return await self.client.execute(*args)

    async def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return await self.client.evalsha(script, keys, args)

    async def primaries(self) -> list[RespClient]:
        return [self.client]

    async def aclose(self) -> None:
        await self.client.aclose()


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def key_slot(key: str | bytes) -> int:
    """The cluster slot of ``key``: CRC16 (XMODEM) of its hash tag, or of all of it."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc % SLOTS


class Cluster:
    """Commands sent straight to the primary owning the key's slot, from a slot map read with
    CLUSTER SLOTS; MOVED updates the map (and re-reads it), ASK is followed once."""

    def __init__(
        self,
        nodes: Sequence[tuple[str, int]],
        *,
        username: str | None,
        password: str | None,
        connect_timeout: float,
        connections: int = 1,
    ) -> None:
        self.seeds = list(nodes)
        self._connections = connections
        self.where = ",".join(f"{h}:{p}" for h, p in nodes)
        self._username, self._password = username, password
        self._connect_timeout = connect_timeout
        self._clients: dict[tuple[str, int], RespClient] = {}
        self._slots: list[tuple[str, int] | None] = [None] * SLOTS
        self._refreshing: asyncio.Task[None] | None = None
        self._mapped = False

    def _client(self, node: tuple[str, int]) -> RespClient:
        client = self._clients.get(node)
        if client is None:
            client = RespClient(
                node[0],
                node[1],
                username=self._username,
                password=self._password,
                connect_timeout=self._connect_timeout,
                connections=self._connections,
            )
            self._clients[node] = client
        return client

    async def _refresh(self) -> None:
        """Read the slot map from the first node that answers (shared by concurrent callers)."""
        if self._refreshing is None:
            self._refreshing = asyncio.create_task(self._read_slots())
        task = self._refreshing
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._refreshing is task:
                self._refreshing = None

    async def _read_slots(self) -> None:
        known = [n for n in self._clients if n not in self.seeds]
        failure: Exception | None = None
        for node in [*self.seeds, *known]:
            try:
                reply = await self._client(node).execute("CLUSTER", "SLOTS")
            except (ConnectionError, ReplyError) as exc:
                failure = exc
                continue
            slots: list[tuple[str, int] | None] = [None] * SLOTS
            for start, end, primary, *_ in reply:
                host = primary[0].decode() if primary[0] else node[0]
                for slot in range(int(start), int(end) + 1):
                    slots[slot] = (host, int(primary[1]))
            self._slots = slots
            self._mapped = True
            return
        raise ConnectionError(f"no Redis Cluster node answered ({failure})")

    async def _node_for(self, key: str) -> RespClient:
        if not self._mapped:
            await self._refresh()
        node = self._slots[key_slot(key)]
        if node is None:
            raise ConnectionError(f"no Redis Cluster node serves the slot of {key!r}")
        return self._client(node)

    async def _run(self, keys: Sequence[str], args: Sequence[Arg], script: Script | None) -> Any:
        """Run a command (or ``script`` over ``keys``, which share one slot) on the node owning
        ``keys[0]``; MOVED updates the map and retries, ASK is followed for one call."""
        key = keys[0]
        client = await self._node_for(key)
        for _ in range(3):
            try:
                if script is not None:
                    return await client.evalsha(script, keys, args)
                return await client.execute(*args)
            except ConnectionError:
                self._mapped = False  # the node may have failed over; re-read the map next
                raise
            except ReplyError as exc:
                kind, _, rest = str(exc).partition(" ")
                if kind not in ("MOVED", "ASK"):
                    raise
                slot, _, address = rest.partition(" ")
                host, _, port = address.rpartition(":")
                node = (host.strip("[]") or client.where.rpartition(":")[0], int(port))
                client = self._client(node)
                if kind == "MOVED":
                    self._slots[int(slot)] = node
                    asyncio.get_running_loop().create_task(self._refresh_quietly())
                else:
                    return await self._asking(client, keys, args, script)
        raise ConnectionError(f"Redis Cluster kept redirecting the slot of {key!r}")

    @staticmethod
    async def _asking(
        client: RespClient, keys: Sequence[str], args: Sequence[Arg], script: Script | None
    ) -> Any:
        # ASKING holds for the next command on its connection only: both in one write.
        command: list[Arg] = ["EVAL", script.source, len(keys), *keys, *args] if script else [*args]
        _, reply = await client.pipeline(["ASKING"], command)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def _refresh_quietly(self) -> None:
        try:
            await self._refresh()
        except ConnectionError:
            self._mapped = False

    async def call(self, key: str, *args: Arg) -> Any:
        return await self._run([key], args, None)

    async def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return await self._run(keys, args, script)

    async def primaries(self) -> list[RespClient]:
        if not self._mapped:
            await self._refresh()
        return [self._client(node) for node in dict.fromkeys(n for n in self._slots if n)]

    async def aclose(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        await asyncio.gather(*(c.aclose() for c in self._clients.values()))


def _nodes(netloc: str, default_port: int) -> list[tuple[str, int]]:
    found = []
    for node in netloc.rpartition("@")[2].split(","):
        host, colon, port = node.rpartition(":")
        if not colon or not port.isdigit() or host.endswith(":"):
            host, port = node, ""  # no port given (a bare IPv6 address has colons too)
        found.append((host.strip("[]"), int(port) if port else default_port))
    return found


def open_link(url: str, connect_timeout: float, connections: int = 1) -> Link:
    """A link for any URL form spork accepts (see `spork_cli.state.redis`), with
    ``connections`` sockets to each node."""
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if parts.scheme == "redis+cluster":
        return Cluster(
            _nodes(parts.netloc, 6379),
            username=username,
            password=password,
            connect_timeout=connect_timeout,
            connections=connections,
        )
    if parts.scheme == "redis+sentinel":
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError(f"name the master in {url!r}: redis+sentinel://host:port/NAME")
        if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError(f"bad database in {url!r}: redis+sentinel://host:port/NAME/DB")
        return Sentinel(
            _nodes(parts.netloc, 26379),
            path[0],
            db=int(path[1]) if len(path) > 1 and path[1].isdigit() else 0,
            username=username,
            password=password,
            connect_timeout=connect_timeout,
            connections=connections,
        )
    client = RespClient.from_url(url, connect_timeout=connect_timeout, connections=connections)
    return Standalone(client)
