"""Deny rules through the gateway: path, query and header patterns, every condition of a rule
needed, applied before routing (unmatched paths too), before auth and before CORS."""

from __future__ import annotations

import pytest

from spork_cli.config.model import GatewayConfig
from tests.edge.conftest import Backend, Connect, Gateway, cors_headers, edge_config, problem

RULES = [
    {"name": "dotfiles", "path": r"/\.(git|env)(/|$)"},
    {"name": "sqli", "query": r"(?i)union(\s|%20|\+)+select"},
    {"name": "scanner", "header": "User-Agent", "value": r"(?i)sqlmap|nikto"},
    {"name": "admin-debug", "path": r"^/admin/", "query": r"(^|&)debug="},
]


def denying(backend_url: str, *routes: dict[str, object], **sections: object) -> GatewayConfig:
    return edge_config(backend_url, *routes, deny=RULES, **sections)


@pytest.mark.parametrize(
    ("path", "headers", "rule"),
    [
        ("/.git/config", {}, "dotfiles"),
        ("/app/.env", {}, "dotfiles"),
        ("/search?q=1%20UNION%20SELECT%20password", {}, "sqli"),
        ("/search?q=1+union+select+1", {}, "sqli"),
        ("/x", {"User-Agent": "sqlmap/1.7"}, "scanner"),
        ("/admin/users?page=2&debug=1", {}, "admin-debug"),
    ],
)
@pytest.mark.observes("deny.name", "deny.path", "deny.query", "deny.header", "deny.value")
async def test_a_matching_request_is_403_naming_the_rule(
    gateway: Gateway, backend: Backend, path: str, headers: dict[str, str], rule: str
) -> None:
    client = await gateway(denying(backend.url))
    async with client.get(path, headers=headers) as response:
        body = await problem(response, 403)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert body["type"] == "urn:spork:problem:denied"
    assert body["rule"] == rule
    assert rule in body["detail"]
    assert backend.calls == 0


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/git/config", {}),
        ("/.gitignore-docs", {}),
        ("/x?q=union", {}),
        ("/x", {"User-Agent": "curl/8.0"}),
        ("/admin/users?page=2", {}),  # the query half of the rule is missing
        ("/public?debug=1", {}),  # the path half of the rule is missing
        ("/search%3Funion%20select", {}),  # in the path, not the query
    ],
)
async def test_other_requests_go_through(
    gateway: Gateway, backend: Backend, path: str, headers: dict[str, str]
) -> None:
    client = await gateway(denying(backend.url))
    async with client.get(path, headers=headers) as response:
        assert response.status == 200
    assert backend.calls == 1


async def test_rules_see_the_canonical_path(
    gateway: Gateway, backend: Backend, raw_connection: Connect
) -> None:
    # An encoded spelling is the same path: the upstream would decode it to `/.git/config`.
    client = await gateway(denying(backend.url))
    for target in (b"/%2Egit/config", b"/%2egit/%63onfig", b"/x/..//.git/config"):
        connection = await raw_connection(client)
        await connection.send(b"GET " + target + b" HTTP/1.1\r\nHost: gateway\r\n\r\n")
        status, _, _ = await connection.head()
        assert status == 403, target
    assert backend.seen == []


async def test_unmatched_paths_are_denied_too(gateway: Gateway, backend: Backend) -> None:
    client = await gateway(denying(backend.url, {"path": "/api"}))
    async with client.get("/.env") as response:
        body = await problem(response, 403)
    assert body["rule"] == "dotfiles"
    async with client.get("/elsewhere") as response:
        await problem(response, 404)


async def test_deny_comes_before_auth(gateway: Gateway, backend: Backend) -> None:
    config = denying(backend.url, {"path": "/", "auth": "required"}, auth={"secret": "s" * 40})
    client = await gateway(config)
    async with client.get("/.git/HEAD") as response:
        await problem(response, 403)
    async with client.get("/fine") as response:
        await problem(response, 401)


async def test_a_denied_preflight_is_not_answered(gateway: Gateway, backend: Backend) -> None:
    client = await gateway(denying(backend.url, cors={"allow_origins": ["http://app.test"]}))
    headers = {"Origin": "http://app.test", "Access-Control-Request-Method": "GET"}
    async with client.options("/.env", headers=headers) as response:
        await problem(response, 403)
        assert cors_headers(response.headers) == {}


async def test_a_header_sent_twice_is_tested_in_each_value(
    gateway: Gateway, backend: Backend
) -> None:
    config = edge_config(
        backend.url, deny=[{"name": "bad-tenant", "header": "X-Tenant", "value": "^evil$"}]
    )
    client = await gateway(config)
    async with client.get("/x", headers=[("X-Tenant", "good"), ("X-Tenant", "evil")]) as r:
        assert (await problem(r, 403))["rule"] == "bad-tenant"
    async with client.get("/x", headers={"X-Tenant": "evil-ish"}) as response:
        assert response.status == 200
