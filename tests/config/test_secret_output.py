"""What spork prints about a config never holds a secret: `spork check` in every format, and the
log line of a failed reload, for diagnostics on or near secret fields and URL credentials."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from spork_cli.cli import app
from spork_cli.config.mask import Masker
from spork_cli.errors import UsageError
from tests.conftest import StartSpork
from tests.support import Upstream, eventually, free_ports, gateway_toml, replace_file

SECRET = "hunter2-very-secret-value"
PLAIN = {"FORCE_COLOR": None, "NO_COLOR": "1", "TERM": "dumb"}
SERVICE = '[[services]]\nname = "svc"\nendpoints = ["http://127.0.0.1:9000"]\n'
ROUTE = '[[routes]]\npath = "/"\nservice = "svc"\n'

# Each has a diagnostic on the line that holds the secret (its source line is shown) or one
# whose message quotes the value.
CONFIGS = {
    "auth.secret, unknown key beside it": (
        f'auth = {{ secret = "{SECRET}", algoritms = ["HS256"] }}\n{SERVICE}{ROUTE}'
    ),
    "admin.token, unterminated": f'[admin]\ntoken = "{SECRET}\n',
    "admin.token, wrong type": f"[admin]\ntoken = 4815162342108\n{SERVICE}{ROUTE}",
    "state.url with a password": (
        f'[state]\nbackend = "redis"\nurl = "redis://:{SECRET}@127.0.0.1:notaport/0"\n'
        f"{SERVICE}{ROUTE}"
    ),
    "endpoint URL with user:pass@": (
        f'[[services]]\nname = "svc"\nendpoints = ["http://bob:{SECRET}@127.0.0.1:x"]\n{ROUTE}'
    ),
    "credential header value": (
        f"{SERVICE}{ROUTE}"
        f'request_headers = {{ set = {{ Authorization = "Bearer {SECRET}" }}, bogus = 1 }}\n'
    ),
}


def secrets_of(name: str) -> list[str]:
    return ["4815162342108"] if "wrong type" in name else [SECRET]


@pytest.mark.parametrize("output", ["text", "json", "github"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_spork_check_never_prints_a_secret(tmp_path: Path, name: str, output: str) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text(CONFIGS[name])
    result = CliRunner().invoke(app, ["check", "-f", output, str(file)], env=PLAIN)
    assert result.exit_code == 1, result.output  # the diagnostic is still reported
    printed = result.stdout + result.stderr
    assert [s for s in secrets_of(name) if s in printed] == []


@pytest.mark.parametrize("command", [["serve", "--no-reload"], ["routes"], ["health"]])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_command_refusing_an_invalid_file_names_no_secret(
    tmp_path: Path, name: str, command: list[str]
) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text(CONFIGS[name])
    result = CliRunner().invoke(app, [*command, "-c", str(file)], env=PLAIN)
    # Refused with the one line the console entry point prints (exit 2).
    assert isinstance(result.exception, UsageError), result.output
    assert result.exception.exit_code == 2
    printed = result.stdout + result.stderr + str(result.exception)
    assert "spork check" in printed
    assert [s for s in secrets_of(name) if s in printed] == []


def test_masked_source_keeps_every_line_and_column() -> None:
    text = CONFIGS["credential header value"] + CONFIGS["endpoint URL with user:pass@"]
    masked = Masker(text).source
    assert masked == text.replace(SECRET, "*" * len(SECRET)).replace(
        "Bearer ", "*" * len("Bearer ")
    )


def test_a_bare_variable_reference_stays_readable() -> None:
    assert (
        Masker('[auth]\nsecret = "${JWT_SECRET}"\n').source == '[auth]\nsecret = "${JWT_SECRET}"\n'
    )


def test_the_text_format_points_at_the_same_column(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text(CONFIGS["auth.secret, unknown key beside it"])
    out = CliRunner().invoke(app, ["check", str(file)], env=PLAIN).stdout.splitlines()
    source = next(i for i, line in enumerate(out) if "algoritms" in line and "|" in line)
    marker = out[source + 1]
    column = out[source].index("algoritms")
    assert marker.index("^") == column


async def test_a_failed_reload_logs_no_secret(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork
) -> None:
    port, admin = free_ports(2)
    config = tmp_path / "gateway.toml"
    auth = f'[auth]\nsecret = "{SECRET}-0123456789"\n'
    config.write_text(gateway_toml(port, admin, {"svc": upstream.url}, {"/": "svc"}, extra=auth))
    server = await spork_server(config, port, admin)
    # An edit near the secret that breaks the file: an endpoint with credentials, misspelled.
    broken = f"http://bob:{SECRET}@127.0.0.1:notaport"
    replace_file(config, gateway_toml(port, admin, {"svc": broken}, {"/": "svc"}, extra=auth))
    event = "reload failed: config invalid, still serving the previous one"
    [failed] = await eventually(lambda: server.events(event), what="the failed reload's log line")
    assert SECRET not in server.logs() + server.stderr(), failed
