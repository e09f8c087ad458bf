"""What spork prints about a config never holds a secret: `spork check` in every format, and the
log line of a failed reload, for diagnostics on or near secret fields and URL credentials."""

from __future__ import annotations

import json
import re
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


# Secrets the lexical scan has to find in spite of how they are written: a key spelled with
# TOML escapes or as a dotted key, a URL whose separator is escaped or whose password holds a
# character that ends a URL in running text, and a header named like a key. Each maps to its
# file, the secrets it holds, and whether the file is refused (a warning alone is not).
ESCAPED_KEY = "SHORTSECRETVALUE1"
AUTH = '[auth]\nalgorithms = ["HS256"]\n'
SPELLED = {
    "a secret key spelled with a \\u escape": (
        f'{AUTH}"s\\u0065cret" = "{ESCAPED_KEY}"\n{SERVICE}{ROUTE}',
        [ESCAPED_KEY],
        True,
    ),
    "a secret key spelled with a \\U escape": (
        f'{AUTH}"\\U00000073ecret" = "{ESCAPED_KEY}"\n{SERVICE}{ROUTE}',
        [ESCAPED_KEY],
        True,
    ),
    "a token key spelled with a \\u escape": (
        f'[admin]\n"t\\u006fken" = 4815162342108\n{SERVICE}{ROUTE}',
        ["4815162342108"],
        True,
    ),
    "a dotted key with a quoted secret": (
        f'auth.algorithms = ["HS256"]\nauth."secret" = "{ESCAPED_KEY}"\n{SERVICE}{ROUTE}',
        [ESCAPED_KEY],
        True,
    ),
    "a dotted key with spaces around the dot": (
        f'auth . algorithms = ["HS256"]\nauth . secret = "{ESCAPED_KEY}"\n{SERVICE}{ROUTE}',
        [ESCAPED_KEY],
        True,
    ),
    "a dotted key with an escaped part and a literal-quoted one": (
        f'auth.algorithms = ["HS256"]\n"\\u0061uth".\'secret\' = "{ESCAPED_KEY}"\n{SERVICE}{ROUTE}',
        [ESCAPED_KEY],
        True,
    ),
    "state.url with escaped slashes (ignored: a warning)": (
        '[state]\nurl = "redis:\\u002f\\u002f:Hunter2RedisPass@127.0.0.1:6379/0"\n'
        f"{SERVICE}{ROUTE}",
        ["Hunter2RedisPass"],
        False,
    ),
    "an endpoint URL with escaped slashes": (
        '[[services]]\nname = "svc"\n'
        f'endpoints = ["http:\\u002f\\u002fuser:EndpointPass99@127.0.0.1:9"]\n{ROUTE}',
        ["EndpointPass99"],
        True,
    ),
    "an endpoint URL whose password holds a quote": (
        '[[services]]\nname = "svc"\n'
        f'endpoints = ["http://u:Pw\'EndPt99@127.0.0.1:9/x?y"]\n{ROUTE}',
        ["Pw'EndPt99", "EndPt99"],
        True,
    ),
    "an endpoint URL whose password holds a space, <, > and a backtick": (
        '[[services]]\nname = "svc"\n'
        f'endpoints = ["http://u:Pw EndPt<9>`Z@127.0.0.1:9/x?y"]\n{ROUTE}',
        ["EndPt<9>`Z", "EndPt"],
        True,
    ),
    "a literal-string URL whose password holds a double quote": (
        '[[services]]\nname = "svc"\n'
        f"endpoints = ['http://u:Pw\"EndPt99@127.0.0.1:9/x?y']\n{ROUTE}",
        ['Pw"EndPt99', "EndPt99"],
        True,
    ),
    "a header named like a key": (
        f"{SERVICE}{ROUTE}[routes.request_headers]\n"
        'set = { X-Service-Key = "UpstreamServiceKey123", X-User-Id = "x" }\n',
        ["UpstreamServiceKey123"],
        True,
    ),
    "headers named like a session, a signature, an auth value": (
        f"{SERVICE}{ROUTE}[routes.request_headers]\n"
        'set = { X-Session = "SessionValue123", X-Sig = "SignatureValue123", '
        'X-Upstream-Auth = "UpstreamAuth123", X-User-Id = "x" }\n',
        ["SessionValue123", "SignatureValue123", "UpstreamAuth123"],
        True,
    ),
}


