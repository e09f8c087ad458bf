"""The shared fixtures hand out real, working parts (and would notice if they did not)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from yarl import URL

from tests.support import (
    CLUSTER_SLOTS,
    PROJECT_ROOT,
    Processes,
    RedisClusterNodes,
    RedisServer,
    SporkRunner,
    Upstream,
    UpstreamFactory,
    free_cluster_ports,
    free_port,
    wait_for_port,
)

# --- redis-server ------------------------------------------------------------------------------


def test_redis_server_is_a_real_redis(redis_server: RedisServer) -> None:
    with redis_server.client(decode_responses=True) as client:
        info = client.info("server")
    assert info["redis_version"]
    assert info["tcp_port"] == redis_server.port
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"


# Two runs that each write a key: whichever runs second sees an empty db only if the fixture
# really flushes.
@pytest.mark.parametrize("run", [1, 2])
def test_redis_url_gives_an_empty_database(redis_url: str, run: int) -> None:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.dbsize() == 0
        client.set("infra:key", f"run-{run}")
        assert client.get("infra:key") == f"run-{run}"


def test_redis_server_stops_and_starts_on_the_same_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    try:
        redis_server.stop()
        assert not redis_server.running
        with (
            # redis-py retries refused connections with backoff by default; one try is enough.
            redis_server.client(socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)) as client,
            pytest.raises(redis.ConnectionError),
        ):
            client.ping()
    finally:
        redis_server.start()
    assert redis_server.port == port
    with redis_server.client() as client:
        assert client.ping() is True


# --- Redis Cluster -----------------------------------------------------------------------------


def test_cluster_has_three_masters_covering_every_slot(redis_cluster: RedisClusterNodes) -> None:
    host, port = redis_cluster.nodes[0]
    assert redis_cluster.url == f"redis+cluster://{host}:{port}"
    with redis.Redis(host=host, port=port) as client:
        shards = client.execute_command("CLUSTER", "SHARDS")
    masters: set[int] = set()
    covered = 0
    for shard in shards:
        (node,) = shard[b"nodes"]
        assert node[b"role"] == b"master"
        assert node[b"health"] == b"online"
        masters.add(node[b"port"])
        ranges = shard[b"slots"]
        covered += sum(
            end - start + 1 for start, end in zip(ranges[::2], ranges[1::2], strict=True)
        )
    assert masters == {node_port for _, node_port in redis_cluster.nodes}
    assert covered == CLUSTER_SLOTS


def test_cluster_client_writes_to_every_node(
    redis_cluster: RedisClusterNodes, redis_cluster_url: str
) -> None:
    def keys_per_node() -> list[int]:
        counts = []
        for server in redis_cluster.servers:
            with server.client() as node_client:
                counts.append(node_client.dbsize())
        return counts

    assert keys_per_node() == [0, 0, 0]
    host, _, port = redis_cluster_url.removeprefix("redis+cluster://").partition(":")
    with RedisCluster(host=host, port=int(port), decode_responses=True) as client:
        by_node: dict[str, str] = {}
        for index in range(100):
            key = f"infra:{index}"
            by_node.setdefault(client.get_node_from_key(key).name, key)
        assert len(by_node) == 3
        for key in by_node.values():
            client.set(key, key.upper())
            assert client.get(key) == key.upper()
    assert keys_per_node() == [1, 1, 1]


# --- echo upstreams ----------------------------------------------------------------------------


async def test_upstream_echoes_raw_path_query_headers_and_body(upstream: Upstream) -> None:
    url = URL(f"{upstream.url}/files/a%2Fb/c?x=1&next=%2Fhome", encoded=True)
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data="hello", headers={"X-Trace": "t-1"}) as response,
    ):
        echo = await response.json()
        assert response.status == 200
        assert response.headers["X-Upstream"] == "upstream"
    assert echo["upstream"] == "upstream"
    assert echo["method"] == "POST"
    assert echo["path"] == "/files/a%2Fb/c"
    assert echo["query"] == "x=1&next=%2Fhome"
    assert echo["raw_path"] == "/files/a%2Fb/c?x=1&next=%2Fhome"
    assert echo["headers"]["x-trace"] == "t-1"
    assert echo["body"] == "hello"
    (recorded,) = upstream.requests
    assert recorded.path == "/files/a%2Fb/c"
    assert recorded.headers["x-trace"] == "t-1"
    assert recorded.body == b"hello"


async def test_upstream_status_slow_and_health_routes(upstream: Upstream) -> None:
    async with aiohttp.ClientSession(base_url=upstream.url) as session:
        async with session.get("/status/503") as response:
            assert response.status == 503
        async with session.get("/health") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}
        started = time.monotonic()
        async with session.get("/slow", params={"ms": "150"}) as response:
            assert response.status == 200
        assert time.monotonic() - started >= 0.15
    assert [request.path for request in upstream.requests] == ["/status/503", "/health", "/slow"]


async def test_upstream_factory_starts_distinct_named_servers(
    upstream_factory: UpstreamFactory,
) -> None:
    first, second = await upstream_factory.many("alpha", "beta")
    assert first.port != second.port
    names = []
    async with aiohttp.ClientSession() as session:
        for server in (first, second):
            async with session.get(f"{server.url}/who") as response:
                names.append((await response.json())["upstream"])
    assert names == ["alpha", "beta"]
    with pytest.raises(ValueError, match="alpha"):
        await upstream_factory("alpha")


async def test_upstream_can_go_down_and_come_back(upstream: Upstream) -> None:
    port = upstream.port
    await upstream.stop()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(f"{upstream.url}/gone"):
                pass
        await upstream.start()
        assert upstream.port == port
        async with session.get(f"{upstream.url}/back") as response:
            assert response.status == 200


# --- helpers -----------------------------------------------------------------------------------


def test_wait_for_port_sees_listeners_and_times_out_without_one() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        wait_for_port("127.0.0.1", listener.getsockname()[1], timeout=1)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wait_for_port("127.0.0.1", free_port(), timeout=0.3)
    assert time.monotonic() - started < 2


def test_free_cluster_ports_leave_room_for_the_bus() -> None:
    ports = free_cluster_ports(3)
    assert len(set(ports)) == 3
    for port in ports:
        assert port + 10000 <= 65535
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port + 10000))


# --- the CLI -----------------------------------------------------------------------------------


def test_run_spork_runs_the_cli_as_a_process(run_spork: SporkRunner) -> None:
    result = run_spork("--help")
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 0, result.stderr
    assert "spork" in result.stdout


# --- the quick loop ------------------------------------------------------------------------------

SAMPLE = """
import subprocess


