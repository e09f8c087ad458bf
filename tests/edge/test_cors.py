"""CORS through the gateway: preflights answered without the upstream, exact, wildcard and regex
origins, credentials, Vary, expose headers, route tables over the global one; a refused origin
never sees a CORS header, whatever the origin string."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.edge.conftest import Backend, Client, Gateway, cors_headers, edge_config, problem
from tests.support import free_port

APP = "http://localhost:3000"
EVIL = "http://evil.test"
PATTERN = r"https://[a-z0-9-]+\.example\.com"


def preflight(origin: str | None, method: str = "POST", **extra: str) -> dict[str, str]:
    headers = {"Access-Control-Request-Method": method, **extra}
    if origin is not None:
        headers["Origin"] = origin
    return headers


def vary(headers: Any) -> set[str]:
    return {t.strip().lower() for v in headers.getall("Vary", []) for t in v.split(",")}


@pytest.mark.observes("cors.allow_origins", "cors.allow_headers")
async def test_preflight_is_answered_at_the_gateway(gateway: Gateway, backend: Backend) -> None:
    cors = {"allow_origins": [APP], "max_age": "10m", "allow_headers": ["Content-Type", "X-Api"]}
    client = await gateway(edge_config(backend.url, cors=cors))
    async with client.options("/users", headers=preflight(APP)) as response:
        assert response.status == 204
        assert await response.read() == b""
        found = cors_headers(response.headers)
        assert "origin" in vary(response.headers)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert found == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET, HEAD, POST, PUT, PATCH, DELETE",
        "access-control-allow-headers": "Content-Type, X-Api",
        "access-control-max-age": "600",
    }
    assert backend.calls == 0


@pytest.mark.observes("cors.allow_methods", "cors.max_age")
async def test_preflight_lists_the_methods_and_max_age_set(
    gateway: Gateway, backend: Backend
) -> None:
    cors = {"allow_origins": [APP], "allow_methods": ["get", "PUT"], "max_age": "90s"}
    client = await gateway(edge_config(backend.url, cors=cors))
    async with client.options("/users", headers=preflight(APP, "PUT")) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Methods"] == "GET, PUT"
        assert response.headers["Access-Control-Max-Age"] == "90"
    assert backend.calls == 0


async def test_preflight_on_a_route_that_does_not_take_options(
    gateway: Gateway, backend: Backend
) -> None:
    route = {"path": "/users", "methods": ["GET", "POST"]}
    client = await gateway(edge_config(backend.url, route, cors={"allow_origins": [APP]}))
    async with client.options("/users", headers=preflight(APP, "POST")) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == APP
    # Without Access-Control-Request-Method it is an ordinary OPTIONS, which the route refuses.
    async with client.options("/users", headers={"Origin": APP}) as response:
        await problem(response, 405)
    assert backend.calls == 0


@pytest.mark.observes("routes.cors.allow_origins")
async def test_preflight_follows_the_route_of_the_method_asked_about(
    gateway: Gateway, backend: Backend
) -> None:
    config = edge_config(
        backend.url,
        {"path": "/api", "methods": ["GET"], "cors": {"allow_origins": ["http://reader.test"]}},
        {"path": "/api", "methods": ["PUT"], "cors": {"allow_origins": ["http://writer.test"]}},
    )
    client = await gateway(config)
    async with client.options("/api/1", headers=preflight("http://writer.test", "PUT")) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "http://writer.test"
    async with client.options("/api/1", headers=preflight("http://reader.test", "PUT")) as r:
        assert r.status == 204
        assert cors_headers(r.headers) == {}
    async with client.options("/api/1", headers=preflight("http://reader.test", "GET")) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "http://reader.test"
    assert backend.calls == 0


async def test_refused_origin_preflight_is_204_without_cors_headers(
    gateway: Gateway, backend: Backend
) -> None:
    client = await gateway(edge_config(backend.url, cors={"allow_origins": [APP]}))
    async with client.options("/users", headers=preflight(EVIL)) as response:
        assert response.status == 204
        assert cors_headers(response.headers) == {}
        assert "origin" in vary(response.headers)
    async with client.options("/users", headers=preflight(None)) as response:
        assert response.status == 204
        assert cors_headers(response.headers) == {}
    assert backend.calls == 0


async def test_refused_origin_gets_no_cors_headers_even_from_the_upstream(
    gateway: Gateway, backend: Backend
) -> None:
    client = await gateway(edge_config(backend.url, cors={"allow_origins": [APP]}))
    upstream_cors = (
        "?h=Access-Control-Allow-Origin:*&h=Access-Control-Allow-Credentials:true"
        "&h=Access-Control-Expose-Headers:X-Secret"
    )
    async with client.get("/x" + upstream_cors, headers={"Origin": EVIL}) as response:
        assert response.status == 200
        assert cors_headers(response.headers) == {}
        assert "origin" in vary(response.headers)
    async with client.get("/x" + upstream_cors, headers={"Origin": APP}) as response:
        assert cors_headers(response.headers) == {"access-control-allow-origin": APP}
    assert backend.calls == 2


@pytest.mark.observes("cors.allow_origins", "cors.expose_headers")
async def test_allowed_origin_on_an_actual_request(gateway: Gateway, backend: Backend) -> None:
    cors = {"allow_origins": [APP], "expose_headers": ["X-Request-ID", "X-Total"]}
    client = await gateway(edge_config(backend.url, cors=cors))
    async with client.post("/x?h=Vary:Accept-Encoding", headers={"Origin": APP}) as response:
        assert response.status == 200
        assert cors_headers(response.headers) == {
            "access-control-allow-origin": APP,
            "access-control-expose-headers": "X-Request-ID, X-Total",
        }
        # The upstream's Vary is kept, Origin is added to it.
        assert response.headers.getall("Vary") == ["Accept-Encoding, Origin"]
    assert backend.calls == 1


async def test_no_origin_gets_no_cors_headers_but_vary(gateway: Gateway, backend: Backend) -> None:
    client = await gateway(edge_config(backend.url, cors={"allow_origins": [APP]}))
    async with client.get("/x") as response:
        assert cors_headers(response.headers) == {}
        assert response.headers.getall("Vary") == ["Origin"]


async def test_streamed_answer_gets_cors_headers(gateway: Gateway, backend: Backend) -> None:
    client = await gateway(edge_config(backend.url, cors={"allow_origins": [APP]}))
    async with client.get("/big/x?size=500000", headers={"Origin": APP}) as response:
        assert len(await response.read()) == 500000
        assert response.headers.get("Transfer-Encoding") == "chunked"
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert "origin" in vary(response.headers)


async def test_gateway_errors_of_a_cors_route_carry_cors_headers(gateway: Gateway) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = await gateway(edge_config(dead, cors={"allow_origins": [APP]}))
    async with client.get("/x", headers={"Origin": APP}) as response:
        await problem(response, 502)
        # A browser script can read the error only with these.
        assert response.headers["Access-Control-Allow-Origin"] == APP


@pytest.mark.observes("cors.allow_origin_regex")
async def test_regex_origins_must_match_the_whole_origin(
    gateway: Gateway, backend: Backend
) -> None:
    client = await gateway(edge_config(backend.url, cors={"allow_origin_regex": [PATTERN]}))
    for origin, allowed in [
        ("https://app.example.com", True),
        ("https://a-1.example.com", True),
        ("https://app.example.com.evil.net", False),
        ("http://app.example.com", False),
        ("https://example.com", False),
        ("xhttps://app.example.com", False),
    ]:
        async with client.get("/x", headers={"Origin": origin}) as response:
            expected = {"access-control-allow-origin": origin} if allowed else {}
            assert cors_headers(response.headers) == expected, origin
        async with client.options("/x", headers=preflight(origin)) as response:
            assert (response.headers.get("Access-Control-Allow-Origin") == origin) is allowed
    assert backend.calls == 6


@pytest.mark.observes("cors.allow_credentials")
async def test_credentials_echo_the_origin(gateway: Gateway, backend: Backend) -> None:
    cors = {"allow_origins": [APP], "allow_credentials": True}
    client = await gateway(edge_config(backend.url, cors=cors))
    async with client.get("/x", headers={"Origin": APP}) as response:
        assert cors_headers(response.headers) == {
            "access-control-allow-origin": APP,
            "access-control-allow-credentials": "true",
        }
        assert "origin" in vary(response.headers)
    async with client.options("/x", headers=preflight(APP)) as response:
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
    async with client.get("/x", headers={"Origin": EVIL}) as response:
        assert cors_headers(response.headers) == {}


async def test_wildcard_with_credentials_echoes_never_star(
    gateway: Gateway, backend: Backend
) -> None:
    # `spork check` refuses this combination; a config built in code still must not send `*`.
    cors = {"allow_origins": ["*"], "allow_credentials": True}
    client = await gateway(edge_config(backend.url, cors=cors))
    for origin in (APP, EVIL):
        async with client.get("/x", headers={"Origin": origin}) as response:
            assert response.headers["Access-Control-Allow-Origin"] == origin
            assert response.headers["Access-Control-Allow-Credentials"] == "true"
            assert "origin" in vary(response.headers)
        async with client.options("/x", headers=preflight(origin)) as response:
            assert response.headers["Access-Control-Allow-Origin"] == origin


async def test_wildcard_without_credentials_is_star_without_vary(
    gateway: Gateway, backend: Backend
) -> None:
    client = await gateway(edge_config(backend.url, cors={"allow_origins": ["*"]}))
    async with client.get("/x", headers={"Origin": EVIL}) as response:
        assert cors_headers(response.headers) == {"access-control-allow-origin": "*"}
        assert "Vary" not in response.headers
    async with client.options("/x", headers=preflight(EVIL)) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "Vary" not in response.headers


async def test_any_header_echoes_what_the_preflight_asks_for(
    gateway: Gateway, backend: Backend
) -> None:
    cors = {"allow_origins": [APP], "allow_headers": ["*"]}
    client = await gateway(edge_config(backend.url, cors=cors))
    asked = "authorization, x-trace-id"
    headers = preflight(APP, "PUT", **{"Access-Control-Request-Headers": asked})
    async with client.options("/x", headers=headers) as response:
        assert response.headers["Access-Control-Allow-Headers"] == asked
        assert vary(response.headers) == {"origin", "access-control-request-headers"}


@pytest.mark.observes("routes.cors.allow_origins")
async def test_route_cors_replaces_the_global_one(gateway: Gateway, backend: Backend) -> None:
    config = edge_config(
        backend.url,
        {"path": "/partner", "cors": {"allow_origins": ["https://partner.test"]}},
        {"path": "/"},
        cors={"allow_origins": [APP]},
    )
    client = await gateway(config)
    async with client.get("/partner/x", headers={"Origin": APP}) as response:
        assert cors_headers(response.headers) == {}
    async with client.get("/partner/x", headers={"Origin": "https://partner.test"}) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "https://partner.test"
    async with client.get("/other", headers={"Origin": APP}) as response:
        assert response.headers["Access-Control-Allow-Origin"] == APP


@pytest.mark.observes(
    "routes.cors.allow_origin_regex",
    "routes.cors.allow_methods",
    "routes.cors.allow_headers",
    "routes.cors.expose_headers",
    "routes.cors.allow_credentials",
    "routes.cors.max_age",
)
async def test_a_routes_own_cors_table_answers_for_that_route(
    gateway: Gateway, backend: Backend
) -> None:
    cors = {
        "allow_origin_regex": [PATTERN],
        "allow_methods": ["GET", "PATCH"],
        "allow_headers": ["X-Api"],
        "expose_headers": ["X-Total"],
        "allow_credentials": True,
        "max_age": "2m",
    }
    client = await gateway(
        edge_config(backend.url, {"path": "/partner", "cors": cors}, {"path": "/"})
    )
    origin = "https://app.example.com"
    async with client.options("/partner/x", headers=preflight(origin, "PATCH")) as response:
        assert response.status == 204
        assert cors_headers(response.headers) == {
            "access-control-allow-origin": origin,
            "access-control-allow-methods": "GET, PATCH",
            "access-control-allow-headers": "X-Api",
            "access-control-allow-credentials": "true",
            "access-control-max-age": "120",
        }
    async with client.get("/partner/x", headers={"Origin": origin}) as response:
        assert response.status == 200
        assert cors_headers(response.headers) == {
            "access-control-allow-origin": origin,
            "access-control-allow-credentials": "true",
            "access-control-expose-headers": "X-Total",
        }
    async with client.get("/partner/x", headers={"Origin": "https://example.com"}) as response:
        assert cors_headers(response.headers) == {}  # the regex does not match
    async with client.get("/other", headers={"Origin": origin}) as response:
        assert cors_headers(response.headers) == {}  # no CORS on the route without the table
    assert backend.calls == 3


async def test_without_cors_preflights_go_upstream_untouched(
    gateway: Gateway, backend: Backend
) -> None:
    client = await gateway(edge_config(backend.url))
    query = "?h=Access-Control-Allow-Origin:http://upstream.test"
    async with client.options("/x" + query, headers=preflight(APP)) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == "http://upstream.test"
        assert "Vary" not in response.headers
    assert [seen.method for seen in backend.seen] == ["OPTIONS"]


# --- generated origins ---------------------------------------------------------------------------

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    # One gateway serves every example: it is what is being fuzzed, and cheap to reuse.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
HEADER_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)
NEAR_MISSES = st.sampled_from(
    [
        APP,
        APP + "/",
        APP + "0",
        "HTTP://localhost:3000",
        "http://localhost:3000.evil.test",
        "http://localhost",
        "https://app.example.com",
        "https://app.example.com.evil.net",
        "https://APP.example.com",
        "null",
        "*",
    ]
)
ORIGINS = (
    NEAR_MISSES
    | HEADER_TEXT
    | st.builds(
        lambda scheme, host: f"{scheme}://{host}",
        st.sampled_from(["http", "https"]),
        st.from_regex(r"[a-z0-9.-]{1,20}(\.example\.com)?(:[0-9]{1,5})?", fullmatch=True),
    )
)


def allowed(origin: str) -> bool:
    return origin == APP or re.fullmatch(PATTERN, origin) is not None


@pytest.fixture
async def fuzz_client(gateway: Gateway, backend: Backend) -> Client:
    cors = {"allow_origins": [APP], "allow_origin_regex": [PATTERN], "allow_credentials": True}
    return await gateway(edge_config(backend.url, cors=cors))


@FUZZ
@given(origin=ORIGINS, method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
async def test_generated_origins_get_cors_headers_only_when_allowed(
    fuzz_client: Client, origin: str, method: str
) -> None:
    client = fuzz_client
    async with client.request(method, "/x", headers={"Origin": origin}) as response:
        assert response.status == 200
        expected = (
            {"access-control-allow-origin": origin, "access-control-allow-credentials": "true"}
            if allowed(origin)
            else {}
        )
        assert cors_headers(response.headers) == expected
    async with client.options("/x", headers=preflight(origin, method)) as response:
        assert response.status == 204
        assert (response.headers.get("Access-Control-Allow-Origin") == origin) is allowed(origin)
        if not allowed(origin):
            assert cors_headers(response.headers) == {}


async def test_a_cached_answer_carries_the_cors_headers_of_whoever_asks(
    gateway: Gateway, backend: Backend
) -> None:
    route = {"path": "/", "cache": {"ttl": "1m", "default_ttl": "1m"}}
    client = await gateway(edge_config(backend.url, route, cors={"allow_origins": [APP]}))
    async with client.get("/cached", headers={"Origin": APP}) as response:
        assert response.headers["X-Cache"] == "MISS"
        assert response.headers["Access-Control-Allow-Origin"] == APP
    async with client.get("/cached", headers={"Origin": EVIL}) as response:
        assert response.headers["X-Cache"] == "HIT"
        assert cors_headers(response.headers) == {}
    async with client.get("/cached", headers={"Origin": APP}) as response:
        assert response.headers["X-Cache"] == "HIT"
        assert response.headers["Access-Control-Allow-Origin"] == APP
    assert backend.calls == 1
