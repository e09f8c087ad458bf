"""Real parts for tests: redis-server processes, a Redis Cluster, echo upstreams, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
import redis
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
CLUSTER_BUS_OFFSET = 10000
CLUSTER_SLOTS = 16384


# --- ports -------------------------------------------------------------------------------------


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


# --- redis-server ------------------------------------------------------------------------------


def require_binary(name: str) -> str:
    """Path of an executable the suite cannot run without; fail loudly rather than skip."""
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin")
    if path is None:
        pytest.fail(
            f"{name} not found on PATH; the suite needs a real Redis "
            "(Debian/Ubuntu: apt-get install redis-server redis-tools)",
            pytrace=False,
        )
    return path


def redis_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """One PING over a raw socket, so readiness checks hold no client or pool of their own."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process that can be stopped and started again on the same port.

    Nothing is persisted (`--save ''`, `--appendonly no`), so a restart comes back empty, just
    like a crashed cache node.
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        port: int,
        *,
        host: str = LOOPBACK,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.host = host
        self.port = port
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def logfile(self) -> Path:
        return self.workdir / f"redis-{self.port}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def command(self) -> list[str]:
        return [
            self.binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--logfile", str(self.logfile),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> None:
        """Launch the process and return once it answers PING."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not redis_ping(self.host, self.port):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {code}:\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                self.stop(kill=True)
                raise TimeoutError(
                    f"redis-server on port {self.port} did not answer PING within {timeout}s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the process; `kill=True` sends SIGKILL, like a crash, instead of SIGTERM."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            if kill:
                proc.kill()
            else:
                proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def client(self, **kwargs: Any) -> redis.Redis:
        """A sync client for this server; the caller closes it (use it as a context manager)."""
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def start_redis_server(
    binary: str,
    workdir: Path,
    *,
    extra_args: tuple[str, ...] = (),
    attempts: int = 3,
) -> RedisServer:
    """Start a RedisServer on a free port, trying a new port if another process took it first."""
    error: Exception | None = None
    for _ in range(attempts):
        server = RedisServer(binary, workdir, free_port(), extra_args=extra_args)
        try:
            server.start()
        except (RuntimeError, TimeoutError) as exc:
            error = exc
            continue
        return server
    raise RuntimeError(f"could not start redis-server after {attempts} attempts") from error


class RedisClusterNodes:
    """A Redis Cluster of primaries only, each node a RedisServer in its own directory."""

    def __init__(self, servers: list[RedisServer], cli: str) -> None:
        self.servers = servers
        self.cli = cli

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [(server.host, server.port) for server in self.servers]

    @property
    def url(self) -> str:
        host, port = self.nodes[0]
        return f"redis+cluster://{host}:{port}"

    def create(self, timeout: float = 30.0) -> None:
        """Assign slots with redis-cli and wait until every node reports a healthy cluster."""
        addresses = [f"{host}:{port}" for host, port in self.nodes]
        result = subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}"
            )
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = [self.cluster_info(server) for server in self.servers]
            if all(self._healthy(info) for info in states):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"cluster not healthy after {timeout}s: {states}")
            time.sleep(0.05)

    def _healthy(self, info: Mapping[str, str]) -> bool:
        # Gossip must have reached every node, not just slot coverage, or clients may be sent
        # to a node that does not know its peers yet.
        return (
            info.get("cluster_state") == "ok"
            and info.get("cluster_slots_assigned") == str(CLUSTER_SLOTS)
            and info.get("cluster_known_nodes") == str(len(self.servers))
            and info.get("cluster_size") == str(len(self.servers))
        )

    @staticmethod
    def cluster_info(server: RedisServer) -> dict[str, str]:
        try:
            with server.client(decode_responses=True, socket_timeout=2) as client:
                raw = client.execute_command("CLUSTER", "INFO")
        except redis.RedisError:
            return {}
        if isinstance(raw, dict):
            return {str(key): str(value) for key, value in raw.items()}
        pairs = (line.partition(":") for line in str(raw).splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, _, value in pairs}

    def primaries(self) -> list[RedisServer]:
        found: list[RedisServer] = []
        for server in self.servers:
            with server.client(decode_responses=True, socket_timeout=2) as client:
                if client.execute_command("ROLE")[0] == "master":
                    found.append(server)
        return found

    def flushall(self) -> None:
        for server in self.primaries():
            with server.client(socket_timeout=5) as client:
                client.flushall()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_redis_cluster(
    binary: str, cli: str, workdir: Path, size: int = 3, attempts: int = 3
) -> RedisClusterNodes:
    """Start `size` cluster-enabled redis-servers on free port pairs and join them."""
    error: Exception | None = None
    for attempt in range(attempts):
        servers: list[RedisServer] = []
        try:
            for port in free_cluster_ports(size):
                node_dir = workdir / f"try{attempt}-node-{port}"
                server = RedisServer(
                    binary,
                    node_dir,
                    port,
                    extra_args=(
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", f"nodes-{port}.conf",
                        "--cluster-node-timeout", "5000",
                    ),
                )  # fmt: skip
                servers.append(server)
                server.start()
            cluster = RedisClusterNodes(servers, cli)
            cluster.create()
        except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as exc:
            error = exc
            for server in servers:
                server.stop(kill=True)
            continue
        return cluster
    raise RuntimeError(f"could not start a Redis Cluster after {attempts} attempts") from error


# --- echo upstream -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """What an upstream saw, byte-exact where the gateway could get it wrong."""

    method: str
    raw_path: str
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def path(self) -> str:
        return self.raw_path.partition("?")[0]

    @property
    def query(self) -> str:
        return self.raw_path.partition("?")[2]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


RECORDED = web.RequestKey("recorded", RecordedRequest)


async def serve_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: any free port); the runner and the bound port.

    A client that gives up (a gateway timeout) cancels the handler, so teardown does not
    wait for sleeps nobody is listening to any more.
    """
    runner = web.AppRunner(
        app, handle_signals=False, handler_cancellation=True, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


@dataclass
class Upstream:
    """A real HTTP server on loopback that echoes each request back as JSON.

    Routes: `/health` answers `{"status": "ok"}`; `/status/{code}` answers with that status;
    `/slow?ms=N` waits N ms first; everything else echoes. Every request is recorded in
    `requests` and answered with an `X-Upstream: <name>` header.

    The echo body has `upstream` (this server's name), `method`, `raw_path` (as received,
    query included), `path` (still percent-encoded), `query` (raw), `headers` (lower-case
    names; repeated headers joined with ", ") and `body` (text).
    """

    name: str
    host: str = LOOPBACK
    port: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Serve on `port`, or on a port picked by the kernel when it is 0 (no race)."""
        if self._runner is not None:
            return
        self._runner, self.port = await serve_app(self._build_app(), self.host, self.port)

    async def stop(self) -> None:
        """Stop serving; the port is kept so `start()` brings the same upstream back."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/health", self._health)
        app.router.add_route("*", "/status/{code:[0-9]{3}}", self._status)
        app.router.add_route("*", "/slow", self._slow)
        app.router.add_route("*", "/{tail:(?s:.*)}", self._echo)  # control characters too
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        recorded = RecordedRequest(
            method=request.method,
            raw_path=request.raw_path,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=await request.read(),
        )
        self.requests.append(recorded)
        request[RECORDED] = recorded
        response: web.StreamResponse = await handler(request)
        response.headers["X-Upstream"] = self.name
        return response

    def _echo_payload(self, request: web.Request) -> dict[str, Any]:
        recorded = request[RECORDED]
        headers: dict[str, str] = {}
        for key, value in recorded.headers.items():
            name = key.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return {
            "upstream": self.name,
            "method": recorded.method,
            "raw_path": recorded.raw_path,
            "path": recorded.path,
            "query": recorded.query,
            "headers": headers,
            "body": recorded.text,
        }

    async def _echo(self, request: web.Request) -> web.Response:
        return web.json_response(self._echo_payload(request))

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        if code < 200 or code > 599:
            return web.json_response({"error": f"unsupported status {code}"}, status=400)
        if code in (204, 304):
            return web.Response(status=code)
        return web.json_response(self._echo_payload(request), status=code)

    async def _slow(self, request: web.Request) -> web.Response:
        try:
            delay_ms = float(request.query.get("ms", "1000"))
        except ValueError:
            return web.json_response({"error": "ms must be a number"}, status=400)
        await asyncio.sleep(delay_ms / 1000)
        return web.json_response(self._echo_payload(request))


class UpstreamFactory:
    """Starts named upstreams on demand and stops them all in `close()`."""

    def __init__(self) -> None:
        self.upstreams: dict[str, Upstream] = {}

    async def __call__(self, name: str | None = None) -> Upstream:
        if name is None:
            name = f"upstream-{len(self.upstreams) + 1}"
        if name in self.upstreams:
            raise ValueError(f"an upstream named {name!r} is already running")
        upstream = Upstream(name)
        await upstream.start()
        self.upstreams[name] = upstream
        return upstream

    async def many(self, *names: str) -> list[Upstream]:
        return [await self(name) for name in names]

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.stop()


# --- the CLI as a process ----------------------------------------------------------------------


def spork_env(overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """Environment for a CLI subprocess: plain, 120-column output; a None override unsets."""
    env = dict(os.environ)
    env.update(COLUMNS="120", NO_COLOR="1", TERM="dumb")
    env.pop("FORCE_COLOR", None)
    # The working tree is importable even when the package is not installed and the
    # subprocess runs from a temporary directory.
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if part
    )
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class SporkRunner(Protocol):
    def __call__(
        self,
        *args: str,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str | None] | None = None,
        input: str | None = None,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]: ...


