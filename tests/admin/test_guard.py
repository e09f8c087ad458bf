"""Who the admin listener answers, in process: pages of other origins cannot change state, a
DNS-rebinding Host cannot read it, and with a token every endpoint but health needs it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse

from tests.admin.conftest import Admin, StartAdmin
from tests.support import Upstream

TOKEN = "admin-token-for-the-guard-tests"
JSON = {"Content-Type": "application/json"}
EVIL = "http://evil.example"


def config(upstream: Upstream, admin: str = "") -> str:
    return f"""
[admin]
{admin}

[[services]]
name = "flaky"
endpoints = ["{upstream.url}"]
breaker = {{ failures = 1000 }}

[[routes]]
path = "/"
service = "flaky"
"""


@pytest.fixture
async def admin(start_admin: StartAdmin, upstream: Upstream) -> Admin:
    return await start_admin(config(upstream))


def own(admin: Admin) -> str:
    """The listener's own origin, as its dashboard page has it."""
    return f"http://127.0.0.1:{admin.admin.port}"


async def problem(response: ClientResponse, status: int) -> dict[str, Any]:
    body = await response.read()
    assert response.status == status, body
    assert response.content_type == "application/problem+json"
    document: dict[str, Any] = orjson.loads(body)
    return document


async def breaker_state(admin: Admin) -> str:
    [row] = (await admin.get("/api/breakers"))["breakers"]
    state: str = row["state"]
    return state


async def revoked(admin: Admin, jti: str) -> bool:
    found: bool = (await admin.get(f"/api/revocations?jti={jti}"))["revoked"]
    return found


# --- cross-site changes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},  # a sandboxed frame or a file: page
        {"Origin": "http://127.0.0.1:1"},  # another local server is another origin
        {"Origin": "http://127.0.0.1.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},  # a browser that left Origin out
        {"Sec-Fetch-Site": "same-site"},  # localhost:3000 is the same site, not this origin
    ],
    ids=["evil", "evil-fetch", "null", "other-port", "suffix", "fetch-only", "same-site"],
)
async def test_a_change_from_another_origin_is_refused_and_the_breaker_stays_closed(
    admin: Admin, headers: dict[str, str]
) -> None:
    url = "/api/breakers?service=flaky&action=open"
    async with admin.admin.post(url, json={}, headers=headers) as response:
        assert (await problem(response, 403))["type"] == "urn:spork:problem:cross-origin"
    assert await breaker_state(admin) == "closed"

    # The same request from the listener's own page (the dashboard) is taken.
    mine = {"Origin": own(admin), "Sec-Fetch-Site": "same-origin"}
    async with admin.admin.post(url, json={}, headers=mine) as response:
        assert response.status == 200, await response.text()
    assert await breaker_state(admin) == "open"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_a_change_that_is_not_json_is_refused_and_nothing_is_revoked(
    admin: Admin, content_type: str | None
) -> None:
    # The three types a form or a no-cors fetch may send to any origin without a preflight,
    # and a request that names none; the body is JSON all the same.
    body = orjson.dumps({"jti": "victim", "ttl": 60})
    headers = {"Content-Type": content_type} if content_type else {}
    skip = () if content_type else ("Content-Type",)
    async with admin.admin.post(
        "/api/revocations", data=body, headers=headers, skip_auto_headers=skip
    ) as response:
        assert (await problem(response, 415))["type"].endswith(":unsupported-media-type")
    assert not await revoked(admin, "victim")

    # Said to be JSON, as the CLI sends it, the same body is taken.
    await admin.post("/api/revocations", {"jti": "victim", "ttl": 60})
    assert await revoked(admin, "victim")


