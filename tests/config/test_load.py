"""Loading gateway.toml: schema errors, ${VAR} interpolation, and every error's place."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

import pytest
import tomli_w
from pydantic import BaseModel

from spork_cli.config import load
from spork_cli.config.diagnostics import Diagnostic
from spork_cli.config.load import MAX_FILE_SIZE, load_config, load_file, parse_text, read_text
from spork_cli.config.model import GatewayConfig
from spork_cli.errors import ConfigError, UsageError

FILE = "gateway.toml"


def parse(text: str, env: dict[str, str] | None = None) -> list[Diagnostic]:
    return parse_text(textwrap.dedent(text), FILE, env or {}).diagnostics


def where(d: Diagnostic) -> tuple[str, str, str, int, int]:
    return (d.code, d.severity, d.path, d.line, d.column)


SERVICE = """\
[[services]]
name = "users"
endpoints = ["http://127.0.0.1:9000"]
"""

# --- one case per schema diagnostic -------------------------------------------------------------

# (toml, [(code, severity, path, line, column)], hint or None)
SCHEMA_CASES: dict[str, tuple[str, list[tuple[str, str, str, int, int]], str | None]] = {
    "unknown-key-top-level-table": (
        """\
        [server]
        port = 8080

        [sever]
        host = "0.0.0.0"
        """,
        [("unknown-key", "error", "sever", 4, 2)],
        "did you mean 'server'?",
    ),
    "unknown-key-strip_prefx": (
        """\
        [[services]]
        name = "users"
        endpoints = ["http://127.0.0.1:9000"]

        [[routes]]
        path = "/api"
        service = "users"
        strip_prefx = true
        """,
        [("unknown-key", "error", "routes[0].strip_prefx", 8, 1)],
        "did you mean 'strip_prefix'?",
    ),
    "unknown-key-in-inline-table": (
        """\
        [[routes]]
        path = "/api"
        service = "users"
        rate_limit = { requests = 10, per = "1m", bursst = 5 }
        """,
        [("unknown-key", "error", "routes[0].rate_limit.bursst", 4, 43)],
        "did you mean 'burst'?",
    ),
    "unknown-key-in-inline-table-in-inline-table": (
        """\
        [[routes]]
        path = "/api"
        service = "users"
        rate_limit = { requests = 1, per = "1s", authenticated = { requests = 2, pr = "1s" } }
        """,
        [
            ("missing-key", "error", "routes[0].rate_limit.authenticated", 4, 42),
            ("unknown-key", "error", "routes[0].rate_limit.authenticated.pr", 4, 74),
        ],
        None,
    ),
    "unknown-key-in-routes-sub-table": (
        """\
        [[routes]]
        path = "/a"
        service = "users"

        [[routes]]
        path = "/b"
        service = "users"

        [routes.cache]
        tll = "5s"
        """,
        [("unknown-key", "error", "routes[1].cache.tll", 10, 1)],
        "did you mean 'ttl'?",
    ),
    "unknown-key-in-nested-array-of-tables": (
        """\
        [[services]]
        name = "a"
        endpoints = ["http://127.0.0.1:9000"]

        [[services]]
        name = "b"

        [[services.endpoints]]
        url = "http://127.0.0.1:9001"

        [[services.endpoints]]
        url = "http://127.0.0.1:9002"
        wieght = 3
        """,
        [("unknown-key", "error", "services[1].endpoints[1].wieght", 13, 1)],
        "did you mean 'weight'?",
    ),
    "unknown-key-quoted": (
        """\
        [[routes]]
        "path" = "/api"
        'service' = "users"
        "strip_prefx" = true
        """,
        [("unknown-key", "error", "routes[0].strip_prefx", 4, 1)],
        "did you mean 'strip_prefix'?",
    ),
    "unknown-key-dotted": (
        """\
        [[routes]]
        path = "/api"
        service = "users"
        rate_limit.requests = 5
        rate_limit.per = "1s"
        rate_limit.bursts = 2
        """,
        [("unknown-key", "error", "routes[0].rate_limit.bursts", 6, 12)],
        "did you mean 'burst'?",
    ),
    "unknown-key-as-header-prefix": (
        """\
        [server]
        port = 8080

        [servr.timeouts]
        keepalive = "5s"
        """,
        [("unknown-key", "error", "servr", 4, 2)],
        "did you mean 'server'?",
    ),
    "unknown-key-no-hint": (
        """\
        zebra = 1
        """,
        [("unknown-key", "error", "zebra", 1, 1)],
        None,
    ),
    "unknown-key-that-looks-like-a-location-marker": (
        """\
        "[x]" = 1

        [server]
        "list[str]" = 2
        """,
        [
            ("unknown-key", "error", "[x]", 1, 1),
            ("unknown-key", "error", "server.list[str]", 4, 1),
        ],
        None,
    ),
    "missing-key-in-array-table": (
        """\
        [server]
        port = 8080

        [[routes]]
        path = "/api"
        """,
        [("missing-key", "error", "routes[0]", 4, 3)],
        None,
    ),
    "missing-key-in-inline-table": (
        """\
        [[routes]]
        path = "/api"
        service = "users"
          rate_limit = { requests = 10 }
        """,
        [("missing-key", "error", "routes[0].rate_limit", 4, 3)],
        None,
    ),
    "missing-key-in-sub-table": (
        """\
        [[routes]]
        path = "/api"
        service = "users"

        [routes.rate_limit]
        per = "1m"
        """,
        [("missing-key", "error", "routes[0].rate_limit", 5, 9)],
        None,
    ),
    "wrong-type-string-for-int": (
        """\
        [server]
        port = "eighty"
        """,
        [("wrong-type", "error", "server.port", 2, 8)],
        None,
    ),
    "wrong-type-table-for-string": (
        """\
        [server]
        host = { address = "0.0.0.0" }
        """,
        [("wrong-type", "error", "server.host", 2, 8)],
        None,
    ),
    "wrong-type-array-for-table": (
        """\
        server = [8080]
        """,
        [("wrong-type", "error", "server", 1, 10)],
        None,
    ),
    "wrong-type-float-for-int": (
        """\
        [server]
        workers = 2.5
        """,
        [("wrong-type", "error", "server.workers", 2, 11)],
        None,
    ),
    "wrong-type-in-multi-line-array": (
        """\
        [server]
        trusted_proxies = [
          "10.0.0.0/8",
          # a comment between items
          8,
        ]
        """,
        [("wrong-type", "error", "server.trusted_proxies[1]", 5, 3)],
        None,
    ),
    "out-of-range-port": (
        """\
        [server]
        port = 70000
        """,
        [("out-of-range", "error", "server.port", 2, 8)],
        None,
    ),
    "out-of-range-in-multi-line-array-of-inline-tables": (
        """\
        [[services]]
        name = "users"
        endpoints = [
          { url = "http://127.0.0.1:9000" },
          { url = "http://127.0.0.1:9001", weight = 5000 },
        ]
        """,
        [("out-of-range", "error", "services[0].endpoints[1].weight", 5, 45)],
        None,
    ),
    "invalid-value-literal": (
        """\
        [state]
        backend = "redsi"
        """,
        [("invalid-value", "error", "state.backend", 2, 11)],
        "did you mean 'redis'?",
    ),
    "invalid-value-pattern": (
        """\
        [[routes]]
        path = "api"
        service = "users"
        """,
        [("invalid-value", "error", "routes[0].path", 2, 8)],
        None,
    ),
    "invalid-value-duration": (
        """\
        [[routes]]
        path = "/api"
        service = "users"

        [routes.rate_limit]
        requests = 10
        per = "1 minute"
        """,
        [("invalid-value", "error", "routes[0].rate_limit.per", 7, 7)],
        None,
    ),
    "invalid-value-method-in-multi-line-array": (
        """\
        [[routes]]
        path = "/api"
        service = "users"
        methods = [
            "GET",
            "FETCH",
        ]
        """,
        [("invalid-value", "error", "routes[0].methods[1]", 6, 5)],
        None,
    ),
    "env-missing": (
        """\
        [auth]
        secret = "${SPORK_TEST_UNSET_SECRET}"
        """,
        [("env-missing", "error", "auth.secret", 2, 10)],
        "set it, or give a default: ${SPORK_TEST_UNSET_SECRET:-value}",
    ),
    "env-missing-in-array": (
        """\
        [server]
        trusted_proxies = ["10.0.0.0/8", "${SPORK_TEST_UNSET_PROXY}"]
        """,
        [("env-missing", "error", "server.trusted_proxies[1]", 2, 34)],
        None,
    ),
    "toml-syntax": (
        """\
        [server]
        port = 80 80
        """,
        [("toml-syntax", "error", "", 2, 11)],
        None,
    ),
    "toml-syntax-unclosed-header": (
        """\
        [server
        port = 80
        """,
        [("toml-syntax", "error", "", 1, 8)],
        None,
    ),
    "toml-syntax-integer-too-long": (
        "n = " + "1" * 5000 + "\n",
        [("toml-syntax", "error", "", 1, 1)],
        None,
    ),
    "encoding": (
        '[server]\nhost = "caf\udce9"\n',
        [("encoding", "error", "", 2, 12)],
        None,
    ),
    "encoding-nul": (
        "[server]\nport = 1\x00\n",
        [("encoding", "error", "", 2, 9)],
        None,
    ),
    "too-deep-arrays": (
        "a = " + "[" * 100_000 + "]" * 100_000 + "\n",
        [("too-deep", "error", "", 1, 1)],
        None,
    ),
    "too-deep-inline-tables": (
        "a = " + "{ b = " * 100_000 + "1" + " }" * 100_000 + "\n",
        [("too-deep", "error", "", 1, 1)],
        None,
    ),
}


@pytest.mark.parametrize(
    ("text", "expected", "hint"), list(SCHEMA_CASES.values()), ids=list(SCHEMA_CASES)
)
def test_schema_diagnostic_code_path_and_position(
    text: str, expected: list[tuple[str, str, str, int, int]], hint: str | None
) -> None:
    found = sorted(parse(text), key=lambda d: (d.line, d.column))
    assert [where(d) for d in found] == expected
    assert all(d.file == FILE for d in found)
    if hint is not None:
        assert found[-1].hint == hint


def test_did_you_mean_names_the_misspelt_key() -> None:
    (d,) = parse(
        """\
        [[routes]]
        path = "/api"
        service = "users"
        strip_prefx = true
        """
    )
    assert d.message == "unknown key 'strip_prefx'"
    assert d.hint == "did you mean 'strip_prefix'?"
    assert "strip_prefx" in d.one_line() and "strip_prefix" in d.one_line()


def test_wrong_type_message_says_what_was_expected_and_found() -> None:
    (d,) = parse('[server]\nport = "eighty"\n')
    assert d.message == 'expected an integer, found the string "eighty"'
    (d,) = parse("server = [8080]\n")
    assert d.message == "expected a table, found an array"


def test_bare_number_duration_suggests_a_unit() -> None:
    (d,) = parse(
        """\
        [[routes]]
        path = "/api"
        service = "users"
        rate_limit = { requests = 10, per = 60 }
        """
    )
    assert (d.code, d.path) == ("invalid-value", "routes[0].rate_limit.per")
    assert '"60s"' in d.message


def test_missing_key_names_the_key() -> None:
    (d,) = parse('[[routes]]\npath = "/api"\n')
    assert d.message == "missing required key 'service'"


def test_a_second_unknown_key_is_reported_at_its_own_line() -> None:
    found = parse(
        """\
        [[routes]]
        path = "/a"
        service = "users"
        colour = "red"

        [[routes]]
        path = "/b"
        service = "users"
        colour = "blue"
        """
    )
    assert [where(d) for d in found] == [
        ("unknown-key", "error", "routes[0].colour", 4, 1),
        ("unknown-key", "error", "routes[1].colour", 9, 1),
    ]


# --- valid input ------------------------------------------------------------------------------

VALID = """\
#:schema ./gateway.schema.json
[server]
host = "127.0.0.1"
port = 8080
max_body = "1MiB"
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]

