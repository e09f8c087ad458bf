"""`spork service add` / `spork route add`: comments survive, bad edits leave the file alone."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from spork_cli.config.edit import add_route, add_service
from spork_cli.config.load import check_file
from spork_cli.errors import EditError, UsageError
from tests.support import SporkRunner

ORIGINAL = textwrap.dedent(
    """\
    #:schema ./gateway.schema.json
    # my gateway, with comments that must survive

    [server]
    port = 8080   # the port

    [[services]]
    name = "users"   # users service
    endpoints = ["http://127.0.0.1:9001"]

    # public routes
    [[routes]]
    path = "/users"
    service = "users"
    """
)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(ORIGINAL)
    return path


def test_add_service_keeps_comments_and_layout(config: Path) -> None:
    add_service(config, "billing", ["http://127.0.0.1:9200", "http://127.0.0.1:9201"], "p2c")
    text = config.read_text()
    assert text.startswith(ORIGINAL.split("# public routes")[0].rstrip("\n"))
    for comment in ("# the port", "# users service", "# public routes", "# my gateway"):
        assert comment in text
    loaded = check_file(str(config), env={})
    assert loaded.config is not None
    billing = loaded.config.service("billing")
    assert billing is not None
    assert [e.url for e in billing.endpoints] == ["http://127.0.0.1:9200", "http://127.0.0.1:9201"]
    assert billing.balance == "p2c"


def test_add_route_appends_and_checks(config: Path) -> None:
    add_route(config, "/api", "users", ["get", "post"], True, None)
    loaded = check_file(str(config), env={})
    assert loaded.config is not None
    route = loaded.config.routes[-1]
    assert (route.path, route.service, route.methods, route.strip_prefix) == (
        "/api",
        "users",
        ["GET", "POST"],
        True,
    )
    assert "# public routes" in config.read_text()


def test_route_to_unknown_service_is_refused_and_file_untouched(config: Path) -> None:
    before = config.read_bytes()
    with pytest.raises(EditError, match="unknown service 'nope'"):
        add_route(config, "/x", "nope", [], False, None)
    assert config.read_bytes() == before


@pytest.mark.parametrize(
    ("name", "urls", "balance", "message"),
    [
        ("users", ["http://127.0.0.1:1"], None, "already exists"),
        ("bad name!", ["http://127.0.0.1:1"], None, "names use letters"),
        ("ftp", ["ftp://127.0.0.1:1"], None, "scheme must be http"),
        ("b", ["http://127.0.0.1:1"], "random", "must be one of"),
    ],
)
def test_invalid_service_edits_are_refused(
    config: Path, name: str, urls: list[str], balance: str | None, message: str
) -> None:
    before = config.read_bytes()
    with pytest.raises(EditError, match=message):
        add_service(config, name, urls, balance)
    assert config.read_bytes() == before


def test_editing_an_invalid_file_is_refused(config: Path) -> None:
    config.write_text(ORIGINAL + "bogus = 1\n")
    before = config.read_bytes()
    with pytest.raises(EditError, match="not valid now"):
        add_service(config, "x", ["http://127.0.0.1:1"], None)
    assert config.read_bytes() == before


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        add_service(tmp_path / "none.toml", "x", ["http://127.0.0.1:1"], None)


def test_edit_keeps_file_mode(config: Path) -> None:
    config.chmod(0o640)
    add_service(config, "x", ["http://127.0.0.1:1"], None)
    assert config.stat().st_mode & 0o777 == 0o640
    assert not list(config.parent.glob(".*spork-edit"))


def test_cli_exit_codes(config: Path, run_spork: SporkRunner) -> None:
    ok = run_spork("-c", str(config), "service", "add", "b", "--url", "http://127.0.0.1:2")
    assert ok.returncode == 0, ok.stderr
    refused = run_spork("route", "add", "/x", "--service", "zzz", "-c", str(config))
    assert refused.returncode == 1
    assert refused.stderr.startswith("spork: not written")
    assert "Traceback" not in refused.stderr
    missing = run_spork("route", "add", "/x", "--service", "b", "-c", str(config) + ".nope")
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