# --- Host ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",
        "evil.example",
        "127.0.0.1.evil.example:{port}",
        "localhost.evil.example:{port}",
        "127.0.0.1:1",  # another port is another listener
        "127.0.0.1:{port}:{port}",
        "",
    ],
)
async def test_a_rebinding_host_cannot_read_the_config(admin: Admin, host: str) -> None:
    headers = {"Host": host.format(port=admin.admin.port)}
    async with admin.admin.get("/api/config", headers=headers) as response:
        assert (await problem(response, 403))["type"] == "urn:spork:problem:admin-host"
        assert "flaky" not in await response.text()

    # Probes name the listener however they were told to; health holds nothing to steal.
    for path in ("/health", "/health/ready"):
        async with admin.admin.get(path, headers=headers) as probe:
            assert probe.status == 200, path


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:{port}",
        "localhost:{port}",
        "LocalHost:{port}",
        "[::1]:{port}",
        "admin.example",  # a name alone: any port
        "admin.example:8443",
        "proxied.example:9443",  # name:port: that port
    ],
)
@pytest.mark.observes("admin.allowed_hosts")
async def test_the_listeners_own_names_and_the_allowed_hosts_can_read_it(
    start_admin: StartAdmin, upstream: Upstream, host: str
) -> None:
    allowed = 'allowed_hosts = ["admin.example", "proxied.example:9443"]'
    admin = await start_admin(config(upstream, allowed))
    headers = {"Host": host.format(port=admin.admin.port)}
    async with admin.admin.get("/api/config", headers=headers) as response:
        assert response.status == 200, await response.text()
    async with admin.admin.get("/api/config", headers={"Host": "proxied.example:9444"}) as other:
        await problem(other, 403)


async def test_a_change_from_an_allowed_host_page_is_taken(
    start_admin: StartAdmin, upstream: Upstream
) -> None:
    # Behind a TLS proxy the page's origin is https: the authority is what must match.
    admin = await start_admin(config(upstream, 'allowed_hosts = ["admin.example"]'))
    headers = {"Host": "admin.example", "Origin": "https://admin.example", **JSON}
    url = "/api/breakers?service=flaky&action=open"
    async with admin.admin.post(url, headers=headers) as response:
        assert response.status == 200, await response.text()

    assert await breaker_state(admin) == "open"


# --- the token -------------------------------------------------------------------------------

OPEN_WITH_A_TOKEN = {"/health", "/health/ready", "/", "/dashboard/{name}"}


def every_route(admin: Admin) -> list[tuple[str, str, str]]:
    """(method, canonical path, a concrete path) of every route the admin app has."""
    found = []
    for resource in admin.admin.app.router.resources():
        for route in resource:
            if route.method == "HEAD":
                continue  # added beside each GET
            canonical = resource.canonical
            found.append((route.method, canonical, canonical.format(name="dashboard.js")))
    return found


async def test_with_a_token_every_endpoint_but_health_and_the_page_needs_it(
    start_admin: StartAdmin, upstream: Upstream
) -> None:
    admin = await start_admin(config(upstream), token=TOKEN)
    routes = every_route(admin)
    assert {path for _, path, _ in routes} >= OPEN_WITH_A_TOKEN | {"/metrics", "/api/config"}

    opened = set()
    for method, canonical, path in routes:
        async with admin.admin.request(method, path, json={}) as response:
            if response.status != 401:
                opened.add(canonical)
        wrong = {"Authorization": "Bearer not-the-token"}
        async with admin.admin.request(method, path, json={}, headers=wrong) as response:
            assert (response.status == 401) is (canonical not in OPEN_WITH_A_TOKEN), path
        async with admin.admin.request(method, path, json={}, headers=admin.headers()) as response:
            assert response.status not in (401, 403), (method, path)

    assert opened == OPEN_WITH_A_TOKEN


@pytest.mark.observes("admin.metrics_public")
async def test_metrics_public_opens_the_metrics_only(
    start_admin: StartAdmin, upstream: Upstream
) -> None:
    admin = await start_admin(config(upstream, "metrics_public = true"), token=TOKEN)

    async with admin.admin.get("/metrics") as metrics:
        assert metrics.status == 200
        assert "spork_requests_in_flight" in await metrics.text()
    async with admin.admin.get("/api/config") as api:
        await problem(api, 401)


# --- Server ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/api/config", "/", "/nothing-here"])
async def test_no_answer_names_aiohttp(
    start_admin: StartAdmin, upstream: Upstream, path: str
) -> None:
    admin = await start_admin(config(upstream), token=TOKEN)

    async with admin.admin.get(path) as response:
        assert response.headers.getall("Server") == ["spork"]
