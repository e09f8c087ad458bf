"""The repo's gateway.toml under a real `spork serve`: its CORS preflight, its security headers
and its schema on the users route, in front of the built-in demo service."""

from __future__ import annotations

import shutil

import aiohttp
import yarl

from tests.conftest import RepoConfig, StartSpork
from tests.edge.conftest import cors_headers
from tests.support import PROJECT_ROOT

APP = "http://localhost:3000"


async def test_repo_gateway_answers_preflights_sets_headers_and_checks_user_bodies(
    repo_config: RepoConfig, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    # gateway.toml names its schema relative to itself: the copy needs it beside it.
    shutil.copytree(PROJECT_ROOT / "schemas", repo_config.directory / "schemas", dirs_exist_ok=True)
    server = await spork_server(repo_config.path, repo_config.port, repo_config.admin_port)
    users = f"{server.url}/api/users"

    preflight = {"Origin": APP, "Access-Control-Request-Method": "POST"}
    async with http.options(users, headers=preflight) as response:
        assert response.status == 204
        assert cors_headers(response.headers) == {
            "access-control-allow-origin": APP,
            "access-control-allow-methods": "GET, HEAD, POST, PUT, PATCH, DELETE",
            "access-control-allow-headers": "Authorization, Content-Type",
            "access-control-max-age": "600",
        }
    async with http.options(users, headers={**preflight, "Origin": "http://evil.test"}) as r:
        assert r.status == 204
        assert cors_headers(r.headers) == {}

    async with http.get(f"{users}/1", headers={"Origin": APP}) as response:
        assert response.status == 200
        assert (await response.json())["name"] == "Ada Lovelace"
        assert response.headers["Server"] == "spork"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
        assert "Strict-Transport-Security" not in response.headers  # plain HTTP
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert response.headers["Access-Control-Expose-Headers"] == "X-Request-ID"

    async with http.post(users, json={"email": "nobody@example.com"}) as response:
        assert response.status == 422
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        problem = await response.json(content_type=None)
    assert problem["type"] == "urn:spork:problem:invalid-body"
    assert problem["errors"] == [{"path": "", "message": '"name" is a required property'}]

    async with http.post(users, json={"name": "Barbara Liskov"}) as response:
        assert response.status == 201
        created = await response.json()
    assert created["name"] == "Barbara Liskov"
    async with http.get(f"{server.url}/api/users/{created['id']}") as response:
        assert (await response.json())["name"] == "Barbara Liskov"


async def test_admin_data_is_answered_only_through_the_admin_route_with_the_admin_role(
    repo_config: RepoConfig, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server = await spork_server(repo_config.path, repo_config.port, repo_config.admin_port)
    minted = repo_config.spork("token", "mint", "--sub", "root", "--role", "admin")
    assert minted.returncode == 0, minted.stderr
    admin = {"Authorization": f"Bearer {minted.stdout.strip()}"}
    async with http.get(f"{server.url}/api/admin/reports", headers=admin) as response:
        assert response.status == 200
        assert (await response.json())["admin"] is True

    # Every other way to the demo's admin handler: open routes, strip_prefix routes,
    # encoded and dotted spellings, and identity headers a client made up.
    forged = {"X-User-Id": "root", "X-User-Roles": "admin", "X_User_Roles": "admin"}
    # 401: the gateway's admin route took it and wants a token; 403: another route forwarded
    # it, and the demo's handler found no verified admin role.
    expected = {
        "/api/users/admin/reports": 403,
        "/api/limited/api/admin/reports": 403,
        "/api/limited/admin/reports": 403,
        "/api/cached/api/admin/reports": 403,
        "/api/flaky/../admin/reports": 401,
        "/api/%61dmin/reports": 401,
        "/api/users/%2e%2e/admin/reports": 401,
    }
    for path, status in expected.items():
        url = yarl.URL(server.url + path, encoded=True)
        async with http.get(url, headers=forged) as response:
            body = await response.read()
            assert response.status == status, (path, response.status, body)
            assert b'"admin":true' not in body, path
