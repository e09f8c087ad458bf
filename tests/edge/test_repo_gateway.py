"""The repo's gateway.toml under a real `spork serve`: its CORS preflight, its security headers
and its schema on the users route, in front of the built-in demo service."""

from __future__ import annotations

import shutil

import aiohttp

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
