"""Security headers through the gateway: presets and overrides, a preset beside the upstream's
value and an explicit one over it, every kind of answer (proxied, streamed, 404, 502,
denied), HSTS only over HTTPS."""

from __future__ import annotations

import ssl

import pytest

from spork_cli.config.model import GatewayConfig
from tests.edge.conftest import Backend, Gateway, edge_config, problem
from tests.support import free_port

DEFAULT = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
NAMES = (
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
    "Content-Security-Policy",
    "Permissions-Policy",
    "Strict-Transport-Security",
)


def security(headers: object) -> dict[str, str]:
    """The security headers of an answer (each must appear once)."""
    found: dict[str, str] = {}
    for name in NAMES:
        values = headers.getall(name, [])  # type: ignore[attr-defined]
        assert len(values) <= 1, (name, values)
        if values:
            found[name] = values[0]
    return found


async def test_default_preset_on_a_proxied_answer(gateway: Gateway, backend: Backend) -> None:
    client = await gateway(edge_config(backend.url))
    async with client.get("/x") as response:
        assert response.status == 200
        assert security(response.headers) == DEFAULT
        # The backend (aiohttp) names itself with versions; the gateway never does.
        assert response.headers.getall("Server") == ["spork"]
    assert backend.calls == 1


async def test_streamed_answer_gets_the_headers_too(gateway: Gateway, backend: Backend) -> None:
    client = await gateway(edge_config(backend.url))
    async with client.get("/big/x?size=600000") as response:
        body = await response.read()
        assert response.headers.get("Transfer-Encoding") == "chunked"  # streamed, not buffered
        assert security(response.headers) == DEFAULT
        assert response.headers.getall("Server") == ["spork"]
    assert len(body) == 600000


async def test_404_problem_gets_the_headers(gateway: Gateway, backend: Backend) -> None:
    client = await gateway(edge_config(backend.url, {"path": "/api"}))
    async with client.get("/nowhere") as response:
        body = await problem(response, 404)
        assert security(response.headers) == DEFAULT
    assert body["type"] == "urn:spork:problem:no-route"


async def test_405_problem_gets_the_headers(gateway: Gateway, backend: Backend) -> None:
    client = await gateway(edge_config(backend.url, {"path": "/api", "methods": ["GET"]}))
    async with client.delete("/api") as response:
        await problem(response, 405)
        assert security(response.headers) == DEFAULT


@pytest.mark.observes("routes.security_headers.preset")
async def test_502_problem_gets_the_route_headers(gateway: Gateway) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = edge_config(dead, {"path": "/", "security_headers": {"preset": "strict"}})
    client = await gateway(config)
    async with client.get("/x") as response:
        body = await problem(response, 502)
        assert security(response.headers)["Content-Security-Policy"] == STRICT_CSP
        assert security(response.headers)["X-Frame-Options"] == "DENY"
    assert body["type"] == "urn:spork:problem:upstream-unreachable"


