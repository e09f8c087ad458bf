"""Shared fixtures: real Redis, a real Redis Cluster, echo upstreams and the CLI as a process.

The parts themselves live in `tests.support`; this module only ties their lifetimes to pytest.

A test that starts processes (redis-server, a cluster, sentinels, `spork serve`, the CLI,
a browser, a wheel build) is marked ``slow`` by the fixtures it uses: the names in
``PROCESS_FIXTURES``, or a parametrised fixture whose parameter names one of them. A test
not marked ``slow`` that starts a process fails, so ``pytest -m "not slow"`` stays quick and
nothing slips into it by accident.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import tomlkit

from tests.support import (
    PROJECT_ROOT,
    Processes,
    RedisClusterNodes,
    RedisServer,
    SporkRunner,
    SporkServer,
    Upstream,
    UpstreamFactory,
    free_ports,
    hold_fixed_ports,
    require_binary,
    run_spork,
    start_redis_cluster,
    start_redis_server,
)

# Fixtures that start processes, wherever they are defined; a test using any of them (directly
# or through another fixture) is slow.
PROCESS_FIXTURES = frozenset(
    {
        "redis_server",
        "redis_url",
        "redis_cluster",
        "redis_cluster_url",
        "redis_sentinel",
        "redis_sentinel_url",
        "spork_server",
        "run_spork",
        "repo_config",  # RepoConfig.spork runs the CLI
        "processes",
        "own_server",
        "protected_sentinel",  # tests/state/test_sentinel.py: a password-protected topology
        "browser",  # tests/admin/test_dashboard.py: headless Chromium
        "caching",  # tests/cache/test_http_caching.py: a `spork serve` per backend
        "cache_suite_package",  # tests/cache/test_conformance.py: npm installs the suite
    }
)


def starts_processes(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        # A fixture parametrised by fixture name (`request.getfixturevalue(request.param)`).
        names |= {value for value in callspec.params.values() if isinstance(value, str)}
    return not PROCESS_FIXTURES.isdisjoint(names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if starts_processes(item):
            item.add_marker(pytest.mark.slow)


@contextlib.contextmanager
def _no_process(item: pytest.Item) -> Iterator[None]:
    """Within the block, starting a process fails ``item``: it is not slow, so it must not."""
    spawn = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        pytest.fail(
            f"{item.nodeid} starts a process ({args!r}) without a fixture of "
            "PROCESS_FIXTURES (tests/conftest.py), so it is not marked slow",
            pytrace=False,
        )

    subprocess.Popen._execute_child = refuse  # type: ignore[attr-defined]
    try:
        yield
    finally:
        subprocess.Popen._execute_child = spawn  # type: ignore[attr-defined]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    # Setup too: a module- or session-scoped fixture starts its processes here.
    if item.get_closest_marker("slow") is not None:
        return (yield)
    with _no_process(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("slow") is not None:
        return (yield)
    with _no_process(item):
        return (yield)


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


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """`own_server(*extra_args)` starts a redis-server of the test's own; all stop afterwards."""
    binary = require_binary("redis-server")
    started: list[RedisServer] = []

    def start(*extra_args: str) -> RedisServer:
        workdir = tmp_path / f"redis-{len(started)}"
        server = start_redis_server(binary, workdir, extra_args=extra_args)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def fixed_ports() -> Iterator[None]:
    """The README's fixed ports (8080, 9901, 9100) for this test alone: tests that need them
    take turns, across xdist workers and other runs on the machine."""
    with hold_fixed_ports():
        yield


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory of the test's own for unix sockets: a socket path must fit in 108
    bytes, and Redis cuts the address it shows for a client at 77."""
    directory = Path(tempfile.mkdtemp(prefix="spork-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


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


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Programs the test runs itself: `processes.run(*command, cwd=, env=, input=, timeout=)`
    to completion, `processes.start(*command, **popen)` in the background; whatever still runs
    is killed (its whole session) after the test."""
    started = Processes()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(name="run_spork", scope="session")