[server.timeouts]
request = "1m30s"

[state]
backend = "memory"
timeout = "250ms"

[auth]
algorithms = ["HS256"]
secret = "0123456789abcdef0123456789abcdef"

[[services]]
name = "users"
endpoints = [
  "http://127.0.0.1:9000",
  { url = "http://127.0.0.1:9001", weight = 3 },
]
balance = "weighted"

[services.breaker]
failures = 3

[[routes]]
path = "/api/users"
service = "users"
methods = ["get", "POST"]
auth = "required"
rate_limit = { requests = 100, per = "1m", authenticated = { requests = 1000, per = "1m" } }

[routes.cache]
ttl = "5s"
"""


def test_valid_config_loads_without_diagnostics() -> None:
    loaded = parse_text(VALID, FILE, {})
    assert loaded.diagnostics == []
    config = loaded.config
    assert config is not None
    assert config.server.max_body == 1024 * 1024
    assert config.server.timeouts.request == 90.0
    assert config.state.timeout == 0.25
    assert config.services[0].endpoints[1].weight == 3
    assert config.routes[0].methods == ["GET", "POST"]
    assert config.routes[0].rate_limit is not None
    assert config.routes[0].rate_limit.per == 60.0


def test_valid_config_passes_load_config(tmp_path: Path) -> None:
    file = tmp_path / FILE
    file.write_text(VALID)
    config = load_config(file, env={})
    assert isinstance(config, GatewayConfig)
    assert [s.name for s in config.services] == ["users"]


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# only a comment\n", "# one\n   # two, indented\n\n# three"],
    ids=["empty", "blank-lines", "one-comment", "comments-no-final-newline"],
)
def test_empty_or_comment_only_file_is_an_error_at_its_start(text: str) -> None:
    loaded = parse_text(text, FILE, {})
    assert [where(d) for d in loaded.diagnostics] == [("empty-file", "error", "", 1, 1)]
    assert loaded.config is None


def test_a_file_with_one_empty_table_is_not_empty() -> None:
    loaded = parse_text("# defaults are fine\n[server]\n", FILE, {})
    assert loaded.diagnostics == []
    assert loaded.config == GatewayConfig()


def test_file_without_final_newline_places_errors() -> None:
    found = parse_text('[server]\nport = "x"', FILE, {}).diagnostics
    assert [where(d) for d in found] == [("wrong-type", "error", "server.port", 2, 8)]


def test_crlf_line_endings_keep_positions() -> None:
    text = '[server]\r\nhost = "h"\r\n\r\n[[routes]]\r\npath = "/a"\r\nservice = "users"\r\n'
    text += "strip_prefx = true\r\nmethods = [\r\n  'GET',\r\n  'FETCH',\r\n]\r\n"
    found = parse_text(text, FILE, {}).diagnostics
    assert sorted(where(d) for d in found) == [
        ("invalid-value", "error", "routes[0].methods[1]", 10, 3),
        ("unknown-key", "error", "routes[0].strip_prefx", 7, 1),
    ]


def test_crlf_toml_syntax_error_position() -> None:
    found = parse_text("[server]\r\nport = 80 80\r\n", FILE, {}).diagnostics
    assert [where(d) for d in found] == [("toml-syntax", "error", "", 2, 11)]


def test_binary_junk_is_an_encoding_error_at_the_first_bad_byte() -> None:
    junk = bytes(range(256)) * 4
    text = junk.decode("utf-8", errors="surrogateescape")
    (d,) = parse_text(text, FILE, {}).diagnostics
    assert where(d) == ("encoding", "error", "", 1, 1)  # the NUL at offset 0
    text = "ok = 1\n" + bytes(range(0x80, 0x100)).decode("utf-8", errors="surrogateescape")
    (d,) = parse_text(text, FILE, {}).diagnostics
    assert where(d) == ("encoding", "error", "", 2, 1)


def test_too_large_file_is_refused_before_parsing() -> None:
    text = "# padding\n" * (MAX_FILE_SIZE // 10 + 1)
    assert len(text) > MAX_FILE_SIZE
    found = parse_text(text, FILE, {}).diagnostics
    assert [where(d) for d in found] == [("too-large", "error", "", 1, 1)]
    assert "16 MiB" in found[0].message


def test_size_limit_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "MAX_FILE_SIZE", 100)
    at_limit = "[server]\n" + "#" * 90 + "\n"
    assert parse_text(at_limit, FILE, {}).diagnostics == []
    (d,) = parse_text(at_limit + "\n", FILE, {}).diagnostics
    assert d.code == "too-large"


def test_many_routes_are_valid() -> None:
    parts = [SERVICE]
    for i in range(5000):
        parts.append(f'[[routes]]\npath = "/r{i}"\nservice = "users"\n')
    loaded = parse_text("\n".join(parts), FILE, {})
    assert loaded.diagnostics == []
    assert loaded.config is not None and len(loaded.config.routes) == 5000


def test_error_in_the_last_of_many_routes_is_placed() -> None:
    parts = [f'[[routes]]\npath = "/r{i}"\nservice = "users"\n' for i in range(3000)]
    parts.append('[[routes]]\npath = "/last"\nservice = "users"\ntimeout = 5\n')
    found = parse_text("".join(parts), FILE, {}).diagnostics
    assert [where(d) for d in found] == [
        ("invalid-value", "error", "routes[3000].timeout", 3000 * 3 + 4, 11)
    ]


def test_deep_dotted_header_is_a_diagnostic() -> None:
    text = "[state.backend" + ".a" * 3000 + "]\n"
    found = parse_text(text, FILE, {}).diagnostics
    assert [where(d) for d in found] == [("invalid-value", "error", "state.backend", 1, 8)]


# --- ${VAR} ---------------------------------------------------------------------------------


def load_env(text: str, env: dict[str, str]) -> GatewayConfig:
    loaded = parse_text(textwrap.dedent(text), FILE, env)
    assert loaded.diagnostics == []
    assert loaded.config is not None
    return loaded.config


def test_env_value_replaces_the_reference() -> None:
    config = load_env('[server]\nhost = "${HOST}"\n', {"HOST": "0.0.0.0"})
    assert config.server.host == "0.0.0.0"


def test_env_default_used_when_unset() -> None:
    config = load_env('[server]\nhost = "${SPORK_TEST_UNSET:-10.0.0.1}"\n', {})
    assert config.server.host == "10.0.0.1"


def test_env_default_ignored_when_set() -> None:
    config = load_env('[server]\nhost = "${HOST:-10.0.0.1}"\n', {"HOST": "::1"})
    assert config.server.host == "::1"


def test_env_empty_default() -> None:
    config = load_env('[state]\nprefix = "spork${SUFFIX:-}"\n', {})
    assert config.state.prefix == "spork"


def test_env_string_port_coerces_to_int() -> None:
    config = load_env('[server]\nport = "${PORT:-8080}"\n', {})
    assert config.server.port == 8080
    config = load_env('[server]\nport = "${PORT:-8080}"\n', {"PORT": "9090"})
    assert config.server.port == 9090


def test_env_string_port_that_is_not_a_number_is_wrong_type() -> None:
    found = parse('[server]\nport = "${PORT}"\n', {"PORT": "http"})
    assert [where(d) for d in found] == [("wrong-type", "error", "server.port", 2, 8)]


def test_double_dollar_escapes_a_reference() -> None:
    config = load_env('[server]\nhost = "$${HOST}"\n', {"HOST": "never-used"})
    assert config.server.host == "${HOST}"


def test_several_references_in_one_value_and_in_arrays() -> None:
    config = load_env(
        """\
        [server]
        host = "${A}.${B:-b}.$${C}"
        trusted_proxies = ["${NET}/8", "127.0.0.1/32"]
        """,
        {"A": "a", "NET": "10.0.0.0"},
    )
    assert config.server.host == "a.b.${C}"
    assert config.server.trusted_proxies == ["10.0.0.0/8", "127.0.0.1/32"]


def test_env_value_is_not_expanded_again() -> None:
    config = load_env('[server]\nhost = "${A}"\n', {"A": "${B}", "B": "no"})
    assert config.server.host == "${B}"


def test_env_reference_in_a_key_is_left_alone() -> None:
    config = load_env('[auth.forward_claims]\n"${A}" = "X-${A}"\n', {"A": "Sub"})
    assert config.auth is not None
    assert config.auth.forward_claims == {"${A}": "X-Sub"}


def test_env_missing_names_the_variable() -> None:
    (d,) = parse('[auth]\nsecret = "${SPORK_TEST_UNSET_SECRET}"\n')
    assert "SPORK_TEST_UNSET_SECRET" in d.message
    assert d.message == "environment variable SPORK_TEST_UNSET_SECRET is not set"


def test_env_missing_means_no_config() -> None:
    loaded = parse_text('[auth]\nsecret = "${SPORK_TEST_UNSET}"\n', FILE, {})
    assert loaded.config is None


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPORK_TEST_HOST", "192.0.2.1")
    loaded = parse_text('[server]\nhost = "${SPORK_TEST_HOST}"\n', FILE)
    assert loaded.config is not None
    assert loaded.config.server.host == "192.0.2.1"


def test_interpolation_does_not_change_the_environment_mapping() -> None:
    env = {"A": "1"}
    parse_text('x = "${A}"\n', FILE, env)
    assert env == {"A": "1"}


# --- wrong types everywhere -------------------------------------------------------------------

REQUIRED: dict[str, dict[str, Any]] = {
    "Service": {"name": "users", "endpoints": [{"url": "http://127.0.0.1:9000"}]},
    "Endpoint": {"url": "http://127.0.0.1:9000"},
    "Route": {"path": "/api", "service": "users"},
    "RateLimit": {"requests": 1, "per": "1s"},
    "RateTier": {"requests": 1, "per": "1s"},
    "DenyRule": {"name": "rule", "path": "x"},
}


def _inner(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (Union, UnionType):
        return [a for a in get_args(annotation) if a is not NoneType]
    return [annotation]


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds, and whether it holds a list of them."""
    for arg in _inner(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg, False
        if get_origin(arg) is list:
            (item,) = get_args(arg)
            if isinstance(item, type) and issubclass(item, BaseModel):
                return item, True
    return None, False


def _wrong_value(annotation: Any) -> Any:
    """A TOML value of a type the field can never take."""
    model, _ = _model_of(annotation)
    if model is not None:
        return "not a table"
    if any(get_origin(arg) is dict for arg in _inner(annotation)):
        return [1, 2]
    return {"wrong": 1}


def _field_cases(
    model: type[BaseModel], path: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], Any]]:
    cases: list[tuple[tuple[str | int, ...], Any]] = []
    for name, info in model.model_fields.items():
        here = (*path, name)
        cases.append((here, _wrong_value(info.annotation)))
        inner, is_list = _model_of(info.annotation)
        if inner is not None:
            cases.extend(_field_cases(inner, (*here, 0) if is_list else here))
    return cases