async def test_a_preset_header_never_replaces_the_upstream_one(
    gateway: Gateway, backend: Backend
) -> None:
    client = await gateway(edge_config(backend.url))
    query = "?h=X-Frame-Options:DENY&h=Referrer-Policy:no-referrer&h=X-Own:kept"
    async with client.get("/x" + query) as response:
        assert response.status == 200
        found = security(response.headers)
        assert response.headers["X-Own"] == "kept"
    # The upstream's stricter values stay; the preset fills in only what it did not send.
    assert found == {**DEFAULT, "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


async def test_an_explicit_header_replaces_the_upstream_one(
    gateway: Gateway, backend: Backend
) -> None:
    section = {
        "frame_options": "SAMEORIGIN",
        "extra": {"Cross-Origin-Opener-Policy": "same-origin"},
    }
    client = await gateway(edge_config(backend.url, security_headers=section))
    query = (
        "?h=X-Frame-Options:ALLOWALL&h=Cross-Origin-Opener-Policy:unsafe-none"
        "&h=Referrer-Policy:unsafe-url"
    )
    async with client.get("/x" + query) as response:
        assert response.status == 200
        found = security(response.headers)
        assert response.headers.getall("Cross-Origin-Opener-Policy") == ["same-origin"]
    assert found == {**DEFAULT, "X-Frame-Options": "SAMEORIGIN", "Referrer-Policy": "unsafe-url"}


@pytest.mark.observes("security_headers.preset")
async def test_strict_preset(gateway: Gateway, backend: Backend) -> None:
    client = await gateway(edge_config(backend.url, security_headers={"preset": "strict"}))
    async with client.get("/x") as response:
        found = security(response.headers)
    assert found == {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": STRICT_CSP,
        "Permissions-Policy": (
            "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
            "microphone=(), payment=(), usb=()"
        ),
    }


@pytest.mark.observes("security_headers.preset", "security_headers.referrer_policy")
async def test_off_preset_sends_only_the_keys_set(gateway: Gateway, backend: Backend) -> None:
    config = edge_config(
        backend.url, security_headers={"preset": "off", "referrer_policy": "same-origin"}
    )
    client = await gateway(config)
    async with client.get("/x") as response:
        assert security(response.headers) == {"Referrer-Policy": "same-origin"}
        assert response.headers["Server"] == "spork"


@pytest.mark.observes(
    "security_headers.frame_options",
    "security_headers.content_security_policy",
    "security_headers.permissions_policy",
    "security_headers.referrer_policy",
    "security_headers.extra",
)
async def test_keys_and_extra_override_the_preset(gateway: Gateway, backend: Backend) -> None:
    section = {
        "preset": "default",
        "frame_options": "DENY",
        "content_security_policy": "default-src 'self'",
        "permissions_policy": "camera=()",
        "referrer_policy": "",  # dropped
        "extra": {
            "x-content-type-options": "nosniff",
            "Cross-Origin-Opener-Policy": "same-origin",
            "Strict-Transport-Security": "max-age=5",  # still only over HTTPS
        },
    }
    client = await gateway(edge_config(backend.url, security_headers=section))
    async with client.get("/x") as response:
        found = security(response.headers)
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert found == {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'self'",
        "Permissions-Policy": "camera=()",
    }


@pytest.mark.observes("routes.security_headers.preset")
async def test_route_table_replaces_the_global_one(gateway: Gateway, backend: Backend) -> None:
    config = edge_config(
        backend.url,
        {"path": "/plain", "security_headers": {"preset": "off"}},
        {"path": "/"},
        security_headers={"preset": "strict"},
    )
    client = await gateway(config)
    async with client.get("/plain/x") as response:
        assert security(response.headers) == {}
    async with client.get("/other") as response:
        assert security(response.headers)["X-Frame-Options"] == "DENY"
    async with client.get("/plain/x", headers={"X-Forwarded-Proto": "https"}) as response:
        assert security(response.headers) == {}


@pytest.mark.observes(
    "routes.security_headers.hsts_max_age",
    "routes.security_headers.content_security_policy",
    "routes.security_headers.frame_options",
    "routes.security_headers.referrer_policy",
    "routes.security_headers.permissions_policy",
    "routes.security_headers.extra",
)
async def test_a_routes_own_keys_set_its_headers(gateway: Gateway, backend: Backend) -> None:
    section = {
        "hsts_max_age": "1h",
        "content_security_policy": "default-src 'self'",
        "frame_options": "DENY",
        "referrer_policy": "no-referrer",
        "permissions_policy": "camera=()",
        "extra": {"Cross-Origin-Opener-Policy": "same-origin"},
    }
    config = edge_config(
        backend.url,
        {"path": "/api", "security_headers": section},
        {"path": "/"},
        server={"trusted_proxies": ["127.0.0.1/32"]},
    )
    client = await gateway(config)
    https = {"X-Forwarded-Proto": "https"}
    async with client.get("/api/x", headers=https) as response:
        assert response.status == 200
        assert security(response.headers) == {
            "X-Content-Type-Options": "nosniff",  # the default preset fills in the rest
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'self'",
            "Permissions-Policy": "camera=()",
            "Strict-Transport-Security": "max-age=3600",
        }
        assert response.headers.getall("Cross-Origin-Opener-Policy") == ["same-origin"]
    async with client.get("/other", headers=https) as response:
        assert security(response.headers) == {
            **DEFAULT,
            "Strict-Transport-Security": "max-age=31536000",
        }
        assert "Cross-Origin-Opener-Policy" not in response.headers


# --- HSTS ----------------------------------------------------------------------------------------


def hsts_config(backend_url: str, **server: object) -> GatewayConfig:
    return edge_config(backend_url, server=server, security_headers={"hsts_max_age": "1d"})


@pytest.mark.observes("security_headers.hsts_max_age")
async def test_hsts_over_tls_and_not_over_plain_http(
    gateway: Gateway, backend: Backend, tls_server_context: ssl.SSLContext
) -> None:
    secure = await gateway(hsts_config(backend.url), tls=tls_server_context)
    async with secure.get("/x", ssl=False) as response:
        assert response.status == 200
        assert security(response.headers)["Strict-Transport-Security"] == "max-age=86400"
    async with secure.get("/nowhere-at-all", ssl=False) as response:
        assert response.status == 200  # the route at / takes it
        assert "Strict-Transport-Security" in response.headers
    plain = await gateway(hsts_config(backend.url))
    async with plain.get("/x") as response:
        assert response.status == 200
        assert "Strict-Transport-Security" not in response.headers


async def test_strict_hsts_covers_subdomains(
    gateway: Gateway, backend: Backend, tls_server_context: ssl.SSLContext
) -> None:
    client = await gateway(
        edge_config(backend.url, security_headers={"preset": "strict"}), tls=tls_server_context
    )
    async with client.get("/x", ssl=False) as response:
        hsts = response.headers["Strict-Transport-Security"]
    assert hsts == "max-age=31536000; includeSubDomains"


async def test_hsts_on_a_404_over_tls(
    gateway: Gateway, backend: Backend, tls_server_context: ssl.SSLContext
) -> None:
    client = await gateway(edge_config(backend.url, {"path": "/api"}), tls=tls_server_context)
    async with client.get("/nowhere", ssl=False) as response:
        await problem(response, 404)
        assert response.headers["Strict-Transport-Security"] == "max-age=31536000"


@pytest.mark.parametrize(
    ("trusted", "proto", "sent"),
    [
        (["127.0.0.1/32"], "https", True),
        (["127.0.0.1/32"], "HTTPS", True),
        (["127.0.0.1/32"], "http", False),
        # A proxy that appends: only the value the trusted peer added counts.
        (["127.0.0.1/32"], "https, http", False),
        (["127.0.0.1/32"], "http, https", True),
        (["127.0.0.1/32"], None, False),
        (["10.0.0.0/8"], "https", False),  # the peer is not a trusted proxy
        ([], "https", False),
    ],
)
async def test_hsts_from_x_forwarded_proto_only_from_a_trusted_proxy(
    gateway: Gateway, backend: Backend, trusted: list[str], proto: str | None, sent: bool
) -> None:
    client = await gateway(hsts_config(backend.url, trusted_proxies=trusted))
    headers = {"X-Forwarded-Proto": proto} if proto is not None else {}
    async with client.get("/x", headers=headers) as response:
        assert response.status == 200
        assert ("Strict-Transport-Security" in response.headers) is sent


async def test_off_preset_sends_hsts_only_when_asked(
    gateway: Gateway, backend: Backend, tls_server_context: ssl.SSLContext
) -> None:
    quiet = await gateway(
        edge_config(backend.url, security_headers={"preset": "off"}), tls=tls_server_context
    )
    async with quiet.get("/x", ssl=False) as response:
        assert security(response.headers) == {}
    asked = await gateway(
        edge_config(backend.url, security_headers={"preset": "off", "hsts_max_age": "1h"}),
        tls=tls_server_context,
    )
    async with asked.get("/x", ssl=False) as response:
        assert security(response.headers) == {"Strict-Transport-Security": "max-age=3600"}
    whole = await gateway(
        edge_config(
            backend.url,
            security_headers={"preset": "off", "extra": {"Strict-Transport-Security": "max-age=5"}},
        ),
        tls=tls_server_context,
    )
    async with whole.get("/x", ssl=False) as response:
        assert security(response.headers) == {"Strict-Transport-Security": "max-age=5"}