def raw_places(file: Path) -> list[tuple[int, int, str]]:
    """Where the unmasked check finds something: the places the masked output must name."""
    from spork_cli.config.load import check_file

    return [(d.line, d.column, d.code) for d in check_file(str(file)).diagnostics]


def assert_same_places_text(text: str, printed: str, places: list[tuple[int, int, str]]) -> None:
    lines = text.splitlines()
    out = printed.splitlines()
    for line, column, _code in places:
        at = next(i for i, o in enumerate(out) if o.strip().startswith(f"{line} | "))
        shown = out[at].split(" | ", 1)[1]
        original = lines[line - 1]
        # Masked character for character: same length, every other character as written.
        assert len(shown) == len(original), (shown, original)
        assert all(s in (o, "*") for s, o in zip(shown, original, strict=True)), shown
        marker = out[at + 1]
        assert marker.index("^") - (marker.index("|") + 2) == column - 1


@pytest.mark.parametrize("output", ["text", "json", "github"])
@pytest.mark.parametrize("name", list(SPELLED))
def test_spork_check_finds_secrets_however_they_are_written(
    tmp_path: Path, name: str, output: str
) -> None:
    text, secrets, refused = SPELLED[name]
    file = tmp_path / "gateway.toml"
    file.write_text(text)
    places = raw_places(file)
    assert places, "each file has a diagnostic on the line of its secret"
    result = CliRunner().invoke(app, ["check", "-f", output, str(file)], env=PLAIN)
    assert result.exit_code == (1 if refused else 0), result.output
    printed = result.stdout + result.stderr
    assert [s for s in secrets if s in printed] == []
    if output == "text":
        assert_same_places_text(text, result.stdout, places)
    elif output == "json":
        found = json.loads(result.stdout)
        assert [(d["line"], d["column"], d["code"]) for d in found] == places
    else:
        shown = re.findall(r"line=(\d+),col=(\d+),title=spork ([a-z-]+)::", result.stdout, re.M)
        assert [(int(li), int(co), code) for li, co, code in shown] == places


@pytest.mark.parametrize("name", [name for name in SPELLED if SPELLED[name][2]])
def test_serve_refusing_a_file_with_such_secrets_names_none(tmp_path: Path, name: str) -> None:
    text, secrets, _refused = SPELLED[name]
    file = tmp_path / "gateway.toml"
    file.write_text(text)
    [(line, column, _code), *_] = raw_places(file)
    result = CliRunner().invoke(app, ["serve", "--no-reload", "-c", str(file)], env=PLAIN)
    assert isinstance(result.exception, UsageError), result.output
    printed = result.stdout + result.stderr + str(result.exception)
    assert f"{file}:{line}:{column}:" in printed
    assert [s for s in secrets if s in printed] == []


def test_a_masked_url_keeps_every_line_and_column() -> None:
    for text, _secrets, _refused in SPELLED.values():
        masked = Masker(text).source
        assert len(masked) == len(text)
        assert [i for i, c in enumerate(masked) if c == "\n"] == [
            i for i, c in enumerate(text) if c == "\n"
        ]
    # Written as it is read, only the credentials are masked; escaped, the whole string is.
    quote = SPELLED["an endpoint URL whose password holds a quote"][0]
    assert Masker(quote).source == quote.replace("Pw'EndPt99", "*" * 10)
    escaped = SPELLED["an endpoint URL with escaped slashes"][0]
    url = "http:\\u002f\\u002fuser:EndpointPass99@127.0.0.1:9"
    assert Masker(escaped).source == escaped.replace(url, "*" * len(url))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('[routes.request_headers]\nset."X-Api-\\u004bey" = "K3yValue99"\n', "K3yValue99"),
        ('[routes.request_headers.set]\n"X-\\u0053ession" = "S3ssion99"\n', "S3ssion99"),
        ("[[routes]]\nrequest_headers.set.'X-Sig' = \"Sig99\"\n", "Sig99"),
        ('[admin]\nt\\u006fken = "T0ken99"\n', "T0ken99"),  # not a key in TOML: still masked
        ('auth = { algorithms = ["HS256"], "s\\u0065cret" = "S3cret99" }\n', "S3cret99"),
        ('[admin]\n"""token""" = "T0ken99"\n', "T0ken99"),
        ('[[services]]\nendpoints = ["http://a",\n[admin]\ntoken = "T0ken99"\n', "T0ken99"),
        ('[auth]\nsecret = """\nMulti\\\n  Line99"""\n', "MultiLine99"),
        ("[session]\nid = 'Sess10nId99'\n", "Sess10nId99"),
    ],
)
def test_keys_are_read_as_toml_reads_them(text: str, value: str) -> None:
    masker = Masker(text)
    assert len(masker.source) == len(text)
    assert value[:5] not in masker.source
    assert masker.scrub(f"found {value!r}") == "found '[redacted]'"