def run_spork_fixture() -> SporkRunner:
    """`run_spork(*args, cwd=, env=, input=, timeout=)` runs the CLI as a real subprocess."""
    return run_spork


# --- spork serve as a process ----------------------------------------------------------------


# The CLI must see the config's development secret, whatever the surrounding shell exports.
CLI_ENV: dict[str, str | None] = {"SPORK_JWT_SECRET": None, "SPORK_CONFIG": None}


class StartSpork(Protocol):
    async def __call__(
        self,
        config: Path,
        port: int,
        admin_port: int,
        *args: str,
        serving: int = 1,
        env: Mapping[str, str | None] | None = None,
    ) -> SporkServer: ...


@pytest.fixture
async def spork_server(tmp_path: Path) -> AsyncIterator[StartSpork]:
    """`await spork_server(config, port, admin_port, *args)` starts a ready `spork serve`
    (``serving`` processes, with workers); every server started is killed (its whole process
    group) after the test."""
    started: list[SporkServer] = []

    async def start(
        config: Path,
        port: int,
        admin_port: int,
        *args: str,
        serving: int = 1,
        env: Mapping[str, str | None] | None = None,
    ) -> SporkServer:
        server = SporkServer(
            config,
            port,
            admin_port,
            tmp_path / f"server-{len(started)}",
            args=args,
            env={**CLI_ENV, **(env or {})},
        )
        started.append(server)
        await server.start(serving=serving)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.kill()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@dataclass(frozen=True)
class RepoConfig:
    """The repo's gateway.toml, copied into a directory of its own with free ports."""

    path: Path
    port: int
    admin_port: int
    demo_port: int

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def edit(self, change: Callable[[Any], None]) -> None:
        """Rewrite the copy: ``change`` gets the tomlkit document."""
        document = tomlkit.parse(self.path.read_text())
        change(document)
        self.path.write_text(tomlkit.dumps(document))

    def spork(
        self, *args: str, input: str | None = None, env: Mapping[str, str | None] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`spork ARGS` run in the copy's directory, so it finds ./gateway.toml."""
        return run_spork(*args, cwd=self.directory, env={**CLI_ENV, **(env or {})}, input=input)


@pytest.fixture
def repo_config(tmp_path: Path) -> RepoConfig:
    document = tomlkit.parse((PROJECT_ROOT / "gateway.toml").read_text())
    port, admin_port, demo_port = free_ports(3)
    old_demo = f":{document['demo']['port']}"
    document["server"]["port"] = port
    document["admin"]["port"] = admin_port
    document["demo"]["port"] = demo_port
    for service in document["services"]:
        endpoints = service["endpoints"]
        for i, endpoint in enumerate(endpoints):
            if isinstance(endpoint, str):
                endpoints[i] = endpoint.replace(old_demo, f":{demo_port}")
            else:
                endpoint["url"] = endpoint["url"].replace(old_demo, f":{demo_port}")
    directory = tmp_path / "repo"
    directory.mkdir()
    shutil.copytree(PROJECT_ROOT / "schemas", directory / "schemas")  # body_schema files
    path = directory / "gateway.toml"
    path.write_text(tomlkit.dumps(document))
    return RepoConfig(path, port, admin_port, demo_port)


# --- Redis Sentinel ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A `tests.sentinel_support.RedisSentinel`: one master, one replica and three sentinels
    (quorum 2) watching service `mymaster`. Tests may fail it over or stop its parts;
    `redis_sentinel_url` settles it again before the next test."""
    from tests.support.sentinel import start_redis_sentinel

    binary = require_binary("redis-server")
    topology = start_redis_sentinel(binary, tmp_path_factory.mktemp("redis-sentinel"))
    try:
        yield topology
    finally:
        topology.stop()


@pytest.fixture
def redis_sentinel_url(redis_sentinel: Any) -> str:
    """`redis+sentinel://` URL naming all three sentinels, once the topology is settled (every
    process up, replicas linked, sentinels agreeing) and the current master is empty."""
    redis_sentinel.ensure_healthy()
    redis_sentinel.flushall()
    url: str = redis_sentinel.url()
    return url
