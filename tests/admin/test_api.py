"""The read-only admin API in process: routes, services, limits, reloads, the token guard
and where the metrics are served."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.admin.conftest import Admin, StartAdmin
from tests.support import LOOPBACK, Upstream, eventually, free_port

ADMIN_TOKEN = "admin-token-for-the-api-tests"
NEW_ENDPOINTS = ["/api/routes", "/api/services", "/api/config", "/api/reloads"]


def dead_url() -> str:
    """A loopback URL nothing listens on: connections are refused at once."""
    return f"http://{LOOPBACK}:{free_port()}"


def two_services(live: str, dead: str, extra: str = "") -> str:
    return f"""
[server]
port = 8080

[[services]]
name = "users"
endpoints = ["{live}"]

[services.breaker]
failures = 1000

[[services]]
name = "pair"
endpoints = ["{live}", "{dead}"]
retries = {{ attempts = 1, backoff = "1ms" }}
passive = {{ failures = 1, cooldown = "30s" }}

[[routes]]
path = "/api/users"
name = "users"
service = "users"
methods = ["GET", "POST"]

[routes.rate_limit]
requests = 100
per = "1m"

[[routes]]
path = "/pair"
service = "pair"
strip_prefix = true

[[routes]]
path = "/cached/"
service = "users"
methods = ["GET"]
cache = {{ ttl = "5s" }}
{extra}
"""


@pytest.fixture
async def admin(start_admin: StartAdmin, upstream: Upstream) -> Admin:
    return await start_admin(two_services(upstream.url, dead_url()))


async def test_routes_lists_the_compiled_routes(admin: Admin, upstream: Upstream) -> None:
    routes = (await admin.get("/api/routes"))["routes"]

    assert [
        (r["route"], r["name"], r["path"], r["methods"], r["service"], r["auth"], r["features"])
        for r in routes
    ] == [
        # A GET route answers HEAD too.
        (
            "users",
            "users",
            "/api/users",
            ["GET", "HEAD", "POST"],
            "users",
            "none",
            ["rate_limit", "breaker"],
        ),
        ("/pair", None, "/pair", ["*"], "pair", "none", []),
        ("/cached/", None, "/cached/", ["GET", "HEAD"], "users", "none", ["cache", "breaker"]),
    ]
    assert routes[0]["endpoints"] == [upstream.url]
    assert routes[1]["strip_prefix"] is True


async def test_services_show_passive_ejection_with_its_error(admin: Admin) -> None:
    async def ejected() -> dict[str, Any] | None:
        async with admin.gateway.get("/pair/x") as response:
            assert response.status == 200  # the retry reaches the live endpoint
        pair = await service(admin, "pair")
        dead = pair["endpoints"][1]
        return pair if dead["ejected"] else None

    pair = await eventually(ejected, timeout=5, what="the dead endpoint ejected")

    live, dead = pair["endpoints"]
    assert (live["available"], live["ejected"], live["last_error"]) == (True, False, None)
    assert dead["available"] is False
    assert dead["healthy"] is True  # passive ejection, not a failed active check
    assert 0 < dead["ejected_for"] <= 30
    assert dead["last_error"]
    assert pair["healthy"] is True  # one endpoint still serves
    assert pair["health_check"] is None


async def test_services_show_active_health_checks(
    start_admin: StartAdmin, upstream: Upstream
) -> None:
    health = """
[services.health]
path = "/health"
interval = "50ms"
healthy_threshold = 1
unhealthy_threshold = 1
"""
    toml = f"""
