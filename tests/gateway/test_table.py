"""Route table: segment-boundary prefixes, longest match, method filters, 405, strip_prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from spork_cli.gateway.app import compile_table
from spork_cli.gateway.keys import METRICS
from spork_cli.gateway.table import RouteTable, strip
from tests.gateway.conftest import Gateway, config_of, expect_problem, json_of, single_service
from tests.support import Upstream, UpstreamFactory

TableFactory = Callable[..., Awaitable[RouteTable]]
ENDPOINT = "http://127.0.0.1:9"  # never contacted: these tests only match


@pytest.fixture
async def table() -> AsyncIterator[TableFactory]:
    """`await table(route, route, ...)`: a compiled table of those routes (service `svc`)."""
    built: list[RouteTable] = []

    async def make(*routes: dict[str, Any]) -> RouteTable:
        config = config_of(
            {
                "services": [{"name": "svc", "endpoints": [ENDPOINT]}],
                "routes": [{"service": "svc", **route} for route in routes],
            }
        )
        compiled = await compile_table(config)
        built.append(compiled)
        return compiled

    try:
        yield make
    finally:
        for compiled in built:
            for pool in compiled.pools.values():
                await pool.close(0)


def matched(table: RouteTable, method: str, raw_path: str) -> str | None:
    route = table.match(method, raw_path).route
    return route.route_id if route is not None else None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api", "api"),
        ("/api/", "api"),
        ("/api/users", "api"),
        ("/api/users/1", "api"),
        ("/apix", None),
        ("/apix/users", None),
        ("/ap", None),
        ("/api%2Fusers", None),
    ],
)
async def test_prefix_matches_only_on_segment_boundaries(
    table: TableFactory, path: str, expected: str | None
) -> None:
    routes = await table({"path": "/api", "name": "api"})
    assert matched(routes, "GET", path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/api/", "slash"), ("/api/x", "slash"), ("/api", None), ("/apix", None)],
)
async def test_trailing_slash_prefix_does_not_match_the_bare_path(
    table: TableFactory, path: str, expected: str | None
) -> None:
    routes = await table({"path": "/api/", "name": "slash"})
    assert matched(routes, "GET", path) == expected


async def test_longest_prefix_wins_whatever_the_file_order(table: TableFactory) -> None:
    routes = await table(
        {"path": "/api", "name": "short"},
        {"path": "/api/users", "name": "long"},
        {"path": "/api/users/admin", "name": "longest"},
    )
    assert matched(routes, "GET", "/api/users/1") == "long"
    assert matched(routes, "GET", "/api/users") == "long"
    assert matched(routes, "GET", "/api/users/admin/x") == "longest"
    assert matched(routes, "GET", "/api/usersx") == "short"
    assert matched(routes, "GET", "/api/orders") == "short"


async def test_method_filter_falls_back_to_a_shorter_prefix(table: TableFactory) -> None:
    routes = await table(
        {"path": "/api", "name": "any"},
        {"path": "/api/users", "name": "writes", "methods": ["POST"]},
    )
    assert matched(routes, "POST", "/api/users/1") == "writes"
    assert matched(routes, "GET", "/api/users/1") == "any"


async def test_same_prefix_first_in_file_wins(table: TableFactory) -> None:
    routes = await table(
        {"path": "/api", "name": "first"},
        {"path": "/api", "name": "second"},
    )
    assert matched(routes, "GET", "/api/x") == "first"


async def test_same_prefix_method_filter_picks_the_route_allowing_the_method(
    table: TableFactory,
) -> None:
    routes = await table(
        {"path": "/api", "name": "reads", "methods": ["GET"]},
        {"path": "/api", "name": "writes", "methods": ["POST", "PUT"]},
    )
    assert matched(routes, "GET", "/api/x") == "reads"
    assert matched(routes, "PUT", "/api/x") == "writes"


async def test_405_allowed_set_collects_every_matching_prefix_and_adds_head(
    table: TableFactory,
) -> None:
    routes = await table(
        {"path": "/api", "name": "reads", "methods": ["GET"]},
        {"path": "/api/users", "name": "writes", "methods": ["POST"]},
    )
    result = routes.match("DELETE", "/api/users/1")
    assert result.route is None
    assert result.allowed == {"GET", "HEAD", "POST"}


async def test_head_is_not_added_to_allowed_without_get(table: TableFactory) -> None:
    routes = await table({"path": "/api", "methods": ["POST"]})
    assert routes.match("GET", "/api").allowed == {"POST"}


async def test_unmatched_path_has_no_allowed_set(table: TableFactory) -> None:
    routes = await table({"path": "/api", "methods": ["GET"]})
    result = routes.match("GET", "/other")
    assert result.route is None
    assert result.allowed == frozenset()


async def test_query_is_ignored_for_matching(table: TableFactory) -> None:
    routes = await table(
        {"path": "/api", "name": "api"},
        {"path": "/api/users", "name": "users"},
    )
    assert matched(routes, "GET", "/api?next=/api/users") == "api"
    assert matched(routes, "GET", "/api/users?x=1") == "users"
    assert matched(routes, "GET", "/apix?/api") is None


async def test_root_prefix_is_a_catch_all(table: TableFactory) -> None:
    routes = await table(
        {"path": "/", "name": "root"},
        {"path": "/api", "name": "api"},
    )
    assert matched(routes, "GET", "/") == "root"
    assert matched(routes, "GET", "/anything/at/all?q=1") == "root"
    assert matched(routes, "GET", "/apix") == "root"
    assert matched(routes, "GET", "/api/x") == "api"


@pytest.mark.parametrize(
    ("prefix", "raw_path", "upstream_path"),
    [
        ("/api", "/api/users/1", "/users/1"),
        ("/api", "/api", "/"),
        ("/api", "/api/", "/"),
        ("/api", "/api?x=1&y=%20", "/?x=1&y=%20"),
        ("/api", "/api/a%2Fb/c?q=%2F", "/a%2Fb/c?q=%2F"),
        ("/api/", "/api/users?x=1", "/users?x=1"),
        ("/", "/users/1?x=1", "/users/1?x=1"),
    ],
)
async def test_strip_prefix_keeps_encoding_and_query(
    table: TableFactory, prefix: str, raw_path: str, upstream_path: str
) -> None:
    routes = await table({"path": prefix, "strip_prefix": True})
    route = routes.match("GET", raw_path).route
    assert route is not None
    assert strip(route, raw_path) == upstream_path


async def test_without_strip_prefix_the_raw_path_is_sent_unchanged(table: TableFactory) -> None:
    routes = await table({"path": "/api"})
    route = routes.match("GET", "/api/a%2Fb?q=1").route
    assert route is not None
    assert strip(route, "/api/a%2Fb?q=1") == "/api/a%2Fb?q=1"


# --- through the app ---------------------------------------------------------------------------


@pytest.mark.observes("routes.path")
async def test_unmatched_path_is_404_problem(gateway: Gateway, upstream: Upstream) -> None:
    client = await gateway(single_service(upstream.url, route={"path": "/api"}))
    async with client.get("/apix") as response:
        body = await expect_problem(response, 404)
    assert body["type"] == "urn:spork:problem:no-route"
    assert upstream.requests == []


@pytest.mark.observes("routes.methods")
async def test_disallowed_method_is_405_problem_with_allow_including_head(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, route={"path": "/api", "methods": ["GET"]}))
    async with client.post("/api/x", data=b"{}") as response:
        body = await expect_problem(response, 405)
        assert response.headers["Allow"] == "GET, HEAD"
    assert body["type"] == "urn:spork:problem:method-not-allowed"
    assert upstream.requests == []


async def test_head_on_a_get_only_route_is_forwarded(gateway: Gateway, upstream: Upstream) -> None:
    client = await gateway(single_service(upstream.url, route={"path": "/api", "methods": ["GET"]}))
    async with client.head("/api/x") as response:
        assert response.status == 200
        assert response.headers["X-Upstream"] == "upstream"


async def test_matched_route_forwards_and_answers_with_server_header(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(single_service(upstream.url, route={"path": "/api"}))
    async with client.get("/api/x") as response:
        assert response.status == 200
        assert response.headers["Server"] == "spork"
        assert (await json_of(response))["raw_path"] == "/api/x"


@pytest.mark.observes("routes.service", "routes.path")
async def test_each_route_forwards_to_its_own_service(
    gateway: Gateway, upstream_factory: UpstreamFactory
) -> None:
    users, orders = await upstream_factory.many("users", "orders")
    client = await gateway(
        {
            "services": [
                {"name": "users-svc", "endpoints": [users.url]},
                {"name": "orders-svc", "endpoints": [orders.url]},
            ],
            "routes": [
                {"path": "/users", "service": "users-svc"},
                {"path": "/orders", "service": "orders-svc"},
            ],
        }
    )
    for path, name in [("/users/1", "users"), ("/orders/7", "orders"), ("/users", "users")]:
        async with client.get(path) as response:
            assert response.status == 200
            assert response.headers["X-Upstream"] == name
    assert [r.raw_path for r in users.requests] == ["/users/1", "/users"]
    assert [r.raw_path for r in orders.requests] == ["/orders/7"]


@pytest.mark.observes("routes.name")
async def test_requests_are_counted_under_the_route_name_or_its_path(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(
        {
            "services": [{"name": "svc", "endpoints": [upstream.url]}],
            "routes": [
                {"path": "/api/users", "service": "svc", "name": "users"},
                {"path": "/api", "service": "svc"},
            ],
        }
    )
    for path in ("/api/users/1", "/api/users/2", "/api/other"):
        async with client.get(path) as response:
            assert response.status == 200
    counted = client.app[METRICS].counters["requests"]
    assert counted == {("users", "GET", "200"): 2, ("/api", "GET", "200"): 1}
