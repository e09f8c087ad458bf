"""The admin listener's guard on a real `spork serve`: a page of another site changes nothing
and a rebinding Host reads nothing, while the CLI's admin commands still work; no answer of
either listener names aiohttp; and an admin listener open to the network without a token is
refused by `spork check` and by `spork serve`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from spork_cli.config.diagnostics import Diagnostic
from spork_cli.config.load import check_file
from tests.conftest import StartSpork
from tests.support import (
    LOOPBACK,
    SporkRunner,
    Upstream,
    free_ports,
    gateway_toml,
)

LIMITED = 'name = "limited"\nrate_limit = { requests = 5, per = "1m" }'
CACHED = 'name = "cached"\ncache = { ttl = "30s", default_ttl = "30s" }'
EVIL = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}


def served_config(
    tmp_path: Path, upstream: Upstream, admin_extra: str = ""
) -> tuple[Path, int, int]:
    """A gateway.toml with a breaker, a limited and a cached route; its two ports."""
    port, admin_port = free_ports(2)
    text = gateway_toml(
        port,
        admin_port,
        {"flaky": upstream.url},
        {},
        service_extra="breaker = { failures = 1000 }",
    )
    text = text.replace("[admin]\n", f"[admin]\n{admin_extra}\n", 1)
    for path, extra in (("/limited/", LIMITED), ("/cached/", CACHED)):
        text += f'\n[[routes]]\npath = "{path}"\nservice = "flaky"\n{extra}\n'
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    return config, port, admin_port


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return orjson.loads(await response.read())


async def test_pages_change_and_read_nothing_while_the_cli_still_works(
    tmp_path: Path,
    upstream: Upstream,
    spork_server: StartSpork,
    http: aiohttp.ClientSession,
    run_spork: SporkRunner,
) -> None:
    config, port, admin_port = served_config(tmp_path, upstream)
    server = await spork_server(config, port, admin_port)
    admin = server.admin_url

    async def breaker() -> str:
        [row] = (await get(http, f"{admin}/api/breakers"))["breakers"]
        state: str = row["state"]
        return state

    async def revoked(jti: str) -> bool:
        found: bool = (await get(http, f"{admin}/api/revocations?jti={jti}"))["revoked"]
        return found

    # State for the CLI to clear: one cached answer, one limiter key.
    for path in ("/cached/x", "/limited/x"):
        async with http.get(f"{server.url}{path}") as response:
            assert response.status == 200

    # A page of another site posts to the admin API: nothing changes.
    url = f"{admin}/api/breakers?service=flaky&action=open"
    async with http.post(url, json={}, headers=EVIL) as response:
        assert response.status == 403
        assert response.content_type == "application/problem+json"
    assert await breaker() == "closed"
    # A form cannot say application/json.
    body = orjson.dumps({"jti": "victim", "ttl": 60})
    headers = {"Content-Type": "text/plain"}
    async with http.post(f"{admin}/api/revocations", data=body, headers=headers) as response:
        assert response.status == 415
    assert not await revoked("victim")
    # A page whose name now resolves to 127.0.0.1 cannot read the config.
    rebound = {"Host": f"evil.example:{server.admin_port}"}
    async with http.get(f"{admin}/api/config", headers=rebound) as response:
        assert response.status == 403
        assert upstream.url not in await response.text()

    # The CLI changes state through the same API.
    async def spork(*args: str) -> str:
        result = await asyncio.to_thread(run_spork, "-c", str(config), *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    await spork("breakers", "open", "flaky")
    assert await breaker() == "open"
    await spork("token", "revoke", "--jti", "victim", "--ttl", "1m")
    assert await revoked("victim")
    assert (await spork("cache", "purge", "cached")).startswith("purged 1 cached response ")
    assert (await spork("limits", "reset", "limited")).startswith("reset 1 limiter key ")


@pytest.mark.observes("admin.token")
async def test_the_cli_sends_the_admin_token_to_a_guarded_listener(
    tmp_path: Path,
    upstream: Upstream,
    spork_server: StartSpork,
    http: aiohttp.ClientSession,
    run_spork: SporkRunner,
) -> None:
    token = "admin-token-for-the-served-guard"
    config, port, admin_port = served_config(tmp_path, upstream, f'token = "{token}"')
    server = await spork_server(config, port, admin_port)

    async with http.get(f"{server.admin_url}/metrics") as refused:
        assert refused.status == 401
    result = await asyncio.to_thread(run_spork, "-c", str(config), "breakers", "open", "flaky")
    assert result.returncode == 0, result.stderr
    shown = await asyncio.to_thread(run_spork, "-c", str(config), "breakers", "--json")
    [row] = orjson.loads(shown.stdout)
    assert (row["service"], row["state"]) == ("flaky", "open")


# --- Server ----------------------------------------------------------------------------------


async def head_of(port: int, request: bytes) -> list[str]:
    """The status line and headers a listener answers ``request`` with, over a raw socket."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    finally:
        writer.close()
    return head.decode("latin-1").split("\r\n")[:-2]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nNo Colon Here\r\n\r\n",  # aiohttp's own 400
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["answer", "not-found", "bad-header", "garbage"],
)
async def test_no_answer_of_either_listener_names_aiohttp(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, request_bytes: bytes
) -> None:
    server = await spork_server(*served_config(tmp_path, upstream))

    for port in (server.port, server.admin_port):
        head = await head_of(port, request_bytes)
        servers = [line for line in head if line.lower().startswith("server:")]
        assert servers == ["Server: spork"], (port, head)


