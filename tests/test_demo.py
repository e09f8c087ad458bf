"""The demo users service, through HTTP: in-process with aiohttp_client, and on a real socket."""

from __future__ import annotations

import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from spork_cli.demo import build_demo_app, start_demo
from spork_cli.errors import UsageError
from tests.support import LOOPBACK, free_port

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> Client:
    return await aiohttp_client(build_demo_app("demo-a"))


async def expect_problem(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = orjson.loads(await response.read())
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    return body


@pytest.mark.parametrize("prefix", ["/api/users", "/users", "/v1/api/users"])
async def test_list_and_get_under_any_prefix(client: Client, prefix: str) -> None:
    listed = await client.get(prefix)
    assert listed.status == 200
    assert listed.content_type == "application/json"
    users = orjson.loads(await listed.read())
    assert [user["id"] for user in users] == [1, 2, 3]
    assert set(users[0]) == {"id", "name", "email"}

    one = await client.get(f"{prefix}/2")
    assert one.status == 200
    assert orjson.loads(await one.read()) == users[1]


async def test_crud_round_trip(client: Client) -> None:
    created = await client.post("/api/users", json={"name": "Edsger", "email": "ed@example.com"})
    assert created.status == 201
    user = orjson.loads(await created.read())
    assert user == {"id": 4, "name": "Edsger", "email": "ed@example.com"}
    assert created.headers["Location"] == "/api/users/4"

    fetched = await client.get(created.headers["Location"])
    assert orjson.loads(await fetched.read()) == user

    patched = await client.patch("/api/users/4", json={"email": "edsger@example.com"})
    assert orjson.loads(await patched.read()) == {**user, "email": "edsger@example.com"}

    replaced = await client.put("/api/users/4", json={"name": "E. W. Dijkstra"})
    assert orjson.loads(await replaced.read()) == {"id": 4, "name": "E. W. Dijkstra", "email": None}

    deleted = await client.delete("/api/users/4")
    assert deleted.status == 204
    assert await deleted.read() == b""
    await expect_problem(await client.get("/api/users/4"), 404)

    again = await client.post("/api/users", json={"name": "Barbara"})
    assert orjson.loads(await again.read())["id"] == 5, "ids are never reused"


async def test_email_is_optional(client: Client) -> None:
    created = await client.post("/users", json={"name": "Barbara"})
    assert created.status == 201
    assert orjson.loads(await created.read())["email"] is None
    assert created.headers["Location"] == "/users/4"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/api/users", b"{not json", 400),
        ("POST", "/api/users", b"", 400),
        ("POST", "/api/users", b"[1, 2]", 422),
        ("POST", "/api/users", b"{}", 422),
        ("POST", "/api/users", b'{"name": ""}', 422),
        ("POST", "/api/users", b'{"name": 7}', 422),
        ("POST", "/api/users", b'{"name": "x", "email": 7}', 422),
        ("PUT", "/api/users/1", b'{"email": "a@b.c"}', 422),
        ("PATCH", "/api/users/1", b'{"name": null}', 422),
        ("PATCH", "/api/users/1", b"nope", 400),
        ("GET", "/api/users/99", b"", 404),
        ("GET", "/api/users/abc", b"", 404),
        ("PUT", "/api/users/99", b'{"name": "x"}', 404),
        ("DELETE", "/api/users/99", b"", 404),
        ("GET", "/nowhere", b"", 404),
    ],
)
async def test_errors_are_problem_json(
    client: Client, method: str, path: str, body: bytes, status: int
) -> None:
    response = await client.request(method, path, data=body)
    await expect_problem(response, status)
    assert response.headers["X-Demo-Instance"] == "demo-a"


async def test_rejected_update_changes_nothing(client: Client) -> None:
    before = orjson.loads(await (await client.get("/api/users/1")).read())
    response = await client.patch("/api/users/1", json={"name": "New", "email": 42})
    await expect_problem(response, 422)
    after = orjson.loads(await (await client.get("/api/users/1")).read())
    assert after == before


async def test_wrong_method_is_405_problem_with_allow(client: Client) -> None:
    response = await client.post("/api/users/1", json={"name": "x"})
    await expect_problem(response, 405)
    assert {"GET", "PUT", "PATCH", "DELETE"} <= set(response.headers["Allow"].split(","))


async def test_health(client: Client) -> None:
    response = await client.get("/health")
    assert response.status == 200
    assert orjson.loads(await response.read()) == {"status": "ok"}
    assert response.headers["X-Demo-Instance"] == "demo-a"


