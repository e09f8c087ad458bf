"""`spork serve --workers N`: N processes share the port, and SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import StartSpork
from tests.support import (
    LOOPBACK,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    SporkRunner,
    SporkServer,
    Upstream,
    child_pids,
    eventually,
    free_ports,
    gateway_toml,
    replace_file,
    socket_inodes,
    tcp_sockets,
)

WORKERS = 2
REQUESTS = 200


def inodes_where(local_port: int | None, remote_port: int | None, state: str) -> set[int]:
    return {
        inode
        for local, remote, st, inode in tcp_sockets()
        if st == state
        and (local_port is None or local == local_port)
        and (remote_port is None or remote == remote_port)
    }


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def start_workers(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, *args: str
) -> tuple[SporkServer, Path]:
    port, admin_port = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_toml(port, admin_port, {"up": upstream.url}, {"/": "up"}))
    server = await spork_server(
        config, port, admin_port, "--workers", str(WORKERS), *args, serving=WORKERS
    )
    return server, config


async def worker_pids(server: SporkServer, without: int | None = None) -> set[int]:
    """The supervisor's WORKERS children, once there are that many (none of them ``without``)."""

    def probe() -> set[int] | None:
        pids = child_pids(server.pid)
        return pids if len(pids) == WORKERS and without not in pids else None

    return await eventually(probe, timeout=15, what=f"{WORKERS} worker processes")


async def fresh_connection_traffic(url: str, count: int) -> list[int]:
    """``count`` GETs, each on a new TCP connection, at most 8 at a time."""
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(force_close=True, limit=8)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            async with session.get(f"{url}/w/{i}") as response:
                await response.read()
                statuses.append(response.status)

        await asyncio.gather(*(one(i) for i in range(count)))
    return statuses


async def test_workers_share_the_port_and_all_stop_on_sigterm(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork
) -> None:
    server, _ = await start_workers(tmp_path, upstream, spork_server)
    workers = await worker_pids(server)

    listeners = inodes_where(server.port, None, TCP_LISTEN)
    for pid in workers:
        assert socket_inodes(pid) & listeners, f"worker {pid} does not listen on {server.port}"
    assert not socket_inodes(server.pid) & listeners, "the supervisor itself takes requests"

    statuses = await fresh_connection_traffic(server.url, REQUESTS)
    assert statuses == [200] * REQUESTS
    assert len([r for r in upstream.requests if r.path.startswith("/w/")]) == REQUESTS

    # Each worker that forwarded a request keeps a pooled connection to the upstream.
    to_upstream = inodes_where(None, upstream.port, TCP_ESTABLISHED)
    served = {pid for pid in workers if socket_inodes(pid) & to_upstream}
    assert served == workers, f"only {served} of {workers} forwarded any request"

    signalled = time.monotonic()
    assert await server.stop(signal.SIGTERM, timeout=20) == 0, server.output()
    assert time.monotonic() - signalled < 10
    await eventually(lambda: all(gone(pid) for pid in workers), what="every worker gone")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, server.port), timeout=1).close()
    assert "Traceback" not in server.output()


@pytest.mark.observes("server.workers")
async def test_server_workers_in_the_file_starts_that_many_workers(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork
) -> None:
    port, admin_port = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(
        gateway_toml(
            port, admin_port, {"up": upstream.url}, {"/": "up"}, server_extra=f"workers = {WORKERS}"
        )
    )
    server = await spork_server(config, port, admin_port, serving=WORKERS)  # no --workers
    workers = await worker_pids(server)
    listeners = inodes_where(server.port, None, TCP_LISTEN)
    assert all(socket_inodes(pid) & listeners for pid in workers)
    assert not socket_inodes(server.pid) & listeners


async def test_a_killed_worker_is_replaced(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server, _ = await start_workers(tmp_path, upstream, spork_server)
    workers = await worker_pids(server)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)

    async def readiness() -> tuple[int, object]:
        async with http.get(f"{server.admin_url}/health/ready") as response:
            return response.status, orjson.loads(await response.read()).get("workers_listening")

    # Until the replacement listens, one worker short is not ready.
    assert await eventually(
        lambda: _short(readiness), interval=0.01, what="not ready while a worker is replaced"
    ) == (503, WORKERS - 1)
    replaced = await worker_pids(server, without=victim)
    await eventually(
        lambda: len(server.events("spork is serving")) == WORKERS + 1,
        timeout=15,
        what="the replacement serving",
    )
    assert replaced - workers
    assert await fresh_connection_traffic(server.url, 40) == [200] * 40
    assert (await readiness())[0] == 200
    assert await server.stop(signal.SIGTERM, timeout=20) == 0, server.output()