def _document(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """The smallest document that holds ``value`` at ``path`` and is otherwise complete."""
    doc: dict[str, Any] = {}
    node: Any = doc
    model: type[BaseModel] | None = GatewayConfig
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(part, int):
            continue
        assert model is not None
        inner, is_list = _model_of(model.model_fields[part].annotation)
        if last:
            node[part] = value
        elif is_list:
            assert inner is not None
            item = dict(REQUIRED.get(inner.__name__, {}))
            node[part] = [item]
            node = item
        else:
            assert inner is not None
            child = dict(REQUIRED.get(inner.__name__, {}))
            node[part] = child
            node = child
        model = inner
    return doc


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


FIELD_CASES = _field_cases(GatewayConfig)


def test_every_model_field_is_covered() -> None:
    dotted = {_dotted(path) for path, _ in FIELD_CASES}
    assert len(FIELD_CASES) > 150
    for field in ("server.port", "routes[0].rate_limit.per", "services[0].endpoints[0].weight"):
        assert field in dotted


@pytest.mark.parametrize(
    ("path", "value"), FIELD_CASES, ids=[_dotted(path) for path, _ in FIELD_CASES]
)
def test_wrong_type_for_every_field_is_reported_there(
    path: tuple[str | int, ...], value: Any
) -> None:
    text = tomli_w.dumps(_document(path, value))
    loaded = parse_text(text, FILE, {})
    assert loaded.config is None
    dotted = _dotted(path)
    found = [d for d in loaded.diagnostics if d.path == dotted]
    assert found, (text, loaded.diagnostics)
    assert {d.code for d in found} <= {"wrong-type", "invalid-value"}
    lines = text.split("\n")
    key = str(path[-1])
    for d in found:
        # The diagnostic points at the line that sets this very field.
        assert key in lines[d.line - 1], (text, d)
        assert 1 <= d.column <= len(lines[d.line - 1])


def test_every_section_wrong_at_once() -> None:
    doc: dict[str, Any] = {}
    for name, info in GatewayConfig.model_fields.items():
        doc[name] = _wrong_value(info.annotation)
    text = tomli_w.dumps(doc)
    loaded = parse_text(text, FILE, {})
    assert loaded.config is None
    assert {d.path for d in loaded.diagnostics} == set(GatewayConfig.model_fields)
    assert {d.code for d in loaded.diagnostics} == {"wrong-type"}


# --- files ------------------------------------------------------------------------------------


def test_load_file_reads_and_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "my.toml"
    file.write_text('[server]\nport = "x"\n')
    loaded = load_file(file, env={})
    assert [d.file for d in loaded.diagnostics] == [str(file)]


def test_load_config_raises_config_error_with_every_error(tmp_path: Path) -> None:
    file = tmp_path / FILE
    file.write_text('[server]\nport = "x"\nhost = 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(file, env={})
    assert info.value.exit_code == 1
    assert sorted(where(d) for d in info.value.diagnostics) == [
        ("wrong-type", "error", "server.host", 3, 8),
        ("wrong-type", "error", "server.port", 2, 8),
    ]
    assert str(info.value).startswith(f"{file}:")
    assert str(info.value).endswith("[wrong-type] (and 1 more)")


def test_load_config_includes_semantic_errors(tmp_path: Path) -> None:
    file = tmp_path / FILE
    file.write_text('[[routes]]\npath = "/"\nservice = "nowhere"\n')
    with pytest.raises(ConfigError) as info:
        load_config(file, env={})
    assert [d.code for d in info.value.diagnostics] == ["unknown-service"]


def test_load_config_ignores_warnings(tmp_path: Path) -> None:
    file = tmp_path / FILE
    file.write_text(SERVICE)  # an unused service is only a warning
    assert load_config(file, env={}).services[0].name == "users"


def test_read_text_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        read_text(tmp_path / "absent.toml")


def test_read_text_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        read_text(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_read_text_unreadable_file(tmp_path: Path) -> None:
    file = tmp_path / FILE
    file.write_text("")
    file.chmod(0)
    with pytest.raises(UsageError, match="cannot read"):
        read_text(file)


def test_read_text_keeps_invalid_utf8_for_the_encoding_check(tmp_path: Path) -> None:
    file = tmp_path / FILE
    file.write_bytes(b'[server]\nhost = "\xff"\n')
    loaded = load_file(file, env={})
    assert [where(d) for d in loaded.diagnostics] == [("encoding", "error", "", 2, 9)]