async def test_me_echoes_identity_headers(client: Client) -> None:
    response = await client.get(
        "/api/users/me", headers={"X-User-Id": "alice", "X-User-Roles": "admin, editor"}
    )
    assert response.status == 200
    assert orjson.loads(await response.read()) == {"sub": "alice", "roles": ["admin", "editor"]}

    no_roles = await client.get("/api/users/me", headers={"X-User-Id": "bob"})
    assert orjson.loads(await no_roles.read()) == {"sub": "bob", "roles": []}


async def test_me_without_identity_is_401(client: Client) -> None:
    response = await client.get("/api/users/me", headers={"X-User-Roles": "admin"})
    await expect_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_slow_answers_after_the_delay(client: Client) -> None:
    response = await client.get("/api/users/slow", params={"ms": "5"})
    assert response.status == 200
    assert orjson.loads(await response.read()) == {"slept_ms": 5}
    await expect_problem(await client.get("/slow", params={"ms": "soon"}), 400)
    await expect_problem(await client.get("/slow", params={"ms": "-1"}), 400)


async def test_flaky_with_a_seed_is_repeatable(client: Client) -> None:
    seeds = [str(seed) for seed in range(20)]
    expected = [503 if random.Random(seed).random() < 0.5 else 200 for seed in seeds]
    assert 200 in expected and 503 in expected, "the seeds should exercise both outcomes"

    for _ in range(2):
        got = []
        for seed in seeds:
            response = await client.get("/flaky", params={"rate": "0.5", "seed": seed})
            if response.status == 503:
                await expect_problem(response, 503)
            else:
                await response.read()
            got.append(response.status)
        assert got == expected


@pytest.mark.parametrize(("rate", "status"), [("0", 200), ("1", 503)])
async def test_flaky_rate_bounds(client: Client, rate: str, status: int) -> None:
    for _ in range(5):
        response = await client.get("/api/users/flaky", params={"rate": rate})
        assert response.status == status
        await response.read()


async def test_flaky_rate_out_of_range_is_400(client: Client) -> None:
    await expect_problem(await client.get("/flaky", params={"rate": "nan"}), 400)


async def test_flaky_fail_n_fails_first_calls_then_succeeds(client: Client) -> None:
    statuses = []
    for _ in range(4):
        response = await client.post("/api/users/flaky", params={"fail": "2"})
        statuses.append(response.status)
        await response.read()
    assert statuses == [503, 503, 200, 200]

    other = await client.get("/flaky", params={"fail": "1", "key": "other"})
    await expect_problem(other, 503)
    assert (await client.get("/flaky", params={"fail": "1", "key": "other"})).status == 200


async def test_fail_counters_are_per_app(aiohttp_client: ClientFactory) -> None:
    for _ in range(2):
        fresh = await aiohttp_client(build_demo_app())
        response = await fresh.get("/flaky", params={"fail": "1"})
        await expect_problem(response, 503)


async def test_stream_sends_one_chunk_per_event(client: Client) -> None:
    async with client.get("/api/users/stream", params={"n": "4", "interval_ms": "1"}) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert response.headers["X-Demo-Instance"] == "demo-a"
        chunks = []
        buffer = b""
        async for data, end_of_chunk in response.content.iter_chunks():
            buffer += data
            if end_of_chunk:
                chunks.append(buffer)
                buffer = b""
    assert buffer == b""
    assert [orjson.loads(chunk.removeprefix(b"data: ")) for chunk in chunks] == [
        {"i": i} for i in range(4)
    ]
    assert all(chunk.startswith(b"data: ") and chunk.endswith(b"\n\n") for chunk in chunks)


async def test_websocket_echo(client: Client) -> None:
    async with client.ws_connect("/api/users/ws") as ws:
        await ws.send_str("hello")
        assert await ws.receive_str() == "hello"
        await ws.send_bytes(b"\x00\x01")
        assert await ws.receive_bytes() == b"\x00\x01"


async def test_start_demo_serves_on_a_real_socket() -> None:
    port = free_port()
    runner = await start_demo(LOOPBACK, port, name="demo-b")
    try:
        async with aiohttp.ClientSession(f"http://{LOOPBACK}:{port}") as session:
            async with session.get("/api/users/1") as response:
                assert response.status == 200
                assert response.headers["X-Demo-Instance"] == "demo-b"
                assert orjson.loads(await response.read())["name"] == "Ada Lovelace"
            async with session.get("/health") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()


async def test_start_demo_on_a_taken_port_is_a_usage_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError) as caught:
            await start_demo(LOOPBACK, port)
    message = str(caught.value)
    assert f"{LOOPBACK}:{port}" in message
    assert "already in use" in message
    assert "\n" not in message