async def test_workers_stop_when_their_supervisor_dies(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork
) -> None:
    """Killed at once (the OOM killer would), the supervisor takes the admin listener, the
    health checks and the shared store with it: its workers drain and leave the port."""
    server, _ = await start_workers(tmp_path, upstream, spork_server)
    workers = await worker_pids(server)
    os.kill(server.pid, signal.SIGKILL)
    await eventually(
        lambda: all(gone(pid) for pid in workers), timeout=15, what="every worker gone"
    )
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, server.port), timeout=1).close()


async def _short(readiness: Callable[[], Awaitable[tuple[int, object]]]) -> object:
    answer = await readiness()
    return answer if answer[0] == 503 else None


async def test_workers_apply_a_config_change(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server, config = await start_workers(tmp_path, upstream, spork_server)
    text = config.read_text().replace('path = "/"', 'path = "/only"')
    replace_file(config, text)

    # Every worker reloads on its own; once each has, no connection can reach the old route.
    await eventually(
        lambda: len(server.events("config reloaded")) >= WORKERS + 1,
        what="each worker and the supervisor reloaded",
    )
    statuses = await fresh_connection_traffic(server.url, 40)
    assert statuses == [404] * 40


def test_workers_with_the_port_taken_exit_2_with_one_line(
    tmp_path: Path, run_spork: SporkRunner
) -> None:
    port, admin_port = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_toml(port, admin_port, {"up": "http://127.0.0.1:9"}, {"/": "up"}))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((LOOPBACK, port))
        holder.listen()
        result = run_spork("serve", "-c", str(config), "--workers", "2", timeout=60)
    output = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    assert result.returncode == 2, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("spork: ") and str(port) in lines[0], output


def workers_listening(supervisor: int, port: int) -> int:
    """Children of ``supervisor`` holding a listening socket on ``port``."""
    listening = inodes_where(port, None, TCP_LISTEN)
    count = 0
    for pid in child_pids(supervisor):
        try:
            count += bool(socket_inodes(pid) & listening)
        except FileNotFoundError:
            continue  # gone meanwhile
    return count


@pytest.mark.slow  # it starts `spork serve` itself, to ask before the server is ready
async def test_the_supervisor_is_ready_only_once_every_worker_listens(
    tmp_path: Path, upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    port, admin_port = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_toml(port, admin_port, {"up": upstream.url}, {"/": "up"}))
    server = SporkServer(
        config, port, admin_port, tmp_path / "server", args=("--workers", str(WORKERS))
    )
    server.launch()
    early: list[dict[str, object]] = []

    async def first_ready() -> int | None:
        try:
            async with http.get(f"{server.admin_url}/health/ready") as response:
                body = orjson.loads(await response.read())
                if response.status == 200:
                    return workers_listening(server.pid, port)
                early.append(body)
        except aiohttp.ClientConnectionError:
            pass  # the admin listener is not up yet
        return None

    try:
        serving = await eventually(first_ready, timeout=30, interval=0.01, what="readiness")
    finally:
        server.kill()
    assert serving == WORKERS
    assert early, "never asked before it was ready: the test proves nothing"
    assert all(b["status"] == "starting" and b["workers"] == WORKERS for b in early), early


async def test_sighup_to_the_supervisor_shows_in_readiness(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server, _ = await start_workers(tmp_path, upstream, spork_server)
    workers = await worker_pids(server)
    since = time.time()
    server.send(signal.SIGHUP)

    async def probe() -> dict[str, object] | None:
        async with http.get(f"{server.admin_url}/health/ready") as response:
            last = orjson.loads(await response.read())["last_reload"]
        return last if last is not None and last["at"] >= since else None

    result = await eventually(probe, what="a SIGHUP reload in /health/ready")
    assert result["trigger"] == "SIGHUP"
    assert child_pids(server.pid) == workers, "SIGHUP ended a worker"
