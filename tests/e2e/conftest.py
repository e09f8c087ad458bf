"""Fixtures for end-to-end tests: `spork serve` as a real process, killed on teardown.

Every server a test starts goes through `spork_server`, so its whole process group (workers
included) is killed after the test even when the test fails half-way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
import pytest
import tomlkit

from tests.support import PROJECT_ROOT, SporkServer, free_ports


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
    """`await spork_server(config, port, admin_port, *args)` starts a ready `spork serve`."""
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
            config, port, admin_port, tmp_path / f"server-{len(started)}", args=args, env=env
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
    """A client session with a bounded timeout per request."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@dataclass(frozen=True)
class RepoConfig:
    """The repo's gateway.toml, copied with every port it uses moved to a free one."""

    path: Path
    port: int
    admin_port: int
    demo_port: int


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
    path = tmp_path / "gateway.toml"
    path.write_text(tomlkit.dumps(document))
    return RepoConfig(path, port, admin_port, demo_port)
