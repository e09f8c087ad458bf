"""The admin API of a real `spork serve` process: the token guard, the route table and the
reload history after a bad and then a good edit of the running server's file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.conftest import StartSpork
from tests.support import (
    SporkServer,
    Upstream,
    eventually,
    free_ports,
    gateway_toml,
    replace_file,
)

TOKEN = "served-admin-token-0123456789"


def config_text(port: int, admin_port: int, upstream: Upstream, routes: dict[str, str]) -> str:
    admin = f'token = "{TOKEN}"'
    return gateway_toml(port, admin_port, {"users": upstream.url}, routes, admin_extra=admin)


async def api(http: aiohttp.ClientSession, server: SporkServer, path: str) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(f"{server.admin_url}{path}", headers=headers) as response:
        body = await response.read()
        assert response.status == 200, body
        return orjson.loads(body)


async def test_a_running_server_lists_bad_and_good_reloads_newest_first(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    port, admin_port = free_ports(2)
    config = tmp_path / "gateway.toml"
    text = config_text(port, admin_port, upstream, {"/api": "users"})
    config.write_text(text)
    server = await spork_server(config, port, admin_port)

    async with http.get(f"{server.admin_url}/api/routes") as refused:
        assert refused.status == 401
    assert [r["path"] for r in (await api(http, server, "/api/routes"))["routes"]] == ["/api"]
    [users] = (await api(http, server, "/api/services"))["services"]
    assert [e["url"] for e in users["endpoints"]] == [upstream.url]
    assert (await api(http, server, "/api/reloads"))["reloads"] == []

    bad = text.replace('name = "users"', 'name = "users"\ntimeout = "soon"')
    line = bad.splitlines().index('timeout = "soon"') + 1
    replace_file(config, bad)

    async def recorded(result: str) -> list[dict[str, Any]] | None:
        reloads: list[dict[str, Any]] = (await api(http, server, "/api/reloads"))["reloads"]
        return reloads if any(r["result"] == result for r in reloads) else None

    reloads = await eventually(lambda: recorded("invalid"), timeout=5, what="the bad reload")
    error = reloads[0]["errors"][0]
    assert (error["file"], error["line"], error["path"]) == (
        str(config),
        line,
        "services[0].timeout",
    )
    async with http.get(f"{server.url}/api/x") as still:
        assert still.status == 200  # the previous table keeps serving

    replace_file(config, config_text(port, admin_port, upstream, {"/api": "users", "/v2": "users"}))
    reloads = await eventually(lambda: recorded("applied"), timeout=5, what="the good reload")

    results = [r["result"] for r in reloads]
    assert results.index("applied") < results.index("invalid")  # newest first
    stamps = [r["at"] for r in reloads]
    assert stamps == sorted(stamps, reverse=True)
    paths = [r["path"] for r in (await api(http, server, "/api/routes"))["routes"]]
    assert paths == ["/api", "/v2"]
