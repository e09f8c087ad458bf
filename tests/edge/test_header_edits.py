"""`[routes.request_headers]` and `[routes.response_headers]` through a real `spork serve` and a
real upstream: what the upstream receives, and what the client gets on every answer path
(relayed, streamed, from the cache, the gateway's own problems), also after a reload."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.conftest import StartSpork
from tests.support import SporkRunner, Upstream, eventually, free_ports, gateway_toml, replace_file

SECRET = "s" * 40

EDITS = """
[routes.request_headers]
set = { X-Env = "dev", X-Tenant = "gateway" }
remove = ["Cookie", "x-secret"]

[routes.response_headers]
set = { Cache-Control = "no-store", X-Frame-Options = "DENY" }
remove = ["X-Powered-By", "x-upstream"]
"""


def config(port: int, admin_port: int, upstream: Upstream, edits: str = EDITS) -> str:
    """`/api` with the edits; `/cached` with the same edits and a cache; `/private` needing
    a token, edits too; `/plain` without any."""
    base = gateway_toml(port, admin_port, {"svc": upstream.url}, {"/plain": "svc"})
    return (
        base
        + f'\n[auth]\nalgorithms = ["HS256"]\nsecret = "{SECRET}"\n'
        + '\n[[routes]]\npath = "/api"\nservice = "svc"\n'
        + edits
        + '\n[[routes]]\npath = "/cached"\nservice = "svc"\n[routes.cache]\nttl = "60s"\n'
        + edits
        + '\n[[routes]]\npath = "/private"\nservice = "svc"\nauth = "required"\n'
        + edits
    )


ASK = "respond-header=X-Powered-By:Express&respond-header=Cache-Control:max-age=60"


@pytest.mark.observes("routes.request_headers.set", "routes.request_headers.remove")
async def test_request_edits_remove_then_set_what_goes_upstream(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    port, admin_port = free_ports(2)
    file = tmp_path / "gateway.toml"
    file.write_text(config(port, admin_port, upstream))
    server = await spork_server(file, port, admin_port)
    sent = {"Cookie": "session=alice", "X-Secret": "k", "X-Tenant": "client", "X-Kept": "1"}
    async with http.get(f"{server.url}/api/x", headers=sent) as response:
        assert response.status == 200
    seen = upstream.requests[-1].headers
    assert seen.getall("X-Tenant") == ["gateway"]  # replaced, not added beside the client's
    assert seen["X-Env"] == "dev"
    assert "Cookie" not in seen and "X-Secret" not in seen
    assert seen["X-Kept"] == "1"

    async with http.get(f"{server.url}/plain/x", headers=sent) as response:
        assert response.status == 200
    plain = upstream.requests[-1].headers
    assert plain["Cookie"] == "session=alice" and plain["X-Tenant"] == "client"
    assert "X-Env" not in plain


@pytest.mark.parametrize("path", ["/api/x", "/api/stream"], ids=["relayed", "streamed"])
@pytest.mark.observes("routes.response_headers.set", "routes.response_headers.remove")
async def test_response_edits_apply_to_relayed_and_streamed_answers(
    tmp_path: Path,
    upstream: Upstream,
    spork_server: StartSpork,
    http: aiohttp.ClientSession,
    path: str,
) -> None:
    port, admin_port = free_ports(2)
    file = tmp_path / "gateway.toml"
    file.write_text(config(port, admin_port, upstream))
    server = await spork_server(file, port, admin_port)
    async with http.get(f"{server.url}{path}?{ASK}") as response:
        assert response.status == 200
        assert (await response.json())["upstream"] == "upstream"
        headers = response.headers
    assert "X-Powered-By" not in headers and "X-Upstream" not in headers
    assert headers.getall("Cache-Control") == ["no-store"]
    # Set explicitly, so it replaces the security preset's SAMEORIGIN.
    assert headers.getall("X-Frame-Options") == ["DENY"]
    assert headers["X-Content-Type-Options"] == "nosniff"  # the rest of the preset stays


async def test_response_edits_apply_to_cached_answers_and_the_gateways_own_problems(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    port, admin_port = free_ports(2)
    file = tmp_path / "gateway.toml"
    file.write_text(config(port, admin_port, upstream))
    server = await spork_server(file, port, admin_port)
    url = f"{server.url}/cached/time?{ASK}"
    for expected in ("MISS", "HIT"):
        async with http.get(url) as response:
            assert response.status == 200
            assert response.headers["X-Cache"] == expected
            assert "X-Powered-By" not in response.headers
            assert response.headers.getall("Cache-Control") == ["no-store"]
    assert len(upstream.requests) == 1

    async with http.get(f"{server.url}/private/x") as response:
        assert response.status == 401
        assert response.content_type == "application/problem+json"
        assert response.headers.getall("Cache-Control") == ["no-store"]
        assert response.headers["X-Frame-Options"] == "DENY"


async def test_a_reload_changes_the_edits_in_force(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    port, admin_port = free_ports(2)
    file = tmp_path / "gateway.toml"
    file.write_text(config(port, admin_port, upstream))
    server = await spork_server(file, port, admin_port)
    changed = EDITS.replace('X-Env = "dev"', 'X-Env = "staging"').replace(
        'Cache-Control = "no-store"', 'Cache-Control = "private"'
    )
    replace_file(file, config(port, admin_port, upstream, changed))

    async def applied() -> bool:
        async with http.get(f"{server.url}/api/x") as response:
            return response.headers.get("Cache-Control") == "private"

    await eventually(applied, timeout=10, what="the reloaded response edits")
    assert upstream.requests[-1].headers["X-Env"] == "staging"


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ('[routes.request_headers]\nset = { X-User-Id = "admin" }', "X-User-Id cannot be set"),
        ('[routes.request_headers]\nset = { x-user-roles = "admin" }', "cannot be set"),
        ('[routes.request_headers]\nset = { X-Forwarded-For = "1.2.3.4" }', "cannot be set"),
        ('[routes.request_headers]\nset = { Host = "evil.example" }', "cannot be set"),
        ('[routes.response_headers]\nset = { X-Request-ID = "fixed" }', "cannot be set"),
        ('[routes.request_headers]\nremove = ["Content-Length"]', "cannot be removed"),
        ('[routes.response_headers]\nset = { X-A = "a\\u0001b" }', "control character"),
    ],
)
def test_check_refuses_edits_of_headers_the_gateway_owns(
    tmp_path: Path, run_spork: SporkRunner, edits: str, message: str
) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text(
        '[[services]]\nname = "svc"\nendpoints = ["http://127.0.0.1:9"]\n'
        '[[routes]]\npath = "/api"\nservice = "svc"\n' + edits + "\n"
    )
    result = run_spork("check", str(file))
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stdout
    assert f"{file}:8:" in result.stdout  # located on the offending line


async def test_an_underscore_spelling_cannot_slip_past_an_edit(
    tmp_path: Path, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    # wsgiref, like CGI, reads X_Secret_Thing and X-Secret-Thing as one HTTP_X_SECRET_THING.
    from tests.security.frameworks import serve

    with serve("wsgiref") as wsgiref:
        port, admin_port = free_ports(2)
        file = tmp_path / "gateway.toml"
        file.write_text(
            gateway_toml(
                port,
                admin_port,
                {"svc": wsgiref},
                {"/api": "svc"},
                server_extra="underscores_in_headers = true",
                route_extra=(
                    '[routes.request_headers]\nremove = ["X-Secret-Thing"]\n'
                    'set = { X-Chosen-Route = "open" }'
                ),
            )
        )
        server = await spork_server(file, port, admin_port)
        sent = {"X_Secret_Thing": "leak", "X_Chosen_Route": "admin", "X_Other": "kept"}
        async with http.get(f"{server.url}/api/x", headers=sent) as response:
            assert response.status == 200
            seen = (await response.json())["headers"]
    assert "x-secret-thing" not in seen
    assert seen["x-chosen-route"] == "open"
    assert seen["x-other"] == "kept"  # underscores are allowed: other names pass
