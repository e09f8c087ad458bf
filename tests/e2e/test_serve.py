"""`spork serve` on the repo's own gateway.toml, on files whose listener and logging tables
alone decide where it listens and what it logs, and the ways it refuses to start."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from spork_cli.config.load import load_config
from tests.conftest import CLI_ENV, RepoConfig, StartSpork
from tests.support import (
    LOOPBACK,
    Processes,
    SporkRunner,
    Upstream,
    eventually,
    free_ports,
    gateway_toml,
    refuses,
    replace_file,
    spork_env,
)

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


async def serve_until(
    processes: Processes, config: Path, http: aiohttp.ClientSession, url: str
) -> Path:
    """`spork serve -c config` with nothing on the command line to override the file, once
    ``url`` answers 200; the file its output goes to."""
    log = config.parent / "serve.log"
    with log.open("wb") as out:
        proc = processes.start(
            sys.executable, "-m", "spork_cli", "serve", "-c", str(config), "--no-reload",
            cwd=config.parent, env=spork_env(CLI_ENV), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    async def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            async with http.get(url) as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(ready, timeout=20, what=f"{url} answering")
    return log


@pytest.mark.observes(
    "server.host", "server.port", "admin.host", "admin.port", "demo.enabled", "demo.host",
    "demo.port",
)  # fmt: skip
async def test_each_listener_opens_at_the_address_of_its_table(
    tmp_path: Path, processes: Processes, http: aiohttp.ClientSession
) -> None:
    # Other loopback addresses than the defaults, and no --port/--admin-port: only the file.
    port, admin_port, demo_port = free_ports(3)
    at = {"server": "127.0.0.2", "admin": "127.0.0.3", "demo": "127.0.0.4"}
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[server]\nhost = "{at["server"]}"\nport = {port}\n\n'
        f'[admin]\nhost = "{at["admin"]}"\nport = {admin_port}\n\n'
        f'[demo]\nenabled = true\nhost = "{at["demo"]}"\nport = {demo_port}\n\n'
        f'[[services]]\nname = "users"\nendpoints = ["http://{at["demo"]}:{demo_port}"]\n\n'
        '[[routes]]\npath = "/api/users"\nservice = "users"\n'
    )
    await serve_until(processes, config, http, f"http://{at['admin']}:{admin_port}/health/ready")
    async with http.get(f"http://{at['server']}:{port}/api/users") as listed:
        assert listed.status == 200
        assert [u["name"] for u in orjson.loads(await listed.read())] == SEED_USERS
    async with http.get(f"http://{at['demo']}:{demo_port}/health") as demo:
        assert demo.status == 200
        assert demo.headers["X-Demo-Instance"]
    for listening in (port, admin_port, demo_port):  # and not at the default address
        assert await refuses(listening, LOOPBACK)


@pytest.mark.observes("admin.enabled")
async def test_a_disabled_admin_listener_is_never_opened(
    tmp_path: Path, processes: Processes, http: aiohttp.ClientSession, upstream: Upstream
) -> None:
    port, admin_port = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(
        gateway_toml(
            port, admin_port, {"up": upstream.url}, {"/": "up"}, admin_extra="enabled = false"
        )
    )
    log = await serve_until(processes, config, http, f"http://{LOOPBACK}:{port}/x")

    def serving() -> list[dict[str, object]]:
        lines = (orjson.loads(line) for line in log.read_text().splitlines() if line)
        return [line for line in lines if line.get("event") == "spork is serving"]

    # The line comes once every listener that is to open is open.
    [started] = await eventually(serving, what="the line saying spork is serving")
    assert started["admin"] is None
    assert await refuses(admin_port)


@pytest.mark.observes("logging.level", "logging.format")
async def test_console_logs_at_warning_level_and_above_only(
    tmp_path: Path, processes: Processes, http: aiohttp.ClientSession, upstream: Upstream
) -> None:
    port, admin_port = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(
        gateway_toml(
            port,
            admin_port,
            {"up": upstream.url},
            {"/": "up"},
            extra=(
                '[logging]\nlevel = "warning"\nformat = "console"\naccess_log = false\n\n'
                '[[deny]]\nname = "dotfiles"\npath = "/\\\\.env"\n'
            ),
        )
    )
    # stdout is a file: the default format would be JSON lines.
    log = await serve_until(processes, config, http, f"http://{LOOPBACK}:{admin_port}/health/ready")
    async with http.get(f"http://{LOOPBACK}:{port}/.env") as denied:
        assert denied.status == 403

    def warned() -> list[str]:
        return [line for line in log.read_text().splitlines() if "request denied" in line]

    [line] = await eventually(warned, what="the warning of the denied request")
    assert not line.lstrip().startswith("{") and "warning" in line and "dotfiles" in line
    # The info line at start, written before the warning, was left out.
    assert "spork is serving" not in log.read_text()


@pytest.mark.observes("logging.access_log")
async def test_access_log_off_writes_no_request_lines_until_turned_on(
    tmp_path: Path, spork_server: StartSpork, http: aiohttp.ClientSession, upstream: Upstream
) -> None:
    port, admin_port = free_ports(2)
    config = tmp_path / "gateway.toml"

    def text(access_log: bool) -> str:
        logging = f"[logging]\naccess_log = {str(access_log).lower()}\n"
        return gateway_toml(port, admin_port, {"up": upstream.url}, {"/": "up"}, extra=logging)

    config.write_text(text(False))
    server = await spork_server(config, port, admin_port)
    async with http.get(f"{server.url}/quiet") as quiet:
        assert quiet.status == 200
    since = time.time()
    replace_file(config, text(True))  # access_log reloads
    assert (await server.reloaded_since(since))["result"] == "applied"
    async with http.get(f"{server.url}/loud") as loud:
        assert loud.status == 200

    def logged() -> list[str]:
        return [str(line["path"]) for line in server.events("request")]

    # Lines go out in order: once /loud's is written, /quiet's would have been before it.
    assert await eventually(logged, what="the access line of /loud") == ["/loud"]


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