# --- an admin listener open to the network --------------------------------------------------

ROUTE = (
    f'[[services]]\nname = "s"\nendpoints = ["http://{LOOPBACK}:9"]\n'
    '[[routes]]\npath = "/"\nservice = "s"\n'
)


def exposed_config(tmp_path: Path, admin: str) -> Path:
    port, admin_port = free_ports(2)
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[server]\nhost = "{LOOPBACK}"\nport = {port}\n\n'
        f"[admin]\n{admin}\nport = {admin_port}\n\n[demo]\nenabled = false\n\n{ROUTE}"
    )
    return path


def exposures(tmp_path: Path, admin: str) -> list[Diagnostic]:
    return [
        d
        for d in check_file(str(exposed_config(tmp_path, admin))).diagnostics
        if d.code == "admin-exposed"
    ]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gateway.example"])
@pytest.mark.observes("admin.insecure_public")
def test_beyond_loopback_the_admin_listener_needs_a_token_or_the_opt_out(
    tmp_path: Path, host: str
) -> None:
    [found] = exposures(tmp_path, f'host = "{host}"')
    assert (found.severity, found.path, found.line) == ("error", "admin.host", 6)
    assert "insecure_public" in (found.hint or "")
    # An empty token (`${VAR:-}` with VAR unset) guards nothing.
    assert len(exposures(tmp_path, f'host = "{host}"\ntoken = ""')) == 1

    assert exposures(tmp_path, f'host = "{host}"\ntoken = "t0ken"') == []
    assert exposures(tmp_path, f'host = "{host}"\ninsecure_public = true') == []
    assert exposures(tmp_path, f'host = "{host}"\nenabled = false') == []


@pytest.mark.parametrize("host", ["127.0.0.2", "0:0:0:0:0:0:0:1"])
def test_every_loopback_address_is_loopback(tmp_path: Path, host: str) -> None:
    assert exposures(tmp_path, f'host = "{host}"') == []


def test_spork_check_and_spork_serve_refuse_it(tmp_path: Path, run_spork: SporkRunner) -> None:
    config = str(exposed_config(tmp_path, 'host = "0.0.0.0"'))

    checked = run_spork("check", config)
    assert checked.returncode == 1, checked.stdout
    assert "error admin.host" in checked.stdout and "[admin-exposed]" in checked.stdout
    # The refusal comes before any listener is opened: no traffic, nothing bound.
    served = run_spork("serve", "-c", config, "--no-reload")
    assert served.returncode == 2, served.stderr
    [line] = served.stderr.strip().splitlines()
    assert line.startswith("spork: cannot start: ") and "admin-exposed" in line