[[services]]
name = "checked"
endpoints = ["{upstream.url}", "{dead_url()}"]
{health}
[[routes]]
path = "/"
service = "checked"
"""
    admin = await start_admin(toml)

    async def checked() -> dict[str, Any] | None:
        found = await service(admin, "checked")
        live, dead = found["endpoints"]
        both = live["last_check"] is not None and dead["last_check"] is not None
        return found if both and not dead["healthy"] else None

    found = await eventually(checked, timeout=5, what="both endpoints checked")

    live, dead = found["endpoints"]
    assert live["healthy"] and live["available"]
    assert live["last_latency_ms"] is not None and live["last_error"] is None
    assert not dead["available"] and not dead["ejected"]
    assert dead["last_error"]
    assert found["health_check"] == {"path": "/health", "interval": 0.05}


async def test_services_include_the_breaker_of_services_that_have_one(admin: Admin) -> None:
    users = await service(admin, "users")
    assert users["breaker"]["state"] == "closed"
    assert (await service(admin, "pair"))["breaker"] is None

    await admin.post("/api/breakers?service=users&action=open")
    users = await service(admin, "users")
    breakers = (await admin.get("/api/breakers"))["breakers"]

    assert users["breaker"]["state"] == "open"
    assert users["breaker"]["forced"] == "open"
    assert breakers == [users["breaker"]]


async def test_limits_are_still_served(admin: Admin) -> None:
    async with admin.gateway.get("/api/users") as response:
        assert response.status == 200

    limits = (await admin.get("/api/limits?route=users"))["limits"]

    assert [row["route"] for row in limits] == ["users"]


async def test_reloads_are_listed_newest_first_with_error_locations(
    admin: Admin, upstream: Upstream
) -> None:
    assert (await admin.get("/api/reloads"))["reloads"] == []
    good = two_services(upstream.url, dead_url())
    bad = good.replace("strip_prefix = true", "strip_prefix = true\nretries_typo = 3")
    line = bad.splitlines().index("retries_typo = 3") + 1

    assert (await admin.reload(bad))["result"] == "invalid"
    assert (await admin.reload(good.replace('"/pair"', '"/paired"')))["result"] == "applied"

    newest, oldest = (await admin.get("/api/reloads"))["reloads"]
    assert (newest["result"], newest["trigger"]) == ("applied", "test")
    assert oldest["result"] == "invalid"
    [error] = oldest["errors"]
    assert error["file"] == str(admin.config_file)
    assert (error["line"], error["path"], error["code"]) == (
        line,
        "routes[1].retries_typo",
        "unknown-key",
    )
    assert newest["at"] >= oldest["at"]
    paths = [r["path"] for r in (await admin.get("/api/routes"))["routes"]]
    assert "/paired" in paths


@pytest.mark.parametrize("path", NEW_ENDPOINTS)
async def test_the_new_endpoints_need_the_admin_token(
    start_admin: StartAdmin, upstream: Upstream, path: str
) -> None:
    admin = await start_admin(two_services(upstream.url, dead_url()), token=ADMIN_TOKEN)

    async with admin.admin.get(path) as missing:
        assert missing.status == 401
        assert ADMIN_TOKEN not in await missing.text()
    async with admin.admin.get(path, headers={"Authorization": "Bearer wrong"}) as wrong:
        assert wrong.status == 401
    await admin.get(path)  # with the token: 200


async def test_health_and_the_dashboard_page_stay_open_with_a_token(
    start_admin: StartAdmin, upstream: Upstream
) -> None:
    admin = await start_admin(two_services(upstream.url, dead_url()), token=ADMIN_TOKEN)

    for path in ("/health", "/health/ready", "/", "/dashboard/dashboard.js"):
        async with admin.admin.get(path) as response:
            assert response.status == 200, path
            assert ADMIN_TOKEN not in await response.text()


@pytest.mark.observes("metrics.path")
async def test_metrics_are_served_at_the_configured_path(
    start_admin: StartAdmin, upstream: Upstream
) -> None:
    admin = await start_admin(
        two_services(upstream.url, dead_url(), extra='[metrics]\npath = "/prom"')
    )

    async with admin.admin.get("/prom") as response:
        text = await response.text()
        assert response.status == 200, text
        assert response.content_type == "text/plain"
    assert f'spork_upstream_healthy{{endpoint="{upstream.url}",service="users"}} 1.0' in text
    async with admin.admin.get("/metrics") as elsewhere:
        assert elsewhere.status == 404
    async with admin.admin.get("/") as page:
        assert '<meta name="spork-metrics" content="/prom">' in await page.text()


@pytest.mark.observes("metrics.buckets")
async def test_request_durations_are_counted_in_the_configured_buckets(
    start_admin: StartAdmin, upstream: Upstream
) -> None:
    admin = await start_admin(
        two_services(upstream.url, dead_url(), extra="[metrics]\nbuckets = [0.3, 7.5]")
    )
    async with admin.gateway.get("/api/users/1") as response:
        assert response.status == 200
    async with admin.admin.get("/metrics") as response:
        text = await response.text()
    bounds = re.findall(
        r'spork_request_duration_seconds_bucket\{le="([^"]+)",route="users"\}', text
    )
    assert bounds == ["0.3", "7.5", "+Inf"]


@pytest.mark.observes("metrics.enabled")
async def test_metrics_are_not_served_when_disabled(
    start_admin: StartAdmin, upstream: Upstream
) -> None:
    admin = await start_admin(
        two_services(upstream.url, dead_url(), extra="[metrics]\nenabled = false")
    )

    async with admin.admin.get("/metrics") as response:
        assert response.status == 404
    async with admin.admin.get("/") as page:
        assert '<meta name="spork-metrics" content="">' in await page.text()


async def service(admin: Admin, name: str) -> dict[str, Any]:
    services = (await admin.get("/api/services"))["services"]
    found: dict[str, Any] = next(s for s in services if s["service"] == name)
    return found