def test_a_valid_config_counts_header_values_sent_under_a_secret_name(tmp_path: Path) -> None:
    from spork_cli.config.load import load_config
    from spork_cli.config.redact import Redactor

    file = tmp_path / "gateway.toml"
    file.write_text(
        f'{SERVICE}{ROUTE}[routes.request_headers]\nset = {{ X-Service-Key = "UpstreamKey123" }}\n'
    )
    redactor = Redactor(load_config(file))
    assert "UpstreamKey123" in redactor.secrets
    assert redactor.scrub("sent 'UpstreamKey123'") == "sent '[redacted]'"
    assert "UpstreamKey123" not in str(redactor.config_data())


def test_an_invalid_file_scrubs_every_secret_tomllib_reads() -> None:
    # Not valid (an unknown key), so only the file's own text tells what is secret.
    text = (
        '[auth]\nsecret = "Mixed\\u0041Escaped-secret"\nalgoritms = ["HS256"]\n'
        f'{SERVICE}{ROUTE}[routes.request_headers]\nset = {{ "X-Api-\\u004bey" = "K3yValue" }}\n'
    )
    masker = Masker(text)
    message = "found 'MixedAEscaped-secret' and 'K3yValue' and 'Mixed\\u0041Escaped-secret'"
    assert masker.scrub(message) == "found '[redacted]' and '[redacted]' and '[redacted]'"


def test_redact_and_mask_share_one_secret_name_rule() -> None:
    from spork_cli.config import mask, redact, secret_names

    assert mask.SECRET_NAME is secret_names.SECRET_NAME
    assert redact.SECRET_NAME is secret_names.SECRET_NAME
    for name in ["X-Service-Key", "X-Session", "X-Sig", "X-Upstream-Auth", "X-Pwd", "Cookie"]:
        assert secret_names.SECRET_NAME.search(name), name


def test_fields_the_model_types_as_plain_values_stay_readable() -> None:
    # Named like a secret, but not one: a route's auth mode, a rate limit's key, a cookie name.
    text = (
        '[auth]\ncookie = "session_jwt"\npublic_key_file = "/etc/spork/pub.pem"\n'
        f'{SERVICE}{ROUTE}auth = "required"\nrate_limit = {{ key = ["ip"], per = "1m" }}\n'
    )
    masker = Masker(text)
    assert masker.source == text
    assert masker.scrub("auth must be 'required'") == "auth must be 'required'"


async def test_a_failed_reload_of_a_url_with_a_quote_keeps_its_password(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork
) -> None:
    import aiohttp

    password = "Pw'Reload99"
    port, admin = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_toml(port, admin, {"svc": upstream.url}, {"/": "svc"}))
    server = await spork_server(config, port, admin)
    broken = f"http://u:{password}@127.0.0.1:9/x?y"
    replace_file(config, gateway_toml(port, admin, {"svc": broken}, {"/": "svc"}))
    event = "reload failed: config invalid, still serving the previous one"
    [failed] = await eventually(lambda: server.events(event), what="the failed reload's log line")
    assert "Reload99" not in server.logs() + server.stderr(), failed
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.admin_url}/api/reloads") as answer,
    ):
        reloads = await answer.text()
    assert "Reload99" not in reloads
    [entry] = json.loads(reloads)["reloads"]
    line = config.read_text().splitlines().index(f'endpoints = ["{broken}"]') + 1
    assert entry["result"] == "invalid"
    assert [(e["line"], e["column"], e["code"]) for e in entry["errors"]] == [
        (line, len('endpoints = ["'), "invalid-url")
    ]
    assert "http://u:[redacted]@127.0.0.1:9/x?y" in entry["errors"][0]["message"]
