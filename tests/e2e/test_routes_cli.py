"""`spork routes` on the repo's own gateway.toml, as a real process."""

from __future__ import annotations

import orjson

from tests.support import PROJECT_ROOT, SporkRunner


def test_routes_lists_the_users_routes(run_spork: SporkRunner) -> None:
    result = run_spork("routes", cwd=PROJECT_ROOT, env={"SPORK_CONFIG": None})
    assert result.returncode == 0, result.stderr
    # One row per route, in file order: the path first (with a name when it has one), then
    # (columns may move) its service by name.
    rows = [line.split() for line in result.stdout.splitlines()]
    users = [row for row in rows if row and row[0] == "/api/users"]
    assert len(users) == 2, result.stdout
    create, rest = users
    assert create[1:3] == ["(users-create)", "POST"], result.stdout
    assert "body_schema" in create, result.stdout
    assert rest[1] == "*", result.stdout
    for row in users:
        assert "users" in row[1:], result.stdout
        assert "http://127.0.0.1:9100" in row, result.stdout
    assert result.stderr == ""


def test_routes_json_lists_the_users_route(run_spork: SporkRunner) -> None:
    result = run_spork("routes", "--json", cwd=PROJECT_ROOT, env={"SPORK_CONFIG": None})
    assert result.returncode == 0, result.stderr
    rows = orjson.loads(result.stdout)
    create, users = [row for row in rows if row["path"] == "/api/users"]
    assert (create["route"], create["methods"]) == ("users-create", ["POST"])
    assert users["route"] == "/api/users"
    assert users["service"] == "users"
    assert users["methods"] == ["*"]
    assert users["endpoints"] == ["http://127.0.0.1:9100"]
    assert users["strip_prefix"] is False
    assert result.stderr == ""


def test_routes_reads_the_file_given_with_config(run_spork: SporkRunner) -> None:
    result = run_spork("-c", str(PROJECT_ROOT / "gateway.toml"), "routes", "--json", cwd="/")
    assert result.returncode == 0, result.stderr
    assert any(row["path"] == "/api/users" for row in orjson.loads(result.stdout))
