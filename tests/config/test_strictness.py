"""Corner cases of the loader and the semantic checks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from spork_cli.config.lint import redis_url_problem
from spork_cli.config.load import check_file, parse_text, read_text

SERVICE = '[[services]]\nname = "a"\nendpoints = ["http://127.0.0.1:1"]\n'


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[server]\nport = true\n", "server.port"),
        (
            '[[services]]\nname = "a"\nendpoints = [{ url = "http://x", weight = true }]\n',
            "services[0].endpoints[0].weight",
        ),
    ],
)
def test_booleans_are_not_numbers(text: str, path: str) -> None:
    loaded = parse_text(text, "g.toml")
    assert loaded.config is None
    assert [d.path for d in loaded.diagnostics] == [path]
    assert "boolean" in loaded.diagnostics[0].message


def test_strings_still_read_as_numbers_for_environment_values() -> None:
    loaded = parse_text('[server]\nport = "${PORT:-8081}"\n', "g.toml", env={})
    assert loaded.config is not None and loaded.config.server.port == 8081


def test_missing_variable_in_a_number_gives_one_error_not_two() -> None:
    loaded = parse_text('[server]\nport = "${PORT}"\n', "g.toml", env={})
    assert [(d.code, d.path) for d in loaded.diagnostics] == [("env-missing", "server.port")]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("redis+cluster://10.0.0.1:7000,10.0.0.2:7001", True),
        ("redis+cluster://10.0.0.1:7000,nohost", False),
        ("redis+cluster://10.0.0.1:7000,10.0.0.2:99999", False),
        ("redis+sentinel://h1:26379,h2:26379/mymaster", True),
    ],
)
def test_multi_host_redis_urls(url: str, ok: bool) -> None:
    assert (redis_url_problem(url) is None) is ok


def test_route_shadowed_by_several_earlier_routes_together(tmp_path: Path) -> None:
    text = SERVICE + textwrap.dedent(
        """
        [[routes]]
        path = "/x"
        service = "a"
        methods = ["GET"]

        [[routes]]
        path = "/x"
        service = "a"
        methods = ["POST"]

        [[routes]]
        path = "/x"
        service = "a"
        methods = ["GET", "POST"]
        """
    )
    file = tmp_path / "g.toml"
    file.write_text(text)
    found = [(d.code, d.path) for d in check_file(str(file), env={}).diagnostics]
    assert ("shadowed-route", "routes[2].path") in found
    assert ("shadowed-route", "routes[1].path") not in found


def test_endless_file_is_cut_at_the_limit_not_read_forever() -> None:
    text = read_text("/dev/zero")
    loaded = parse_text(text, "/dev/zero")
    assert [d.code for d in loaded.diagnostics] == ["too-large"]


def test_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    file = tmp_path / "g.toml"
    file.write_bytes(b"\xef\xbb\xbf[server]\nport = 1\n")
    loaded = check_file(str(file), env={})
    assert loaded.config is not None and loaded.config.server.port == 1


@pytest.mark.parametrize(
    ("alg", "size", "weak"),
    [("HS256", 32, False), ("HS384", 32, True), ("HS384", 48, False), ("HS512", 63, True)],
)
def test_hmac_secret_length_follows_the_strongest_algorithm(
    tmp_path: Path, alg: str, size: int, weak: bool
) -> None:
    file = tmp_path / "g.toml"
    file.write_text(f'[auth]\nalgorithms = ["{alg}"]\nsecret = "{"k" * size}"\n')
    codes = [d.code for d in check_file(str(file), env={}).diagnostics]
    assert ("weak-secret" in codes) is weak


def test_a_pem_key_is_not_an_hmac_secret(tmp_path: Path) -> None:
    file = tmp_path / "g.toml"
    pem = "-----BEGIN PUBLIC KEY-----" + "A" * 40
    file.write_text(f'[auth]\nalgorithms = ["HS256"]\nsecret = "{pem}"\n')
    found = [(d.code, d.path, d.line) for d in check_file(str(file), env={}).diagnostics]
    assert ("key-as-secret", "auth.secret", 3) in found
