"""Headers a client controls: identity spellings, underscores, a second Authorization, Host,
Forwarded, the headers only a trusted proxy may send, TRACE, and the client address behind
trusted proxies (Forwarded, IPv4-mapped IPv6)."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from spork_cli.gateway.forwarding import Forwarding, forwarded_for
from spork_cli.gateway.keys import REQUEST_ID
from spork_cli.middleware.ratelimit import client_ip
from tests.gateway.conftest import Gateway, expect_problem, json_of, single_service
from tests.support import LOOPBACK, Upstream

IDENTITY_SPELLINGS = [("X_User_Id", "admin"), ("x-user_roles", "admin"), ("X-USER_ID", "root")]
PROXY_ONLY = [
    "X-Real-IP",
    "X-Client-IP",
    "True-Client-IP",
    "X-Forwarded-Prefix",
    "X-Forwarded-Port",
    "X-Forwarded-Server",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
    "X-Forwarded-Ssl",
    "X-Forwarded-Scheme",
    "X-Forwarded-Protocol",
    "X-Url-Scheme",
    "Front-End-Https",
    "X-Cluster-Client-IP",
    "Client-IP",
    "X-Forwarded",
    "Forwarded-For",
    "X-Host",
    "X-Forwarded-Uri",
    "X-Envoy-Original-Path",
    "X-Script-Name",
]


async def seen_headers(client: Any, headers: Any, path: str = "/x") -> dict[str, str]:
    async with client.get(path, headers=headers) as response:
        assert response.status == 200, await response.text()
        seen: dict[str, str] = (await json_of(response))["headers"]
        return seen


async def raw(port: int, head: bytes) -> tuple[int, bytes]:
    """Send ``head`` as bytes on a fresh connection; the status and body of the answer."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(head)
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("allowed", [False, True], ids=["default", "underscores-allowed"])
async def test_underscore_spellings_of_identity_headers_never_reach_the_upstream(
    gateway: Gateway, upstream: Upstream, allowed: bool
) -> None:
    client = await gateway(single_service(upstream.url, server={"underscores_in_headers": allowed}))
    headers = await seen_headers(client, CIMultiDict(IDENTITY_SPELLINGS))
    assert {name.replace("_", "-") for name in headers} & {"x-user-id", "x-user-roles"} == set()


async def test_headers_with_underscores_are_dropped_by_default(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url))
    headers = await seen_headers(client, {"X_Custom": "1", "X-Custom": "2"})
    assert "x_custom" not in headers
    assert headers["x-custom"] == "2"


@pytest.mark.observes("server.underscores_in_headers")
async def test_allowed_underscores_pass_but_not_as_a_header_the_gateway_sets(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, server={"underscores_in_headers": True}))
    sent = {"X_Custom": "1", "X_Forwarded_For": "6.6.6.6", "Content_Type": "text/evil"}
    headers = await seen_headers(client, sent)
    assert headers["x_custom"] == "1"
    assert "x_forwarded_for" not in headers
    assert "content_type" not in headers


# --- Authorization, Host, TRACE --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/x", "/no-route/x"])
async def test_more_than_one_authorization_header_is_a_400_problem(
    gateway: Gateway, upstream: Upstream, path: str
) -> None:
    client = await gateway(single_service(upstream.url, route={"path": "/x"}))
    sent = CIMultiDict([("Authorization", "Bearer a"), ("Authorization", "Bearer b")])
    async with client.get(path, headers=sent) as response:
        body = await expect_problem(response, 400)
    assert body["type"] == "urn:spork:problem:bad-authorization"
    assert upstream.requests == []


BAD_HOSTS = [
    'a", for=6.6.6.6;proto=https;host="evil.example',
    "a b",
    "ex/ample",
    "ex\\ample",
    "[::1",
    "[::zz]",
    "host:80x",
    "%zz.example",
    "user@example",
]


@pytest.mark.parametrize("host", BAD_HOSTS)
async def test_a_host_that_is_not_a_uri_host_is_a_400_problem(
    gateway: Gateway, upstream: Upstream, host: str
) -> None:
    client = await gateway(single_service(upstream.url))
    head = f"GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    status, body = await raw(client.port, head)
    assert (status, b"bad-host" in body) == (400, True)
    assert upstream.requests == []


async def test_trace_is_a_405_problem_by_default(gateway: Gateway, upstream: Upstream) -> None:
    client = await gateway(single_service(upstream.url))
    async with client.request("TRACE", "/x") as response:
        await expect_problem(response, 405)
        assert "TRACE" not in response.headers["Allow"]
    assert upstream.requests == []


