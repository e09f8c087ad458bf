"""Headers a client controls, through `spork serve`, as real upstream frameworks read them:
the identity each app would take, the headers and client address each framework believes,
and what a client sending odd bytes (over a plain socket) gets back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jwt
import orjson
from multidict import CIMultiDict

from tests.security.conftest import SECRET, Front
from tests.security.frameworks import FRAMED, FRAMEWORKS
from tests.support import LOOPBACK, SporkRunner

StartFront = Callable[..., Awaitable[Front]]

IDENTITY_SPELLINGS = [
    ("X_User_Id", "admin"),
    ("x-user_roles", "admin"),
    ("X-USER-ID", "root"),
    ("X_USER_ROLES", "admin"),
]
PROXY_ONLY = {
    "X-Real-IP": "6.6.6.6",
    "X-Client-IP": "6.6.6.6",
    "True-Client-IP": "6.6.6.6",
    "X-Forwarded-Prefix": "/evil",
    "X-Forwarded-Port": "1",
    "X-Forwarded-Server": "evil.example",
    "X-Original-URL": "/admin",
    "X-Rewrite-URL": "/admin",
    "X-HTTP-Method-Override": "DELETE",
    "X-HTTP-Method": "DELETE",
    "X-Method-Override": "DELETE",
}


def token(**claims: Any) -> str:
    body = {"sub": "alice", "exp": int(time.time()) + 600, **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


async def seen_by_each(front: Front, headers: Any, path: str = "/x") -> dict[str, dict[str, Any]]:
    """What every framework made of one request sent through the gateway."""
    seen: dict[str, dict[str, Any]] = {}
    async with aiohttp.ClientSession() as session:
        for name in FRAMEWORKS:
            async with session.get(f"{front.server.url}/{name}{path}", headers=headers) as answer:
                assert answer.status == 200, (name, await answer.text())
                seen[name] = orjson.loads(await answer.read())
    return seen


async def raw(port: int, head: bytes) -> tuple[int, dict[str, Any]]:
    """``head`` as bytes on a connection of its own; the status and the JSON body."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(head)
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = data.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), orjson.loads(body) if body else {}


async def test_no_spelling_of_an_identity_header_becomes_an_identity_upstream(
    front: StartFront,
) -> None:
    gateway = await front()
    seen = await seen_by_each(gateway, CIMultiDict(IDENTITY_SPELLINGS))
    identities = {name: (s["identity"], s["roles"]) for name, s in seen.items()}
    assert identities == dict.fromkeys(FRAMEWORKS, (None, None))


async def test_a_verified_identity_is_all_an_upstream_reads(front: StartFront) -> None:
    gateway = await front()
    sent = CIMultiDict([*IDENTITY_SPELLINGS, ("Authorization", f"Bearer {token(roles=['dev'])}")])
    seen = await seen_by_each(gateway, sent)
    identities = {name: (s["identity"], s["roles"]) for name, s in seen.items()}
    assert identities == dict.fromkeys(FRAMEWORKS, ("alice", "dev"))


async def test_headers_only_a_trusted_proxy_may_send_never_reach_a_framework(
    front: StartFront,
) -> None:
    gateway = await front()
    seen = await seen_by_each(gateway, PROXY_ONLY)
    names = {name.lower() for name in PROXY_ONLY}
    believed = {
        name: (sorted(names & s["headers"].keys()), s["method"], s["remote"], s["prefix"])
        for name, s in seen.items()
    }
    # uvicorn and ProxyFix take the client address from the gateway's X-Forwarded-For.
    assert believed == dict.fromkeys(FRAMEWORKS, ([], "GET", "127.0.0.1", ""))


async def test_a_host_that_would_add_forwarded_parameters_is_a_400_problem(
    front: StartFront,
) -> None:
    gateway = await front()
    host = 'a", for=6.6.6.6;proto=https;host="evil.example'
    head = f"GET /aiohttp/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    status, body = await raw(gateway.port, head.encode())
    assert (status, body.get("type")) == (400, "urn:spork:problem:bad-host")


async def test_more_than_one_authorization_is_a_400_problem_on_any_path(
    front: StartFront,
) -> None:
    gateway = await front()
    found = []
    for path in ("/werkzeug/x", "/no-route"):
        head = (
            f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nAuthorization: Bearer {token()}\r\n"
            "Authorization: Basic YWRtaW46YWRtaW4=\r\nConnection: close\r\n\r\n"
        )
        status, body = await raw(gateway.port, head.encode())
        found.append((status, body.get("type")))
    assert found == [(400, "urn:spork:problem:bad-authorization")] * 2


async def test_a_second_host_or_none_on_http_1_1_is_a_400_problem(front: StartFront) -> None:
    """aiohttp's parser refuses these before the gateway sees them; this pins it down."""
    gateway = await front()
    heads = [
        f"GET /h11/x HTTP/1.1\r\nHost: {LOOPBACK}\r\nHost: evil.example\r\n\r\n",
        "GET /h11/x HTTP/1.1\r\nConnection: close\r\n\r\n",
    ]
    found = [(await raw(gateway.port, head.encode()))[0] for head in heads]
    assert found == [400, 400]


async def test_trace_is_refused_before_any_framework_can_echo_it(front: StartFront) -> None:
    gateway = await front()
    head = f"TRACE /httptools/x HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n"
    status, body = await raw(gateway.port, head.encode())
    assert (status, body.get("type")) == (405, "urn:spork:problem:method-not-allowed")


async def test_an_upstreams_own_frame_options_is_not_weakened_by_the_preset(
    front: StartFront,
) -> None:
    gateway = await front()
    found = {}
    async with aiohttp.ClientSession() as session:
        for name in FRAMEWORKS:
            async with session.get(f"{gateway.server.url}/{name}{FRAMED}") as answer:
                found[name] = answer.headers.getall("X-Frame-Options")
    assert found == {key: ["DENY"] for key in FRAMEWORKS}


async def test_a_role_holding_the_separator_is_refused_by_the_gateway_and_token_verify(
    front: StartFront, run_spork: SporkRunner
) -> None:
    gateway = await front()
    bad = token(roles=["viewer,admin"])
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{gateway.server.url}/wsgiref/x", headers={"Authorization": f"Bearer {bad}"}
        ) as answer,
    ):
        status = answer.status
        body = orjson.loads(await answer.read())
    verified = await asyncio.to_thread(run_spork, "-c", str(gateway.config), "token", "verify", bad)
    assert (status, body["reason"]) == (401, "malformed")
    assert verified.returncode == 1
    assert any(line.split()[:2] == ["FAIL", "grants"] for line in verified.stdout.splitlines())
