"""`spork serve` on the repo's own gateway.toml, and the ways it refuses to start."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import aiohttp
import orjson
import pytest

from spork_cli.config.load import load_config
from tests.conftest import RepoConfig, StartSpork
from tests.support import LOOPBACK, SporkRunner, eventually, free_ports

SEED_USERS = ["Ada Lovelace", "Grace Hopper", "Alan Turing"]


async def test_repo_gateway_serves_the_demo_users(
    repo_config: RepoConfig, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server = await spork_server(repo_config.path, repo_config.port, repo_config.admin_port)

    async with http.get(f"{server.url}/api/users") as listed:
        assert listed.status == 200
        assert listed.content_type == "application/json"
        assert listed.headers["Server"] == "spork"
        assert listed.headers["X-Request-ID"]
        users = orjson.loads(await listed.read())
    assert [user["name"] for user in users] == SEED_USERS

    new = {"name": "Edsger Dijkstra", "email": "edsger@example.com"}
    async with http.post(f"{server.url}/api/users", json=new) as created:
        assert created.status == 201
        body = orjson.loads(await created.read())
        location = created.headers["Location"]
    assert body == {"id": 4, **new}
    assert location == "/api/users/4"

    async with http.get(f"{server.url}{location}") as fetched:
        assert fetched.status == 200
        assert orjson.loads(await fetched.read()) == body
    async with http.get(f"{server.url}/api/users") as listed:
        assert [user["name"] for user in orjson.loads(await listed.read())] == [
            *SEED_USERS,
            new["name"],
        ]


async def test_unknown_path_is_a_problem_json_404(
    repo_config: RepoConfig, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server = await spork_server(repo_config.path, repo_config.port, repo_config.admin_port)

    async with http.get(f"{server.url}/nowhere/at/all?x=1") as response:
        assert response.status == 404
        assert response.content_type == "application/problem+json"
        rid = response.headers["X-Request-ID"]
        text = await response.text()
    problem = orjson.loads(text)
    assert problem["status"] == 404
    assert problem["title"] and problem["detail"] and problem["type"]
    assert problem["request_id"] == rid
    assert "Traceback" not in text


async def test_admin_health_endpoints_answer(
    repo_config: RepoConfig, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server = await spork_server(repo_config.path, repo_config.port, repo_config.admin_port)

    async with http.get(f"{server.admin_url}/health") as alive:
        assert alive.status == 200
        assert orjson.loads(await alive.read()) == {"status": "ok"}
    async with http.get(f"{server.admin_url}/health/ready") as ready:
        assert ready.status == 200
        readiness = orjson.loads(await ready.read())
    assert readiness["status"] == "ready"
    assert readiness["routes"] == len(load_config(repo_config.path, env={}).routes)
    assert readiness["services"] == len(load_config(repo_config.path, env={}).services)
    assert readiness["last_reload"] is None
    async with http.get(f"{server.admin_url}/health/services") as services:
        assert services.status == 200
        health = orjson.loads(await services.read())
    users = next(s for s in health["services"] if s["service"] == "users")
    assert [e["url"] for e in users["endpoints"]] == [f"http://127.0.0.1:{repo_config.demo_port}"]


async def test_logs_are_json_lines_with_an_access_line_per_request(
    repo_config: RepoConfig, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server = await spork_server(repo_config.path, repo_config.port, repo_config.admin_port)
    [serving] = server.events("spork is serving")
    assert serving["url"] == server.url
    assert serving["pid"] == server.pid

    async with http.get(f"{server.url}/api/users/2", headers={"X-Request-ID": "e2e-42"}) as r:
        assert r.status == 200
        assert r.headers["X-Request-ID"] == "e2e-42"
        await r.read()
    # Access lines are written after the response, and buffered: poll, do not assume.
    lines = await eventually(
        lambda: [e for e in server.events("request") if e["path"] == "/api/users/2"],
        what="the access log line",
    )
    [line] = lines
    assert line["status"] == 200
    assert line["route"] == "/api/users"
    assert line["service"] == "users"
    assert line["request_id"] == "e2e-42"
    assert server.stderr() == ""


# --- start-up errors ---------------------------------------------------------------------------


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, exactly one line on stderr starting `spork: `, and no traceback anywhere."""
    output = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    assert result.returncode == 2, output
    assert "Traceback" not in result.stdout + result.stderr, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output
    [line] = lines
    assert line.startswith("spork: "), output
    for needle in needles:
        assert needle in line, output
    return line


# A broken file, and the line its error must point at.
INVALID_CONFIGS = {
    "toml syntax": ("[server\nport = 1\n", 1),
    "unknown key": ("[server]\nport = 8080\nbogus = 1\n", 3),
    "unknown service": ('[[routes]]\npath = "/x"\nservice = "ghost"\n', 3),
    "bad duration": (
        '[[services]]\nname = "a"\nendpoints = ["http://127.0.0.1:1"]\ntimeout = "soon"\n',
        4,
    ),
}


@pytest.mark.parametrize("case", INVALID_CONFIGS.values(), ids=INVALID_CONFIGS.keys())
def test_invalid_config_is_one_line_and_exit_2(
    tmp_path: Path, run_spork: SporkRunner, case: tuple[str, int]
) -> None:
    text, line = case
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    port, admin_port = free_ports(2)
    result = run_spork(
        "serve", "-c", str(config), "--port", str(port), "--admin-port", str(admin_port),
        timeout=20,
    )  # fmt: skip
    assert_one_line_error(result, f"gateway.toml:{line}:")


def test_missing_config_file_is_exit_2(tmp_path: Path, run_spork: SporkRunner) -> None:
    result = run_spork("serve", "-c", str(tmp_path / "absent.toml"), timeout=20)
    assert_one_line_error(result, "absent.toml", "no such file")


def test_missing_default_config_is_exit_2(tmp_path: Path, run_spork: SporkRunner) -> None:
    result = run_spork("serve", cwd=tmp_path, env={"SPORK_CONFIG": None}, timeout=20)
    assert_one_line_error(result, "gateway.toml")


@pytest.mark.parametrize("taken", ["server", "admin", "demo"])
def test_port_already_taken_is_one_line_and_exit_2(
    repo_config: RepoConfig, run_spork: SporkRunner, taken: str
) -> None:
    port = {
        "server": repo_config.port,
        "admin": repo_config.admin_port,
        "demo": repo_config.demo_port,
    }[taken]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((LOOPBACK, port))
        holder.listen()
        result = run_spork(
            "serve", "-c", str(repo_config.path),
            "--port", str(repo_config.port), "--admin-port", str(repo_config.admin_port),
            timeout=20,
        )  # fmt: skip
    line = assert_one_line_error(result, str(port))
    assert "in use" in line
