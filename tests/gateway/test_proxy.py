"""Forwarding through a real gateway to real upstreams: paths, headers, bodies, limits."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from spork_cli.gateway.keys import METRICS
from spork_cli.gateway.metrics import UNMATCHED
from tests.gateway.conftest import (
    Gateway,
    StubFactory,
    expect_problem,
    json_of,
    single_service,
)
from tests.support import LOOPBACK, Upstream, UpstreamFactory, free_port, pattern_bytes

MiB = 1024 * 1024


async def echo(client: Any, path: str, **kwargs: Any) -> dict[str, Any]:
    # encoded=True: the client must send the path and query exactly as written.
    async with client.get(URL(path, encoded=True), **kwargs) as response:
        assert response.status == 200, await response.text()
        return await json_of(response)


# --- path and query ----------------------------------------------------------------------------


async def test_raw_path_with_encoded_slash_and_query_reach_upstream_intact(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, route={"path": "/api"}))
    seen = await echo(client, "/api/files/a%3Bb/c%20d?x=1&y=%2F&z=a+b&empty=")
    assert seen["raw_path"] == "/api/files/a%3Bb/c%20d?x=1&y=%2F&z=a+b&empty="
    assert upstream.requests[-1].raw_path == "/api/files/a%3Bb/c%20d?x=1&y=%2F&z=a+b&empty="


@pytest.mark.observes("routes.strip_prefix")
async def test_strip_prefix_through_the_gateway_keeps_encoding_and_query(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(
        single_service(upstream.url, route={"path": "/api", "strip_prefix": True})
    )
    seen = await echo(client, "/api/a%20b?q=%2F")
    assert seen["raw_path"] == "/a%20b?q=%2F"
    seen = await echo(client, "/api?q=1")
    assert seen["raw_path"] == "/?q=1"


@pytest.mark.observes("services.endpoints.url")
async def test_endpoint_url_path_is_prepended(gateway: Gateway, upstream: Upstream) -> None:
    client = await gateway(
        single_service(f"{upstream.url}/base/", route={"path": "/api", "strip_prefix": True})
    )
    seen = await echo(client, "/api/x%20y?q=1")
    assert seen["raw_path"] == "/base/x%20y?q=1"


# --- hop-by-hop headers ------------------------------------------------------------------------


async def test_hop_by_hop_request_headers_are_removed(gateway: Gateway, upstream: Upstream) -> None:
    client = await gateway(single_service(upstream.url))
    seen = await echo(
        client,
        "/x",
        headers={
            "Connection": "keep-alive, X-Hop-Secret",
            "X-Hop-Secret": "must not pass",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "Proxy-Connection": "keep-alive",
            "TE": "trailers",
            "Trailer": "X-Checksum",
            "X-End-To-End": "kept",
        },
    )
    headers = seen["headers"]
    for name in ("x-hop-secret", "keep-alive", "proxy-authorization", "proxy-connection"):
        assert name not in headers
    assert "te" not in headers
    assert "trailer" not in headers
    assert "x-hop-secret" not in headers.get("connection", "").lower()
    assert headers["x-end-to-end"] == "kept"


HOP_RESPONSE_HEADERS = {
    "Connection": "X-Resp-Hop",
    "X-Resp-Hop": "secret",
    "Keep-Alive": "timeout=5",
    "Proxy-Authenticate": "Basic",
    "Trailer": "X-Checksum",
    "X-End-To-End": "kept",
}


async def test_hop_by_hop_response_headers_are_removed(
    gateway: Gateway, upstream_factory: UpstreamFactory
) -> None:
    server = await upstream_factory("streaming")
    client = await gateway(single_service(server.url))
    asked = [("respond-header", f"{name}:{value}") for name, value in HOP_RESPONSE_HEADERS.items()]
    async with client.get("/hop", params=asked) as response:
        assert response.status == 200
        assert (await json_of(response))["path"] == "/hop"
        for name in ("X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate", "Trailer"):
            assert name not in response.headers
        assert "x-resp-hop" not in response.headers.get("Connection", "").lower()
        assert response.headers["X-End-To-End"] == "kept"
        assert response.headers["X-Upstream"] == "streaming"


# --- forwarding headers ------------------------------------------------------------------------

SPOOFED = {
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "spoofed.example",
    "Forwarded": "for=203.0.113.9;proto=https",
}


async def test_forwarding_headers_are_set_and_client_values_ignored_when_untrusted(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url))
    host = f"127.0.0.1:{client.port}"
    headers = (await echo(client, "/x", headers=SPOOFED))["headers"]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == host
    assert headers["forwarded"] == f'for=127.0.0.1;proto=http;host="{host}"'


async def test_forwarding_headers_extend_client_values_from_a_trusted_proxy(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(
        single_service(upstream.url, server={"trusted_proxies": ["127.0.0.1/32"]})
    )
    host = f"127.0.0.1:{client.port}"
    headers = (await echo(client, "/x", headers=SPOOFED))["headers"]
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == "spoofed.example"
    # Rebuilt from the hops the trusted proxy vouches for: their addresses, then this hop's
    # element (the scheme and host of earlier hops travel in X-Forwarded-Proto / -Host).
    assert headers["forwarded"] == f'for=203.0.113.9, for=127.0.0.1;proto=http;host="{host}"'


async def test_forwarding_headers_are_set_without_client_values_from_a_trusted_proxy(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(
        single_service(upstream.url, server={"trusted_proxies": ["127.0.0.0/8"]})
    )
    host = f"127.0.0.1:{client.port}"
    headers = (await echo(client, "/x"))["headers"]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == host
    assert headers["forwarded"] == f'for=127.0.0.1;proto=http;host="{host}"'


async def test_trusted_proxies_that_do_not_include_the_peer_are_not_trusted(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, server={"trusted_proxies": ["10.0.0.0/8"]}))
    headers = (await echo(client, "/x", headers=SPOOFED))["headers"]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"


async def test_repeated_x_forwarded_for_lines_from_a_trusted_proxy_read_as_one_chain(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(
        single_service(upstream.url, server={"trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"]})
    )
    sent = CIMultiDict(
        [
            ("X-Forwarded-For", "198.51.100.1, 203.0.113.9"),
            ("X-Forwarded-For", "10.0.0.7"),
        ]
    )
    headers = (await echo(client, "/x", headers=sent))["headers"]
    # 10.0.0.7 (trusted) names 203.0.113.9, the client; what stands before the client's own
    # hop is whatever the client wrote, and an upstream reading the first entry would take it.
    assert headers["x-forwarded-for"] == "203.0.113.9, 10.0.0.7, 127.0.0.1"
    assert headers["forwarded"].startswith("for=203.0.113.9, for=10.0.0.7, for=127.0.0.1;")


@pytest.mark.parametrize(
    "lines",
    [
        ["for=6.6.6.6;proto=https;host=evil.example", "for=203.0.113.9"],
        ['for="6.6.6.6', "for=203.0.113.9"],
        ["for=6.6.6.6, for=203.0.113.9"],
    ],
    ids=["forged-element", "unbalanced-quote", "one-line"],
)
async def test_forwarded_from_a_trusted_proxy_keeps_only_what_it_vouches_for(
    gateway: Gateway, upstream: Upstream, lines: list[str]
) -> None:
    client = await gateway(
        single_service(upstream.url, server={"trusted_proxies": ["127.0.0.1/32"]})
    )
    sent = CIMultiDict([("Forwarded", line) for line in lines])
    headers = (await echo(client, "/x", headers=sent))["headers"]
    host = f"127.0.0.1:{client.port}"
    assert headers["forwarded"] == f'for=203.0.113.9, for=127.0.0.1;proto=http;host="{host}"'
    # The client that Forwarded names is the one X-Forwarded-For names upstream too.
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"


# --- identity and host -------------------------------------------------------------------------


async def test_client_identity_headers_are_stripped(gateway: Gateway, upstream: Upstream) -> None:
    client = await gateway(single_service(upstream.url))
    sent = CIMultiDict([("X-User-Id", "admin"), ("x-user-roles", "admin"), ("X-USER-ID", "root")])
    headers = (await echo(client, "/x", headers=sent))["headers"]
    assert "x-user-id" not in headers
    assert "x-user-roles" not in headers


async def test_configured_forward_claim_headers_are_stripped(
    gateway: Gateway, upstream: Upstream
) -> None:
    data = single_service(upstream.url)
    data["auth"] = {
        "secret": "s" * 32,
        "forward_claims": {"sub": "X-Subject", "tenant": "X-Tenant"},
    }
    client = await gateway(data)
    headers = (await echo(client, "/x", headers={"X-Subject": "admin", "X-Tenant": "t1"}))[
        "headers"
    ]
    assert "x-subject" not in headers
    assert "x-tenant" not in headers


async def test_host_is_rewritten_to_the_endpoint(gateway: Gateway, upstream: Upstream) -> None:
    client = await gateway(single_service(upstream.url))
    headers = (await echo(client, "/x", headers={"Host": "api.example.test"}))["headers"]
    assert headers["host"] == f"127.0.0.1:{upstream.port}"


@pytest.mark.observes("services.preserve_host")
async def test_host_is_preserved_when_the_service_asks(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, preserve_host=True))
    headers = (await echo(client, "/x", headers={"Host": "api.example.test"}))["headers"]
    assert headers["host"] == "api.example.test"
    assert headers["x-forwarded-host"] == "api.example.test"


# --- bodies ------------------------------------------------------------------------------------


async def test_small_body_and_method_pass_through(gateway: Gateway, upstream: Upstream) -> None:
    client = await gateway(single_service(upstream.url))
    async with client.patch("/x", data=b'{"name": "ada"}') as response:
        seen = await json_of(response)
    assert seen["method"] == "PATCH"
    assert seen["body"] == '{"name": "ada"}'


@pytest.mark.observes("routes.max_body")
async def test_content_length_over_route_limit_is_413_problem(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, route={"max_body": "1KiB"}))
    async with client.post("/x", data=b"x" * 2048) as response:
        body = await expect_problem(response, 413)
    assert body["type"] == "urn:spork:problem:body-too-large"
    assert upstream.requests == []


@pytest.mark.observes("server.max_body")
async def test_content_length_over_server_limit_is_413_problem(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, server={"max_body": "1KiB"}))
    async with client.post("/x", data=b"x" * 2048) as response:
        await expect_problem(response, 413)
    assert upstream.requests == []


async def test_route_limit_overrides_a_smaller_server_limit(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(
        single_service(upstream.url, route={"max_body": "4KiB"}, server={"max_body": "1KiB"})
    )
    async with client.post("/x", data=b"x" * 2048) as response:
        assert response.status == 200
        assert len((await json_of(response))["body"]) == 2048


async def test_body_at_the_limit_is_accepted(gateway: Gateway, upstream: Upstream) -> None:
    client = await gateway(single_service(upstream.url, route={"max_body": "1KiB"}))
    async with client.post("/x", data=b"x" * 1024) as response:
        assert response.status == 200


async def test_streamed_body_with_known_length_keeps_content_length_upstream(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url))
    async with client.put("/x", data=b"y" * (100 * 1024)) as response:
        seen = await json_of(response)
    assert seen["headers"]["content-length"] == str(100 * 1024)
    assert "transfer-encoding" not in seen["headers"]
    assert len(seen["body"]) == 100 * 1024


async def chunks(count: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * size


async def test_chunked_body_over_the_limit_is_413_problem(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, route={"max_body": "100KiB"}))
    async with client.post("/upload", data=chunks(8, 32 * 1024)) as response:
        body = await expect_problem(response, 413)
    assert body["type"] == "urn:spork:problem:body-too-large"


async def test_chunked_body_under_the_limit_is_streamed(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, route={"max_body": "100KiB"}))
    async with client.post("/upload", data=chunks(3, 32 * 1024)) as response:
        seen = await json_of(response)
    assert seen["size"] == 96 * 1024
    assert seen["chunked"] is True


async def test_large_chunked_upload_passes_through_intact(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, server={"max_body": "64MiB"}))
    payload = pattern_bytes(20 * MiB + 123)

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 256 * 1024):
            yield payload[start : start + 256 * 1024]

    async with client.post("/upload", data=body()) as response:
        assert response.status == 200
        seen = await json_of(response)
    assert seen == {
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
        "chunked": True,
    }


@pytest.mark.parametrize("length", ["0", "1"], ids=["chunked", "content-length"])
async def test_large_download_passes_through_intact(
    gateway: Gateway, upstream: Upstream, length: str
) -> None:
    client = await gateway(single_service(upstream.url))
    size = 20 * MiB + 7
    digest = hashlib.sha256()
    received = 0
    async with client.get(f"/bytes?size={size}&length={length}") as response:
        assert response.status == 200
        if length == "1":
            assert response.content_length == size
        async for chunk in response.content.iter_chunked(256 * 1024):
            digest.update(chunk)
            received += len(chunk)
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(pattern_bytes(size)).hexdigest()


async def test_encoded_slashes_are_refused_by_default(gateway: Gateway, upstream: Upstream) -> None:
    client = await gateway(single_service(upstream.url, route={"path": "/public"}))
    async with client.get(URL("/public/a%2Fb", encoded=True)) as response:
        body = await expect_problem(response, 400)
    assert body["type"] == "urn:spork:problem:ambiguous-path"
    assert "%2F" in body["detail"]
    assert upstream.requests == []


@pytest.mark.observes("server.encoded_slashes")
async def test_encoded_slashes_kept_by_the_setting_stay_encoded(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(
        single_service(upstream.url, route={"path": "/public"}, server={"encoded_slashes": "keep"})
    )
    seen = await echo(client, "/public/a%2fb%2F.well-known%5Cc/%61")
    assert seen["raw_path"] == "/public/a%2Fb%2F.well-known%5Cc/a"
    # Dots beside a kept separator are still refused: a server that decodes first resolves them.
    async with client.get(URL("/public/x/..%2Fadmin", encoded=True)) as response:
        body = await expect_problem(response, 400)
    assert body["type"] == "urn:spork:problem:ambiguous-path"


@pytest.mark.observes("server.merge_slashes")
async def test_runs_of_slashes_are_merged_unless_the_setting_is_off(
    gateway: Gateway, upstream: Upstream
) -> None:
    merged = await gateway(single_service(upstream.url, route={"path": "/public"}))
    assert (await echo(merged, "/public//a///b?q=1"))["raw_path"] == "/public/a/b?q=1"
    kept = await gateway(
        single_service(upstream.url, route={"path": "/public"}, server={"merge_slashes": False})
    )
    assert (await echo(kept, "/public//a///b?q=1"))["raw_path"] == "/public//a///b?q=1"


@pytest.mark.parametrize(
    "path",
    [
        "/public/a%2F..%2F..%2Fadmin",
        "/public/..;/admin",
        "/public/x/..;x",
        "/public/%2e%2e%5cadmin",
    ],
)
async def test_dots_that_servers_read_differently_are_a_400_problem(
    gateway: Gateway, upstream: Upstream, path: str
) -> None:
    client = await gateway(single_service(upstream.url, route={"path": "/public"}))
    async with client.get(URL(path, encoded=True)) as response:
        body = await expect_problem(response, 400)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert body["type"] == "urn:spork:problem:ambiguous-path"
    assert upstream.requests == []


async def raw_request(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(payload)
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize("value", [b"\xffb\xe9", "José ü".encode()], ids=["not-utf8", "utf8"])
async def test_header_bytes_reach_the_upstream_exactly_as_sent(
    gateway: Gateway, upstream: Upstream, value: bytes
) -> None:
    client = await gateway(single_service(upstream.url))
    answer = await raw_request(
        client.port,
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: " + value + b"\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    # The upstream (aiohttp too) decodes header bytes as UTF-8 with surrogateescape.
    assert upstream.requests[-1].headers["X-A"].encode("utf-8", "surrogateescape") == value


async def test_a_header_that_is_not_utf8_on_a_streamed_request_is_a_400_problem(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url))
    answer = await raw_request(
        client.port,
        b"POST /x HTTP/1.1\r\nHost: h\r\nX-A: \xff\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"application/problem+json" in head
    assert b"bad-header" in body and b"X-A" in body
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"CONNECT upstream.test:443 HTTP/1.1", 404),
        (b"OPTIONS * HTTP/1.1", 404),
        (b"GET http://upstream.test HTTP/1.1", 404),
        (b"GET /x HTTP/1.1\r\nExpect: nonsense", 417),
    ],
    ids=["connect", "asterisk", "absolute-without-path", "unknown-expect"],
)
async def test_targets_the_router_cannot_place_get_a_problem_with_id_and_security_headers(
    gateway: Gateway, upstream: Upstream, head: bytes, status: int
) -> None:
    client = await gateway(single_service(upstream.url))
    answer = await raw_request(client.port, head + b"\r\nHost: h\r\nConnection: close\r\n\r\n")
    top, _, body = answer.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} "), answer[:300]
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    assert headers["content-type"] == "application/problem+json"
    assert headers["x-content-type-options"] == "nosniff"
    problem = orjson.loads(body)
    assert problem["status"] == status
    assert problem["request_id"] == headers["x-request-id"]
    assert upstream.requests == []
    # Counted like any request no route takes.
    method = head.split(b" ", 1)[0].decode()
    counted = client.app[METRICS].counters["requests"]
    assert counted == {(UNMATCHED, method, str(status)): 1}


@pytest.mark.parametrize("escape", ["%0A", "%0d", "%00", "%7F", "%1b"])
async def test_a_path_with_an_encoded_control_character_is_a_400_problem(
    gateway: Gateway, upstream: Upstream, escape: str
) -> None:
    client = await gateway(single_service(upstream.url, route={"path": "/public"}))
    async with client.get(URL(f"/public/a{escape}b", encoded=True)) as response:
        body = await expect_problem(response, 400)
    assert body["type"] == "urn:spork:problem:bad-path"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        ("/public/a/../b", "/public/b"),
        ("/public/./a/%2e%2E/b?next=/../x", "/public/b?next=/../x"),
        ("/public/a/b/..", "/public/a/"),
    ],
)
async def test_dot_segments_are_resolved_before_routing_and_forwarding(
    gateway: Gateway, upstream: Upstream, sent: str, forwarded: str
) -> None:
    client = await gateway(single_service(upstream.url, route={"path": "/public"}))
    # Raw bytes: a client library may resolve the dot segments itself before sending.
    answer = await raw_request(
        client.port, f"GET {sent} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()
    )
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200"), answer[:300]
    # The answer still carries the edge headers, set on the request aiohttp holds.
    assert b"\r\nx-content-type-options: nosniff" in head
    assert [r.raw_path for r in upstream.requests] == [forwarded]


async def test_no_target_form_reaches_a_guarded_route_through_an_open_one(
    gateway: Gateway, upstream: Upstream
) -> None:
    data = {
        "auth": {"secret": "s" * 32},
        "services": [{"name": "svc", "endpoints": [upstream.url]}],
        "routes": [
            {"path": "/open", "service": "svc"},
            {"path": "/private", "service": "svc", "auth": "required"},
        ],
    }
    client = await gateway(data)
    sneaky_targets = (
        "/open/../private/x",
        "/open/%2e%2e/private/x",
        "/open/.%2E/private/x",
        "/open/..//private/x",
        "http://upstream.test/private/x",
        "http://upstream.test/open/../private/x",
    )
    for sneaky in sneaky_targets:
        answer = await raw_request(
            client.port,
            f"GET {sneaky} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode(),
        )
        assert answer.startswith(b"HTTP/1.1 401"), (sneaky, answer[:300])
    assert upstream.requests == []


async def test_a_limit_on_a_sub_prefix_counts_every_spelling_of_it(
    gateway: Gateway, upstream: Upstream
) -> None:
    data = {
        "services": [{"name": "svc", "endpoints": [upstream.url]}],
        "routes": [
            {"path": "/svc", "service": "svc"},
            {"path": "/svc/limited", "service": "svc", "rate_limit": {"requests": 1, "per": "1m"}},
        ],
    }
    client = await gateway(data)
    spellings = (
        "/svc/limited/x",
        "/svc/%6Cimited/x",
        "/svc/%6cimited/x",
        "/svc/./limited/x",
        "/svc//limited/x",
        "/svc/open/../limited/x",
        "/svc/open/%2E%2E/limited/x",
        "http://upstream.test/svc/limited/x",
    )
    statuses = []
    for spelling in spellings:
        answer = await raw_request(
            client.port,
            f"GET {spelling} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode(),
        )
        statuses.append(answer.split(b" ", 2)[1])
    expected = [b"200"] + [b"429"] * (len(spellings) - 1)
    assert statuses == expected, list(zip(spellings, statuses, strict=True))
    assert [r.raw_path for r in upstream.requests] == ["/svc/limited/x"]


# --- upstream answers and gateway errors -------------------------------------------------------


async def test_upstream_error_statuses_pass_through_unchanged(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, retries={"attempts": 0}))
    for status in (400, 404, 500, 503):
        async with client.get(f"/status/{status}") as response:
            assert response.status == status
            assert response.content_type == "application/json"
            assert (await json_of(response))["upstream"] == "upstream"


async def test_head_and_no_content_responses_have_no_body(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url))
    async with client.head("/x") as response:
        assert response.status == 200
        assert response.headers["X-Upstream"] == "upstream"
        assert await response.read() == b""
    async with client.get("/status/204") as response:
        assert response.status == 204
        assert await response.read() == b""


@asynccontextmanager
async def raw_upstream(reply: bytes) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server that reads a request head, writes `reply` and hangs up."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{LOOPBACK}:{port}", connections
    finally:
        server.close()
        await server.wait_closed()


async def test_invalid_upstream_response_is_502_problem(gateway: Gateway) -> None:
    async with raw_upstream(b"this is not HTTP\r\n\r\n") as (url, _):
        client = await gateway(single_service(url, retries={"attempts": 0}))
        async with client.get("/x") as response:
            body = await expect_problem(response, 502)
    assert body["type"] == "urn:spork:problem:upstream-error"


async def test_upstream_hanging_up_is_tried_exactly_attempts_times_then_502_problem(
    gateway: Gateway,
) -> None:
    async with raw_upstream(b"") as (url, connections):
        client = await gateway(
            single_service(url, retries={"attempts": 2, "backoff": "1ms", "max_backoff": "2ms"})
        )
        async with client.get("/x") as response:
            body = await expect_problem(response, 502)
    assert body["type"] == "urn:spork:problem:upstream-unreachable"
    assert len(connections) == 3  # the first try and two retries


async def test_upstream_hanging_up_on_post_is_502_problem_after_one_try(gateway: Gateway) -> None:
    async with raw_upstream(b"") as (url, connections):
        client = await gateway(single_service(url, retries={"attempts": 2}))
        async with client.post("/x", data=b"{}") as response:
            body = await expect_problem(response, 502)
    assert body["type"] == "urn:spork:problem:upstream-unreachable"
    assert len(connections) == 1


@pytest.mark.parametrize(
    ("method", "path", "data", "status"),
    [
        ("GET", "/nowhere", None, 404),
        ("DELETE", "/get-only/x", None, 405),
        ("POST", "/small", b"x" * 2048, 413),
        ("GET", "/dead", None, 502),
        ("GET", "/slow?ms=2000", None, 504),
    ],
)
async def test_every_gateway_error_is_problem_json_without_internals(
    gateway: Gateway,
    upstream: Upstream,
    method: str,
    path: str,
    data: bytes | None,
    status: int,
) -> None:
    dead = f"http://{LOOPBACK}:{free_port()}"
    client = await gateway(
        {
            "services": [
                {"name": "live", "endpoints": [upstream.url], "timeout": "200ms"},
                {"name": "dead", "endpoints": [dead], "retries": {"attempts": 0}},
            ],
            "routes": [
                {"path": "/get-only", "service": "live", "methods": ["GET"]},
                {"path": "/small", "service": "live", "max_body": "1KiB"},
                {"path": "/dead", "service": "dead"},
                {"path": "/slow", "service": "live"},
            ],
        }
    )
    async with client.request(method, path, data=data, headers={"X-Request-ID": "e-1"}) as r:
        raw = await r.text()
        body = await expect_problem(r, status)
    assert body["request_id"] == "e-1"
    assert set(body) == {"type", "title", "status", "detail", "request_id"}
    # No endpoint address, and no exception text, ever reaches the client.
    for secret in (str(upstream.port), dead.rsplit(":", 1)[1], "Error", "aiohttp"):
        assert secret not in raw


async def test_repeated_response_headers_are_all_relayed(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url))
    cookies = [
        ("respond-header", "Set-Cookie:a=1; Path=/"),
        ("respond-header", "Set-Cookie:b=2; Path=/"),
    ]
    async with client.get("/cookies", params=cookies) as response:
        assert response.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


def gzip_app() -> web.Application:
    """Sends a gzip body as it is: what the test checks is that no layer decodes it."""

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(b"compressed upstream body"),
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
        )

    app = web.Application()
    app.router.add_get("/gzip", gzipped)
    return app


async def test_compressed_response_is_relayed_without_decoding(
    gateway: Gateway, stub: StubFactory
) -> None:
    server = await stub(gzip_app(), "gzip")
    client = await gateway(single_service(server.url))
    async with client.get("/gzip", auto_decompress=False) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await response.read()) == b"compressed upstream body"


def raw_body_app(seen: list[tuple[CIMultiDictProxy[str], bytes]]) -> web.Application:
    """Records each request's headers and body bytes exactly as they arrived."""

    async def record(request: web.Request) -> web.Response:
        seen.append((request.headers, await request.read()))
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=1 << 24, handler_args={"auto_decompress": False})
    app.router.add_route("*", "/{tail:.*}", record)
    return app


