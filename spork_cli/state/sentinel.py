"""The master a Sentinel group names for a service, followed through failovers.

The link asks the sentinels for the master when it first needs it, and again when the master
fails a call or answers as a replica (READONLY). It also listens on a sentinel's
`+switch-master` channel, so a failover is followed as soon as the sentinels announce it:
the old master may take writes for seconds before it is demoted, and those writes are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog

from spork_cli.state.resp import Arg, ConnectionError, ReplyError, RespClient, Script
from spork_cli.state.resp_wire import NEED_MORE, RespError, encode, new_reader

log = structlog.get_logger("spork.state")

# Between rounds over every sentinel when none could be subscribed to.
RESUBSCRIBE_DELAY = 1.0
# How long calls in flight on a master the sentinels have replaced may take to finish.
SWITCH_GRACE = 1.0


class Sentinel:
    """The master a Sentinel names for ``service``; asked again when the sentinels announce a
    failover, when the connection to it fails, or when it answers as a replica (READONLY)."""

    def __init__(
        self,
        sentinels: Sequence[tuple[str, int]],
        service: str,
        *,
        db: int,
        username: str | None,
        password: str | None,
        connect_timeout: float,
        connections: int = 1,
    ) -> None:
        self.sentinels = list(sentinels)
        self.service = service
        self.where = f"{service} via " + ",".join(f"{h}:{p}" for h, p in sentinels)
        self._options: dict[str, Any] = {
            "db": db,
            "username": username,
            "password": password,
            "connect_timeout": connect_timeout,
            "connections": connections,
            "require_master": True,
        }
        self._master: RespClient | None = None
        self._address: tuple[str, int] | None = None
        self._asking: asyncio.Task[RespClient] | None = None
        self._retired: list[RespClient] = []
        self._watcher: asyncio.Task[None] | None = None
        # Bumped by every announced switch: a discovery that began before one is stale.
        self._switches = 0
        # Set while a sentinel's `+switch-master` channel is subscribed to (for tests, logs).
        self.listening = asyncio.Event()

    async def _discover(self) -> RespClient:
        failure: Exception | None = None
        switches = self._switches
        for host, port in self.sentinels:
            probe = RespClient(host, port, connect_timeout=self._options["connect_timeout"])
            try:
                reply = await probe.execute("SENTINEL", "get-master-addr-by-name", self.service)
            except (ConnectionError, ReplyError) as exc:
                failure = exc
                continue
            finally:
                await probe.aclose()
            if not reply:
                failure = ConnectionError(f"the sentinel does not know {self.service!r}")
                continue
            if self._switches != switches and self._master is not None:
                return self._master  # a switch was announced meanwhile, and followed
            address = (reply[0].decode(), int(reply[1]))
            if address != self._address or self._master is None:
                return self._switch_to(address)
            return self._master
        raise ConnectionError(f"no sentinel named a master for {self.where} ({failure})")

    async def _client(self) -> RespClient:
        if self._master is not None:
            return self._master
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._follow_switches())
        if self._asking is None:
            self._asking = asyncio.create_task(self._discover())
        task = self._asking
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._asking is task:
                self._asking = None

    def _forget(self, client: RespClient) -> None:
        if self._master is client:
            self._master = None  # ask the sentinels again on the next call
            self._retire(client)

    def _switch_to(self, address: tuple[str, int], grace: float = 0.0) -> RespClient:
        if self._master is not None:
            self._retire(self._master, grace)
        self._master = RespClient(address[0], address[1], **self._options)
        self._address = address
        return self._master

    def _retire(self, client: RespClient, grace: float = 0.0) -> None:
        """Close ``client`` now (its calls fail), or after ``grace`` seconds (calls in flight
        may finish); aclose() waits for its sockets to be gone."""
        if grace:
            asyncio.get_running_loop().call_later(grace, client.close)
        else:
            client.close()
        self._retired = [c for c in self._retired if not c.finished] + [client]

    async def _guarded(self, client: RespClient, work: Any) -> Any:
        try:
            return await work
        except ConnectionError:
            self._forget(client)
            raise
        except ReplyError as exc:
            if str(exc).startswith("READONLY"):
                self._forget(client)
            raise

    async def call(self, key: str, *args: Arg) -> Any:
        client = await self._client()
        return await self._guarded(client, client.execute(*args))

    async def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        client = await self._client()
        return await self._guarded(client, client.evalsha(script, keys, args))

    async def primaries(self) -> list[RespClient]:
        return [await self._client()]

    async def _follow_switches(self) -> None:
        """Subscribed to `+switch-master` on one sentinel at a time, for as long as the link
        lives: a switch of this service moves the link to the announced master."""
        while True:
            for host, port in self.sentinels:
                with contextlib.suppress(OSError, TimeoutError, RespError):
                    await self._listen(host, port)
                self.listening.clear()
            await asyncio.sleep(RESUBSCRIBE_DELAY)

    async def _listen(self, host: str, port: int) -> None:
        timeout = self._options["connect_timeout"]
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            writer.write(encode(("SUBSCRIBE", "+switch-master")))
            replies = new_reader()
            while data := await reader.read(65536):
                replies.feed(data)
                while (reply := replies.gets()) is not NEED_MORE:
                    self._on_message(reply)
        finally:
            writer.close()

    def _on_message(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) != 3:
            return
        kind, _channel, payload = reply
        if kind == b"subscribe":
            self.listening.set()
            return
        if kind != b"message" or not isinstance(payload, bytes):
            return
        # "<service> <old host> <old port> <new host> <new port>"
        fields = payload.decode(errors="replace").split()
        if len(fields) != 5 or fields[0] != self.service or not fields[4].isdigit():
            return
        self._switches += 1
        address = (fields[3], int(fields[4]))
        if address == self._address:
            return  # already there (a failed call or READONLY got here first)
        log.info("sentinel switched master", service=self.service, to=f"{address[0]}:{address[1]}")
        # Calls in flight on the old master may still finish there before it is closed.
        self._switch_to(address, SWITCH_GRACE)

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        if self._asking is not None:
            self._asking.cancel()
        clients = [*self._retired, *([self._master] if self._master else [])]
        await asyncio.gather(*(c.aclose() for c in clients))