def run_spork(
    *args: str,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str | None] | None = None,
    input: str | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m spork_cli ARGS` to completion and capture its output as text.

    The child gets its own session so a timeout kills everything it started, not just the
    top process. Without `input`, stdin is closed so a prompt cannot hang the test.
    """
    command = [sys.executable, "-m", "spork_cli", *args]
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=spork_env(env),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(
                f"spork {' '.join(args)} did not finish within {timeout}s\n"
                f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                pytrace=False,
            )
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


# --- `spork serve` as a process ----------------------------------------------------------------


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


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to a sibling temporary file, then rename it over ``path``, as editors do."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def gateway_toml(
    port: int,
    admin_port: int,
    services: Mapping[str, str | list[str]],
    routes: Mapping[str, str],
    *,
    server_extra: str = "",
    service_extra: str = "",
    route_extra: str = "",
    extra: str = "",
) -> str:
    """A gateway.toml: ``services`` maps a name to endpoint URLs, ``routes`` a path to a service.

    ``*_extra`` lines are added to every [server], [[services]] and [[routes]] table; ``extra``
    is appended at the end of the file.
    """
    lines = [
        "[server]",
        f'host = "{LOOPBACK}"',
        f"port = {port}",
        server_extra,
        "",
        "[admin]",
        f'host = "{LOOPBACK}"',
        f"port = {admin_port}",
        "",
    ]
    for name, urls in services.items():
        endpoints = ", ".join(f'"{url}"' for url in ([urls] if isinstance(urls, str) else urls))
        lines += ["[[services]]", f'name = "{name}"', f"endpoints = [{endpoints}]"]
        lines += [service_extra, ""]
    for path, service in routes.items():
        lines += ["[[routes]]", f'path = "{path}"', f'service = "{service}"', route_extra, ""]
    lines.append(extra)
    return "\n".join(lines) + "\n"


def proc_status_kib(pid: int, field_name: str = "VmRSS") -> int:
    """A ``kB`` field of /proc/PID/status, such as the resident set size."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    raise LookupError(f"no {field_name} in /proc/{pid}/status")


def child_pids(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (read from /proc, no helpers needed)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The command name in parentheses may hold spaces; fields follow its last ")".
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields and int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open."""
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


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


class SporkServer:
    """`python -m spork_cli serve` as a real process in its own process group.

    stdout and stderr go to files in ``workdir`` (never pipes, which could fill up and stall
    the server). ``start()`` returns once the admin listener reports ready and the request
    port accepts connections; ``kill()`` ends the whole group and is safe to call twice.
    """

    def __init__(
        self,
        config: Path,
        port: int,
        admin_port: int,
        workdir: Path,
        *,
        args: tuple[str, ...] = (),
        host: str = LOOPBACK,
        env: Mapping[str, str | None] | None = None,
    ) -> None:
        self.config = config
        self.port = port
        self.admin_port = admin_port
        self.workdir = workdir
        self.args = args
        self.host = host
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the server was never started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "spork_cli", "serve",
            "-c", str(self.config),
            "--port", str(self.port),
            "--admin-port", str(self.admin_port),
            *self.args,
        ]  # fmt: skip

    def launch(self) -> None:
        """Start the process without waiting for it."""
        if self._proc is not None:
            raise RuntimeError("already started")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._proc = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=spork_env(self.env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    async def start(self, timeout: float = 20.0, serving: int = 1) -> None:
        """Launch and wait until ready: admin `/health/ready` answers 200, ``serving``
        processes logged "spork is serving", and the request port accepts connections."""
        import aiohttp

        self.launch()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while not await self._ready(session, serving):
                if not self.running:
                    raise RuntimeError(
                        f"spork serve exited with {self.returncode} before it was ready\n"
                        f"{self.output()}"
                    )
                if time.monotonic() >= deadline:
                    self.kill()
                    raise TimeoutError(f"spork serve not ready within {timeout}s\n{self.output()}")
                await asyncio.sleep(0.05)

    async def _ready(self, session: Any, serving: int) -> bool:
        import aiohttp

        if len(self.events("spork is serving")) < serving:
            return False
        try:
            async with session.get(f"{self.admin_url}/health/ready") as response:
                if response.status != 200:
                    return False
            _reader, writer = await asyncio.open_connection(self.host, self.port)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        writer.close()
        await writer.wait_closed()
        return True

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the server process itself (not its group)."""
        os.kill(self.pid, sig)

    async def wait(self, timeout: float = 30.0) -> int:
        """The exit code, once the process has exited by itself within ``timeout``."""
        deadline = time.monotonic() + timeout
        while (code := self.returncode) is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"spork serve still running after {timeout}s")
            await asyncio.sleep(0.02)
        return code

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and return the exit code once the process has exited by itself."""
        self.send(sig)
        return await self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group (workers included) and reap the leader."""
        proc = self._proc
        if proc is None:
            return
        # The group outlives its leader while any worker is alive, so kill it either way.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def logs(self) -> str:
        """Everything the process wrote to stdout so far."""
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout ---\n{self.logs()}\n--- stderr ---\n{self.stderr()}"

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """JSON log lines from stdout, optionally only those whose ``event`` is ``event``."""
        import orjson

        found: list[dict[str, Any]] = []
        for line in self.logs().splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line still being written
            if isinstance(record, dict) and (event is None or record.get("event") == event):
                found.append(record)
        return found


_T = TypeVar("_T")


async def eventually(
    probe: Callable[[], Awaitable[_T] | _T],
    *,
    timeout: float = 5.0,
    interval: float = 0.02,
    what: str = "the condition",
) -> _T:
    """Call ``probe`` until it returns something truthy, and return that; fail after ``timeout``.

    ``probe`` may be sync or async. This is how tests wait for another process: a condition
    polled against a deadline, never a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


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


def self_signed_certificate(directory: Path, common_name: str = "localhost") -> tuple[Path, Path]:
    """A fresh self-signed certificate for 127.0.0.1 and its key, as PEM files in ``directory``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if it still runs, wait for it, and close its pipes (test teardown)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