def test_plain():
    pass


def test_runs_a_program_without_a_fixture():
    subprocess.run(["true"], check=True)


def test_runs_a_program_through_the_fixture(processes):
    assert processes.run("true").returncode == 0


def test_uses_redis(redis_url):
    pass
"""


def pytest_in(processes: Processes, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest as a process of its own; outside the suite, with its conftest as a plugin."""
    plugin = () if cwd == PROJECT_ROOT else ("-p", "tests.conftest")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return processes.run(
        sys.executable, "-m", "pytest", *plugin, "-p", "no:cacheprovider", *args,
        cwd=cwd, env=env, timeout=120,
    )  # fmt: skip


def test_not_slow_deselects_every_test_that_starts_a_process(
    processes: Processes, tmp_path: Path
) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    result = pytest_in(processes, tmp_path, "--collect-only", "-q", "-m", "not slow")
    collected = {line for line in result.stdout.splitlines() if "::" in line}
    assert collected == {
        "test_sample.py::test_plain",
        "test_sample.py::test_runs_a_program_without_a_fixture",
    }, result.stdout
    # And in this suite: the redis-server fixture's own test is slow, the port helper's is not.
    result = pytest_in(
        processes, PROJECT_ROOT, "--collect-only", "-q", "-m", "not slow", "tests/test_infra.py"
    )
    assert "tests/test_infra.py::test_redis_server_is_a_real_redis" not in result.stdout
    assert "tests/test_infra.py::test_free_cluster_ports_leave_room_for_the_bus" in result.stdout


def test_a_quick_test_that_starts_a_process_fails(processes: Processes, tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    result = pytest_in(processes, tmp_path, "-q", "-m", "not slow", "-rf")
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed, 2 deselected" in result.stdout, result.stdout
    assert (
        "test_sample.py::test_runs_a_program_without_a_fixture starts a process (['true'])"
        in result.stdout
    ), result.stdout
