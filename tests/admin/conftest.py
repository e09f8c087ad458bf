"""The admin listener in process: a real gateway app (and its upstreams) behind
`aiohttp_client`, with the admin app built for it the way `spork serve` builds it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from spork_cli.config.load import load_config
from spork_cli.gateway.admin import build_admin_app
from spork_cli.gateway.app import build_app
from spork_cli.gateway.keys import RELOADER, TABLE, TableHolder
from tests.support import replace_file

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]


@dataclass
class Admin:
    """A started gateway app, its admin app, and the file its config came from."""

    gateway: Client
    admin: Client
    config_file: Path
    token: str | None = None

    @property
    def holder(self) -> TableHolder:
        return self.gateway.app[TABLE]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def get(self, path: str, status: int = 200) -> dict[str, Any]:
        async with self.admin.get(path, headers=self.headers()) as response:
            body = await response.read()
            assert response.status == status, body
            data: dict[str, Any] = orjson.loads(body)
            return data

    async def post(self, path: str, body: object = None, status: int = 200) -> dict[str, Any]:
        """A state-changing request as the CLI sends it: JSON, no Origin."""
        async with self.admin.post(path, json=body or {}, headers=self.headers()) as response:
            text = await response.read()
            assert response.status == status, text
            data: dict[str, Any] = orjson.loads(text)
            return data

    async def reload(self, text: str) -> dict[str, object]:
        """Write ``text`` as the config file and reload it (no watcher in process)."""
        replace_file(self.config_file, text)
        return await self.gateway.app[RELOADER].reload("test")


class StartAdmin(Protocol):
    async def __call__(self, toml: str, token: str | None = None) -> Admin: ...


@pytest.fixture
def start_admin(aiohttp_client: ClientFactory, tmp_path: Path) -> StartAdmin:
    """`await start_admin(toml)` loads that file (with this process's environment), starts
    the gateway app and returns it with its admin app."""

    async def start(toml: str, token: str | None = None) -> Admin:
        path = tmp_path / "gateway.toml"
        path.write_text(toml)
        gateway = await aiohttp_client(build_app(load_config(path), path, snapshots=False))
        admin = await aiohttp_client(build_admin_app(gateway.app[TABLE], token))
        return Admin(gateway, admin, path, token)

    return start
