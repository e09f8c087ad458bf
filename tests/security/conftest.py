"""One of each real upstream framework for the whole module, and a `spork serve` in front of
all of them: route ``/<framework>`` (prefix stripped, auth optional) goes to that framework."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import StartSpork
from tests.security.frameworks import FRAMEWORKS, serve
from tests.support import SporkServer, free_ports, gateway_toml

SECRET = "security-suite-secret-" + "s" * 42


@pytest.fixture(scope="module")
def frameworks() -> Iterator[dict[str, str]]:
    """Each framework's base URL."""
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(serve(name)) for name in FRAMEWORKS}


@dataclass(frozen=True)
class Front:
    """`spork serve` in front of every framework."""

    server: SporkServer
    config: Path

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture
def front(
    spork_server: StartSpork, frameworks: dict[str, str], tmp_path: Path
) -> Callable[..., Awaitable[Front]]:
    """`await front(server_extra=..., extra=...)` starts the gateway with those lines added."""

    async def start(server_extra: str = "", extra: str = "") -> Front:
        port, admin_port = free_ports(2)
        text = gateway_toml(
            port,
            admin_port,
            frameworks,
            {f"/{name}": name for name in frameworks},
            server_extra=server_extra,
            route_extra='strip_prefix = true\nauth = "optional"',
            extra=f'[auth]\nsecret = "{SECRET}"\n{extra}',
        )
        config = tmp_path / f"gateway-{port}.toml"
        config.write_text(text)
        return Front(await spork_server(config, port, admin_port), config)

    return start
