"""Shared fixtures: real Redis, a real Redis Cluster, echo upstreams and the CLI as a process.

The parts themselves live in `tests.support`; this module only ties their lifetimes to pytest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support import (
    RedisClusterNodes,
    RedisServer,
    SporkRunner,
    Upstream,
    UpstreamFactory,
    require_binary,
    run_spork,
    start_redis_cluster,
    start_redis_server,
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole run; tests may `stop()` and `start()` it (same port)."""
    binary = require_binary("redis-server")
    server = start_redis_server(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of an empty database on the shared server."""
    # A fault test that failed half-way may have left the server down; later tests should
    # report their own results, not that one's.
    if not redis_server.running:
        redis_server.start()
    with redis_server.client(socket_timeout=5) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A three-primary Redis Cluster, no replicas, all 16384 slots assigned."""
    binary = require_binary("redis-server")
    cli = require_binary("redis-cli")
    cluster = start_redis_cluster(binary, cli, tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterNodes) -> str:
    """`redis+cluster://` URL of the shared cluster, every primary emptied first."""
    redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """An echo server on a loopback port, named "upstream"."""
    server = Upstream("upstream")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def upstream_factory() -> AsyncIterator[UpstreamFactory]:
    """`await upstream_factory("name")` starts another echo server; all stop after the test."""
    factory = UpstreamFactory()
    try:
        yield factory
    finally:
        await factory.close()


@pytest.fixture(name="run_spork")
def run_spork_fixture() -> SporkRunner:
    """`run_spork(*args, cwd=, env=, input=, timeout=)` runs the CLI as a real subprocess."""
    return run_spork
