"""`spork serve --workers 2` on the repo's gateway.toml (memory state) is one gateway: the
supervisor holds the memory store and every worker calls it, so a limit counts every
worker's requests, a breaker forced and a token revoked through the CLI apply in every worker,
and `spork instances` lists the supervisor and its workers.

Each check sends its requests over two kept-alive connections, one accepted by each worker
(which worker holds a connection is read from /proc), so both workers are always exercised.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import RepoConfig, StartSpork
from tests.support import (
    LOOPBACK,
    TCP_ESTABLISHED,
    child_pids,
    eventually,
    free_ports,
    socket_inodes,
    tcp_sockets,
)

WORKERS = 2


def owner_of(port: int, client_port: int, workers: set[int]) -> int | None:
    """The worker holding the accepted end of the connection from ``client_port``."""
    accepted = {
        inode
        for local, remote, state, inode in tcp_sockets()
        if local == port and remote == client_port and state == TCP_ESTABLISHED
    }
    owners = [pid for pid in workers if socket_inodes(pid) & accepted]
    return owners[0] if len(owners) == 1 else None


@pytest.fixture
async def per_worker(
    repo_config: RepoConfig, spork_server: StartSpork
) -> AsyncIterator[dict[int, aiohttp.ClientSession]]:
    """A running `spork serve --workers 2` and, for each worker, a session whose one
    kept-alive connection that worker accepted."""
    server = await spork_server(
        repo_config.path,
        repo_config.port,
        repo_config.admin_port,
        "--workers",
        str(WORKERS),
        serving=WORKERS,
    )
    workers = child_pids(server.pid)
    assert len(workers) == WORKERS
    sessions: dict[int, aiohttp.ClientSession] = {}
    spare: list[aiohttp.ClientSession] = []
    try:
        for _ in range(32):  # each new connection lands on either worker (SO_REUSEPORT)
            (client_port,) = free_ports(1)
            connector = aiohttp.TCPConnector(limit=1, local_addr=(LOOPBACK, client_port))
            session = aiohttp.ClientSession(
                base_url=repo_config.url,
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=10),
            )
            async with session.get("/api/users/1") as response:
                assert response.status == 200
                await response.read()
            owner = owner_of(repo_config.port, client_port, workers)
            if owner is not None and owner not in sessions:
                sessions[owner] = session
            else:
                spare.append(session)
            if len(sessions) == WORKERS:
                break
        assert len(sessions) == WORKERS, "32 connections all reached one worker"
        yield sessions
    finally:
        for session in [*sessions.values(), *spare]:
            await session.close()


async def statuses(sessions: dict[int, aiohttp.ClientSession], path: str, rounds: int,
                   headers: dict[str, str] | None = None) -> list[int]:  # fmt: skip
    """``rounds`` requests through each worker in turn: the statuses in order."""
    found: list[int] = []
    for _ in range(rounds):
        for session in sessions.values():
            async with session.get(path, headers=headers) as response:
                await response.read()
                found.append(response.status)
    return found


async def test_a_limit_counts_the_requests_of_every_worker(
    repo_config: RepoConfig, per_worker: dict[int, aiohttp.ClientSession]
) -> None:
    # 5 a minute per client address, 12 requests alternating between the two workers.
    answered = await statuses(per_worker, "/api/limited/users/1", rounds=6)
    assert answered == [200] * 5 + [429] * 7
    shown = repo_config.spork("limits", "--json")
    assert shown.returncode == 0, shown.stderr
    [row] = json.loads(shown.stdout)
    assert (row["route"], row["client"], row["remaining"]) == ("/api/limited/", "ip=127.0.0.1", 0)


async def test_a_breaker_forced_through_the_cli_holds_in_every_worker(
    repo_config: RepoConfig, per_worker: dict[int, aiohttp.ClientSession]
) -> None:
    assert await statuses(per_worker, "/api/flaky?rate=0", rounds=2) == [200] * 4
    forced = repo_config.spork("breakers", "open", "flaky")
    assert forced.returncode == 0, forced.stderr

    async def all_refused() -> bool:
        return await statuses(per_worker, "/api/flaky?rate=0", rounds=1) == [503] * WORKERS

    # Each worker trusts what it last read of a breaker for 0.25 s.
    await eventually(all_refused, timeout=5, what="both workers refusing")
    assert await statuses(per_worker, "/api/flaky?rate=0", rounds=5) == [503] * 10
    closed = repo_config.spork("breakers", "reset", "flaky")
    assert closed.returncode == 0, closed.stderr
    await eventually(
        lambda: _all(per_worker, "/api/flaky?rate=0", 200), timeout=5, what="both workers through"
    )


async def _all(sessions: dict[int, aiohttp.ClientSession], path: str, status: int,
               headers: dict[str, str] | None = None) -> bool:  # fmt: skip
    return await statuses(sessions, path, rounds=1, headers=headers) == [status] * len(sessions)


async def test_a_token_revoked_through_the_cli_is_refused_by_every_worker(
    repo_config: RepoConfig, per_worker: dict[int, aiohttp.ClientSession]
) -> None:
    minted = repo_config.spork("token", "mint", "--sub", "ada", "--ttl", "1h")
    assert minted.returncode == 0, minted.stderr
    bearer = {"Authorization": f"Bearer {minted.stdout.strip()}"}
    assert await statuses(per_worker, "/api/me", rounds=2, headers=bearer) == [200] * 4
    revoked = repo_config.spork("token", "revoke", minted.stdout.strip())
    assert revoked.returncode == 0, revoked.stderr
    await eventually(
        lambda: _all(per_worker, "/api/me", 401, bearer), timeout=10, what="both refusing"
    )
    assert await statuses(per_worker, "/api/me", rounds=3, headers=bearer) == [401] * 6


async def test_instances_lists_the_supervisor_and_its_workers(
    repo_config: RepoConfig, per_worker: dict[int, aiohttp.ClientSession]
) -> None:
    def listed() -> list[dict[str, object]] | None:
        shown = repo_config.spork("instances", "--json")
        found = json.loads(shown.stdout) if shown.returncode == 0 else []
        return found if len(found) == WORKERS + 1 else None

    found = await eventually(listed, timeout=10, what="three instances")
    supervisor, *workers = found
    assert supervisor["workers"] == WORKERS and supervisor["supervisor"] is None
    assert {w["pid"] for w in workers} == set(per_worker)
    assert all(w["supervisor"] == supervisor["id"] for w in workers)
    assert {w["listen"] for w in found} == {f"{LOOPBACK}:{repo_config.port}"}
    table = repo_config.spork("instances")
    assert table.stdout.count(f"worker of {supervisor['id']}") == WORKERS, table.stdout
    assert f"supervisor of {WORKERS}" in table.stdout