@pytest.mark.observes("server.allow_trace")
async def test_trace_reaches_the_upstream_when_allowed(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, server={"allow_trace": True}))
    async with client.request("TRACE", "/x") as response:
        assert response.status == 200
    assert [r.method for r in upstream.requests] == ["TRACE"]


# --- Forwarded -------------------------------------------------------------------------------


def forwarding_request(host: str, peer: str = "127.0.0.1", **headers: str) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default
    )
    request = make_mocked_request(
        "GET", "/x", headers=CIMultiDict({"Host": host, **headers}), transport=transport
    )
    request[REQUEST_ID] = "r1"
    return request


def test_every_value_in_forwarded_stays_one_parameter() -> None:
    forwarding = Forwarding([], {})
    endpoint = mock.Mock(authority="127.0.0.1:9")
    host = 'a", for=6.6.6.6;proto=https;host="evil\\'
    sent = forwarding.upstream_headers(forwarding_request(host), endpoint, preserve_host=False)
    forwarded = [v for k, v in sent if k == "Forwarded"]
    assert forwarded == [
        'for=127.0.0.1;proto=http;host="a\\", for=6.6.6.6;proto=https;host=\\"evil\\\\"'
    ]
    assert forwarded_for(forwarded) == ["127.0.0.1"]


# --- what only a trusted proxy may send ------------------------------------------------------


@pytest.mark.parametrize("name", PROXY_ONLY)
async def test_proxy_only_headers_are_stripped_from_other_clients(
    gateway: Gateway, upstream: Upstream, name: str
) -> None:
    client = await gateway(single_service(upstream.url))
    assert name.lower() not in await seen_headers(client, {name: "/evil"})


@pytest.mark.parametrize("name", PROXY_ONLY)
@pytest.mark.observes("server.trusted_proxies")
async def test_proxy_only_headers_pass_from_a_trusted_proxy(
    gateway: Gateway, upstream: Upstream, name: str
) -> None:
    client = await gateway(
        single_service(upstream.url, server={"trusted_proxies": ["127.0.0.1/32"]})
    )
    assert (await seen_headers(client, {name: "/prefix"}))[name.lower()] == "/prefix"


@pytest.mark.parametrize("trusted", [[], ["127.0.0.1/32"]], ids=["client", "trusted-proxy"])
async def test_a_proxy_header_never_reaches_an_upstream_from_anyone(
    gateway: Gateway, upstream: Upstream, trusted: list[str]
) -> None:
    # CGI servers would make it HTTP_PROXY, the proxy setting of the upstream's own clients.
    client = await gateway(single_service(upstream.url, server={"trusted_proxies": trusted}))
    assert "proxy" not in await seen_headers(client, {"Proxy": "http://127.0.0.1:9"})


# --- the client address ----------------------------------------------------------------------


def limited(upstream: Upstream) -> dict[str, Any]:
    return single_service(
        upstream.url,
        route={"rate_limit": {"requests": 1, "per": "1m"}},
        server={"trusted_proxies": ["127.0.0.1/32"]},
    )


async def statuses(client: Any, *headers: dict[str, str]) -> list[int]:
    found = []
    for sent in headers:
        async with client.get("/x", headers=sent) as response:
            found.append(response.status)
    return found


async def test_forwarded_for_names_the_client_behind_a_trusted_proxy(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(limited(upstream))
    found = await statuses(
        client,
        {"Forwarded": "for=203.0.113.9"},
        {"Forwarded": 'for="[::ffff:203.0.113.9]:4711"'},
        {"Forwarded": "for=198.51.100.7;proto=https"},
    )
    assert found == [200, 429, 200]


async def test_an_ipv4_mapped_address_keys_the_limit_of_its_ipv4_address(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(limited(upstream))
    found = await statuses(
        client, {"X-Forwarded-For": "::ffff:203.0.113.9"}, {"X-Forwarded-For": "203.0.113.9"}
    )
    assert found == [200, 429]


def test_an_ipv4_mapped_peer_is_its_ipv4_address() -> None:
    request = forwarding_request("h", peer="::ffff:192.0.2.7")
    assert client_ip(request, Forwarding([], {})) == "192.0.2.7"


def test_an_ipv4_mapped_peer_is_trusted_by_its_ipv4_network() -> None:
    assert Forwarding(["192.0.2.0/24"], {}).is_trusted("::ffff:192.0.2.7")
