"""spork check on the listener's bounds: values that would refuse every client, or guard
against none, are reported at their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from spork_cli.config.load import check_file
from spork_cli.config.model import Server
from spork_cli.gateway.bounds import Bounds

BASE = """\
[[services]]
name = "users"
endpoints = ["http://127.0.0.1:9000"]

[[routes]]
path = "/api"
service = "users"
"""


def findings(tmp_path: Path, server: str) -> list[tuple[str, str, str, int]]:
    config = tmp_path / "gateway.toml"
    config.write_text(server + "\n" + BASE)
    return [(d.code, d.severity, d.path, d.line) for d in check_file(str(config)).diagnostics]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[server.timeouts]\nheader = "0s"\n',
            ("bound-range", "error", "server.timeouts.header", 2),
        ),
        (
            '[server.timeouts]\nbody_idle = "0ms"\n',
            ("bound-range", "error", "server.timeouts.body_idle", 2),
        ),
        (
            '[server]\nmax_header_size = "512B"\n',
            ("bound-range", "error", "server.max_header_size", 2),
        ),
        (
            '[server]\nmax_header_size = "4MiB"\n',
            ("bound-range", "warning", "server.max_header_size", 2),
        ),
    ],
)
def test_a_nonsense_bound_is_reported(
    tmp_path: Path, text: str, expected: tuple[str, str, str, int]
) -> None:
    assert findings(tmp_path, text) == [expected]


def test_the_default_bounds_and_sensible_ones_pass(tmp_path: Path) -> None:
    text = (
        '[server]\nmax_header_size = "64KiB"\nmax_connections = 4096\n\n'
        '[server.timeouts]\nheader = "5s"\nbody_idle = "1m"\n'
    )
    assert findings(tmp_path, text) == []
    assert findings(tmp_path, "") == []


def test_max_connections_below_one_is_a_schema_error(tmp_path: Path) -> None:
    [(_, severity, path, line)] = findings(tmp_path, "[server]\nmax_connections = 0\n")
    assert (severity, path, line) == ("error", "server.max_connections", 2)


def test_the_listener_is_bounded_by_default() -> None:
    # What a gateway.toml without [server] bounds gets: a slow or oversized client is cut off.
    assert Bounds.of(Server()) == Bounds(
        header_timeout=10.0,
        body_idle=30.0,
        body_total=60.0,
        max_header_size=32 * 1024,
        max_connections=1024,
    )
    assert Server().timeouts.keepalive == 75.0