@pytest.mark.parametrize("size", [100, 200_000])  # read whole, and streamed
async def test_a_compressed_request_body_reaches_the_upstream_as_sent(
    gateway: Gateway, stub: StubFactory, size: int
) -> None:
    """Opaque bytes, as nginx and Envoy pass them: the coding, the length and every byte."""
    seen: list[tuple[CIMultiDictProxy[str], bytes]] = []
    server = await stub(raw_body_app(seen), "raw")
    client = await gateway(single_service(server.url, route={"path": "/api"}))
    sent = gzip.compress(os.urandom(size))  # incompressible: the large one stays over 64 KiB
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"}
    async with client.post("/api/upload", data=sent, headers=headers) as answer:
        assert answer.status == 200
    [(received, body)] = seen
    assert body == sent
    assert received["Content-Encoding"] == "gzip"


async def test_a_body_no_decoder_could_read_is_forwarded_unread(
    gateway: Gateway, stub: StubFactory
) -> None:
    """The gateway does not decode what it forwards: what the body holds is the service's
    business (no 400, no 500, nothing inflated on the way)."""
    seen: list[tuple[CIMultiDictProxy[str], bytes]] = []
    server = await stub(raw_body_app(seen), "raw")
    client = await gateway(single_service(server.url, route={"path": "/api"}))
    garbage = b"\x1f\x8b" + os.urandom(300_000)  # a gzip magic, then nothing gzip can read
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with client.put("/api/users/1", data=garbage, headers=headers) as answer:
        assert answer.status == 200
    assert [body for _, body in seen] == [garbage]
