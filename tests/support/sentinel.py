"""A real Redis Sentinel topology for tests: one master, replicas and sentinels on loopback.

Every process is a `tests.support.RedisServer`; sentinels are redis-server in sentinel mode,
each with a writable config file of its own (sentinel rewrites it as its view changes). All
waiting polls the servers' own view of the topology against a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from tests.support.net import LOOPBACK, free_ports
from tests.support.redis_server import RedisServer

SERVICE = "mymaster"
_T = TypeVar("_T")
# Short enough that a failover completes in a few seconds, long enough that a busy CI machine
# does not see a healthy master as down.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class DataServer(RedisServer):
    """A redis-server of the topology; with ``password``, its default user requires it.

    The password is set once the server answers PING (which `RedisServer.start` sends without
    logging in), so a restarted server asks for it again too.
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        port: int,
        *,
        password: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(binary, workdir, port, extra_args=extra_args)
        self.password = password

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        super().start(timeout)
        if self.password is not None:
            with super().client(socket_timeout=2) as client:
                client.config_set("requirepass", self.password)

    def client(self, **kwargs: Any) -> redis.Redis:
        return super().client(**{"password": self.password, "socket_timeout": 2, **kwargs})


class SentinelServer(RedisServer):
    """redis-server in sentinel mode, monitoring ``service`` at ``master`` from the start."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        port: int,
        *,
        master: tuple[str, int],
        service: str = SERVICE,
        quorum: int = 1,
        auth_pass: str | None = None,
    ) -> None:
        super().__init__(binary, workdir, port)
        self.config_file = workdir / f"sentinel-{port}.conf"
        host, master_port = master
        lines = [
            f"sentinel monitor {service} {host} {master_port} {quorum}",
            f"sentinel down-after-milliseconds {service} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {service} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {service} 1",
        ]
        if auth_pass is not None:
            lines.append(f"sentinel auth-pass {service} {auth_pass}")
        self.config_file.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        # The config file must come first; sentinel refuses to start without one it can write.
        # `--save` and `--appendonly` mean nothing to a sentinel, so they are left out.
        return [
            self.binary, str(self.config_file), "--sentinel",
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--logfile", str(self.logfile),
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip

    @property
    def logfile(self) -> Path:
        return self.workdir / f"sentinel-{self.port}.log"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[str, str]:
    """A SENTINEL MASTER/REPLICAS entry as text, whether it came back as a map or a flat list."""
    if isinstance(raw, dict):
        return {_text(key): _text(value) for key, value in raw.items()}
    items = [_text(item) for item in raw]
    return dict(zip(items[::2], items[1::2], strict=True))


def replication_info(server: RedisServer) -> dict[str, str]:
    """`INFO replication` of a data server as text; empty when it does not answer."""
    try:
        with server.client(decode_responses=True, socket_timeout=2) as client:
            info = client.info("replication")
    except redis.RedisError:
        return {}
    return {str(key): str(value) for key, value in info.items()}


class RedisSentinel:
    """One master, its replicas and the sentinels that watch them, all started by `start()`.

    The master may change: `master` is whichever data server the sentinels currently name;
    `request_failover()`, `kill_master()` and `demote()` move it. `ensure_healthy()` brings
    back anything a test left stopped, so the next test starts from a settled topology.
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        service: str = SERVICE,
        password: str | None = None,
        data_args: tuple[str, ...] = (),
    ) -> None:
        ports = free_ports(1 + replicas + sentinels)
        # Without a delay a (re)joining replica syncs at once instead of 5 s later.
        self._base_args = (
            "--repl-diskless-sync-delay", "0",
            *(("--masterauth", password) if password else ()),
            *data_args,
        )  # fmt: skip
        self.service = service
        self.password = password
        self.data = [DataServer(binary, workdir / "data", ports[0], password=password)]
        self.data[0].extra_args = self._base_args
        for port in ports[1 : 1 + replicas]:
            server = DataServer(binary, workdir / "data", port, password=password)
            self.data.append(server)
            self.restart_args(server, self.data[0])
        # A majority must agree the master is down before a failover that nobody asked for.
        quorum = sentinels // 2 + 1
        self.sentinels = [
            SentinelServer(
                binary,
                workdir / "sentinel",
                port,
                master=(LOOPBACK, ports[0]),
                service=service,
                quorum=quorum,
                auth_pass=password,
            )
            for port in ports[1 + replicas :]
        ]

    # -- addresses ------------------------------------------------------------------------------

    def url(self, *, userinfo: str = "", db: int | None = None) -> str:
        """``redis+sentinel://[userinfo@]host:port,.../service[/db]`` of every sentinel."""
        hosts = ",".join(f"{server.host}:{server.port}" for server in self.sentinels)
        user = f"{userinfo}@" if userinfo else ""
        tail = "" if db is None else f"/{db}"
        return f"redis+sentinel://{user}{hosts}/{self.service}{tail}"

    def server_at(self, address: tuple[str, int]) -> DataServer:
        for server in self.data:
            if (server.host, server.port) == address:
                return server
        raise LookupError(f"no data server at {address}")

    def master_address(self, sentinel: RedisServer) -> tuple[str, int] | None:
        """What one sentinel answers to GET-MASTER-ADDR-BY-NAME; None when it cannot say."""
        try:
            with sentinel.client(decode_responses=True, socket_timeout=2) as client:
                reply = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        except redis.RedisError:
            return None
        if not reply:
            return None
        host, port = reply
        return str(host), int(port)

    @property
    def master(self) -> DataServer:
        """The data server every sentinel names as master (raises while they disagree)."""
        addresses = {self.master_address(sentinel) for sentinel in self.sentinels}
        if len(addresses) != 1 or None in addresses:
            raise LookupError(f"the sentinels do not agree on a master: {addresses}")
        (address,) = addresses
        assert address is not None
        return self.server_at(address)

    @property
    def replicas(self) -> list[DataServer]:
        master = self.master
        return [server for server in self.data if server is not master]

    @property
    def ports(self) -> set[int]:
        """The ports of every process of the topology."""
        return {server.port for server in [*self.data, *self.sentinels]}

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        for server in [*self.data, *self.sentinels]:
            server.start()
        self.wait_settled(self.data[0], timeout=timeout)

    def stop(self) -> None:
        # Sentinels first, so none of them reacts to the data servers going away.
        for server in [*self.sentinels, *self.data]:
            server.stop()

    def settled(self, master: RedisServer) -> str | None:
        """Why the topology is not yet settled around ``master``; None once it is.

        Settled: every data server runs; ``master`` says it is master and every other data
        server replicates it with its link up; every sentinel names ``master``, has no
        failover in progress, knows every other sentinel and sees every replica reachable.
        """
        if not all(server.running for server in [*self.data, *self.sentinels]):
            return "a process is not running"
        if replication_info(master).get("role") != "master":
            return f"{master.port} is not a master"
        for server in self.data:
            if server is master:
                continue
            info = replication_info(server)
            if info.get("role") != "slave" or info.get("master_port") != str(master.port):
                return f"{server.port} does not replicate {master.port}: {info.get('role')}"
            if info.get("master_link_status") != "up":
                return f"{server.port} has its link to the master down"
        for sentinel in self.sentinels:
            reason = self._sentinel_settled(sentinel, master)
            if reason is not None:
                return f"sentinel {sentinel.port}: {reason}"
        return None

    def _sentinel_settled(self, sentinel: RedisServer, master: RedisServer) -> str | None:
        if self.master_address(sentinel) != (master.host, master.port):
            return f"names {self.master_address(sentinel)}, not {master.port}"
        try:
            with sentinel.client(socket_timeout=2) as client:
                state = _fields(client.execute_command("SENTINEL", "MASTER", self.service))
                known = [
                    _fields(entry)
                    for entry in client.execute_command("SENTINEL", "REPLICAS", self.service)
                ]
        except redis.RedisError as exc:
            return f"does not answer: {exc}"
        if state.get("flags") != "master":
            return f"flags are {state.get('flags')}"
        if state.get("num-other-sentinels") != str(len(self.sentinels) - 1):
            return f"knows {state.get('num-other-sentinels')} other sentinels"
        # Only "reachable replica": what a sentinel says of a replica's own link comes from an
        # INFO it refreshes every 10 s, and the replicas themselves were asked above.
        usable = {int(entry["port"]) for entry in known if entry.get("flags") == "slave"}
        wanted = {server.port for server in self.data if server is not master}
        if not wanted <= usable:
            return f"sees usable replicas {sorted(usable)}, wants {sorted(wanted)}"
        return None

    def wait_settled(self, master: RedisServer, timeout: float = 30.0) -> None:
        wait_until(lambda: self.settled(master) is None, timeout, lambda: self.settled(master))

    def ensure_healthy(self, timeout: float = 30.0) -> DataServer:
        """Restart anything stopped (data servers as replicas of the current master) and wait
        until the topology is settled; the master."""
        for sentinel in self.sentinels:
            sentinel.start()
        master = wait_until(self._agreed_master, timeout, lambda: "no agreed master")
        for server in self.data:
            if not server.running:
                self.restart_as_replica(server, master)
        self.wait_settled(master, timeout)
        return master

    def _agreed_master(self) -> DataServer | None:
        try:
            master = self.master
        except LookupError:
            return None
        return master if master.running else None

    def restart_args(self, server: RedisServer, master: RedisServer) -> None:
        """Make ``server`` start as a replica of ``master`` from now on."""
        server.extra_args = (*self._base_args, "--replicaof", master.host, str(master.port))

    def restart_as_replica(self, server: RedisServer, master: RedisServer) -> None:
        """Start a stopped data server as a replica of ``master``, as an operator would."""
        self.restart_args(server, master)
        server.start()

    def request_failover(self) -> DataServer:
        """Ask a sentinel for a failover (`SENTINEL FAILOVER`); the master it replaces.

        The sentinel promotes a replica at once but reconfigures the old master, and so
        disconnects its clients, only about ten seconds later: until then it still takes
        writes from clients that have not asked the sentinels again.
        """
        old = self.master
        with self.sentinels[-1].client(socket_timeout=2) as client:
            client.execute_command("SENTINEL", "FAILOVER", self.service)
        return old

    def kill_master(self) -> DataServer:
        """SIGKILL the master, as a crash would; the master that died."""
        old = self.master
        old.stop(kill=True)
        return old

    def demote(self, server: DataServer, master: DataServer) -> None:
        """`REPLICAOF master` on ``server``, which keeps its clients connected (unlike the
        sentinels, which disconnect them): their next write is answered READONLY."""
        with server.client() as client:
            client.replicaof(master.host, master.port)

    def disconnect_clients(self, server: DataServer) -> None:
        """`CLIENT KILL TYPE normal` on ``server``: every client but the one asking loses its
        connection, as when the sentinels reconfigure a server."""
        with server.client() as client:
            client.execute_command("CLIENT", "KILL", "TYPE", "normal")

    def wait_new_master(self, old: RedisServer, timeout: float = 30.0) -> DataServer:
        """Wait until every sentinel names the same master, other than ``old``, and it says so
        itself."""

        def promoted() -> DataServer | None:
            master = self._agreed_master()
            if master is None or master is old:
                return None
            info = replication_info(master)
            return master if info.get("role") == "master" else None

        return wait_until(promoted, timeout, lambda: f"sentinels name {self._names()}")

    def _names(self) -> list[tuple[str, int] | None]:
        return [self.master_address(sentinel) for sentinel in self.sentinels]

    def flushall(self) -> None:
        with self.master.client() as client:
            client.flushall()
        # The replicas must have it too, or a failover could bring old keys back.
        self.replicate()

    def replicate(self, timeout: float = 5.0) -> None:
        """Return once every replica has acknowledged all writes made on the master so far."""
        replicas = len(self.data) - 1
        with self.master.client(socket_timeout=timeout + 1) as client:
            acked = int(client.execute_command("WAIT", replicas, int(timeout * 1000)))
        if acked < replicas:
            raise TimeoutError(f"{acked} of {replicas} replicas acknowledged within {timeout}s")

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {type(server).__name__} {server.port} ---\n{server.log_tail()}"
            for server in [*self.data, *self.sentinels]
        )


def wait_until(
    probe: Callable[[], _T], timeout: float, explain: Callable[[], object] = lambda: None
) -> _T:
    """Poll ``probe`` until it returns something truthy; TimeoutError (with ``explain()``)
    after ``timeout`` seconds. The synchronous twin of `tests.support.eventually`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not within {timeout}s: {explain()}")
        time.sleep(0.05)


def start_redis_sentinel(
    binary: str, workdir: Path, *, attempts: int = 3, **options: Any
) -> RedisSentinel:
    """Start a `RedisSentinel` on free ports, trying new ports if another process took one."""
    error: Exception | None = None
    for attempt in range(attempts):
        topology = RedisSentinel(binary, workdir / f"try{attempt}", **options)
        try:
            topology.start()
        except (RuntimeError, TimeoutError) as exc:
            error = exc
            topology.stop()
            continue
        return topology
    raise RuntimeError(f"could not start a Redis Sentinel after {attempts} attempts") from error


def keys_on(server: RedisServer, pattern: str = "*", *, db: int = 0) -> list[str]:
    """The keys of one database of one data server, sorted, read from that server directly."""
    with server.client(db=db, decode_responses=True) as client:
        return sorted(str(key) for key in client.scan_iter(match=pattern, count=500))
