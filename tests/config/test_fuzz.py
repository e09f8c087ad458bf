"""Generated documents and text: loading, linting and rendering never raise, positions fit."""

from __future__ import annotations

import contextlib
import io
import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from spork_cli.cli import app
from spork_cli.cli.check import github_annotation, render_text
from spork_cli.config import model
from spork_cli.config.diagnostics import Diagnostic
from spork_cli.config.lint import lint
from spork_cli.config.load import parse_text
from spork_cli.config.loaded import Loaded

FIELD_NAMES = sorted(
    {
        name
        for obj in vars(model).values()
        if isinstance(obj, type) and issubclass(obj, BaseModel)
        for name in obj.model_fields
    }
)
PLAUSIBLE = [
    "users", "/api", "/", "http://127.0.0.1:9000", "https://[::1]:8443", "ftp://x",
    "http://[::1", "redis://127.0.0.1:6379/0", "redis+sentinel://a:1,b:2/m", "memory",
    "redis", "GET", "post", "required", "optional", "none", "weighted", "HS256", "ES256",
    "1s", "250ms", "0s", "1m30s", "5m", "1h", "1MiB", "512KiB", "0.0.0.0", "127.0.0.1",
    "10.0.0.0/8", "*", "user", "ip", "header:X-Key", "(", "[a-z", "^/ok", "${HOME}",
    "${SPORK_FUZZ_UNSET}", "${SPORK_FUZZ_UNSET:-8080}", "$${LITERAL}", "keys/public.pem",
    "schema.json", "0123456789abcdef0123456789abcdef", "\x00", "\u2028", "[bold]",
]  # fmt: skip

keys = st.one_of(
    st.sampled_from(FIELD_NAMES),
    st.sampled_from(["server", "routes", "services", "auth", "rate_limit", "per", "path"]),
    st.text(max_size=8),
)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-2, max_value=70_000),
    st.floats(),
    st.text(max_size=24),
    st.sampled_from(PLAUSIBLE),
    st.dates(),
    st.datetimes(),
    st.times(),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=15,
)
random_documents = st.dictionaries(keys, values, max_size=8)


def _near(choices: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes any scalar, array or table."""
    return st.one_of(
        st.sampled_from(choices),
        st.sampled_from(choices),
        scalars,
        st.lists(scalars, max_size=2),
        st.dictionaries(keys, scalars, max_size=2),
    )


endpoint = st.one_of(
    _near(["http://127.0.0.1:9000", "http://127.0.0.1:9001", "ftp://x", "http://[::1"]),
    st.fixed_dictionaries(
        {"url": _near(["http://127.0.0.1:9000", "https://x:0"])},
        optional={"weight": _near([0, 1, 5, 1001])},
    ),
)
service = st.fixed_dictionaries(
    {"name": _near(["users", "orders", "bad name"]), "endpoints": st.lists(endpoint, max_size=3)},
    optional={
        "balance": _near(["weighted", "round_robin", "random"]),
        "timeout": _near(["1s", "0s", 5]),
        "breaker": st.dictionaries(
            st.sampled_from(["failures", "failure_ratio", "cooldown", "max_cooldown", "x"]),
            _near([0, 1, 1.5, "1s", "0s"]),
            max_size=4,
        ),
        "health": st.dictionaries(
            st.sampled_from(["interval", "timeout", "healthy_threshold", "path"]),
            _near(["1s", "5s", 0, 3, "/health"]),
            max_size=4,
        ),
    },
)
tier = st.fixed_dictionaries(
    {"requests": _near([0, 1, 100]), "per": _near(["1s", "0s", "1m", 60])},
    optional={"burst": _near([0, 5])},
)
route = st.fixed_dictionaries(
    {"path": _near(["/api", "/", "api"]), "service": _near(["users", "orders", "user"])},
    optional={
        "methods": st.lists(_near(["GET", "post", "FETCH"]), max_size=3),
        "auth": _near(["required", "optional", "none", "maybe"]),
        "roles": st.lists(_near(["admin"]), max_size=2),
        "name": _near(["api", "api"]),
        "strip_prefx": st.booleans(),
        "rate_limit": st.one_of(
            tier,
            tier.map(lambda t: {**t, "key": ["user"]}),
            tier.map(lambda t: {**t, "authenticated": {"requests": 0, "per": "1s"}}),
        ),
        "cache": st.fixed_dictionaries({}, optional={"ttl": _near(["5s", 5])}),
        "body_schema": _near(["schema.json", "missing.json"]),
        "cors": st.fixed_dictionaries(
            {}, optional={"allow_origins": _near(["*"]), "allow_credentials": st.booleans()}
        ),
    },
)
structured_documents = st.fixed_dictionaries(
    {},
    optional={
        "server": st.dictionaries(
            st.sampled_from(["host", "port", "workers", "max_body", "trusted_proxies", "prt"]),
            _near(["0.0.0.0", 8080, 4, "1MiB", ["10.0.0.0/8", "nope"], "${SPORK_FUZZ_UNSET}"]),
            max_size=4,
        ),
        "admin": st.dictionaries(
            st.sampled_from(["host", "port", "token"]), _near(["0.0.0.0", 8080, "t"]), max_size=3
        ),
        "state": st.dictionaries(
            st.sampled_from(["backend", "url", "prefix"]),
            _near(["redis", "memory", "redis://h/x", "http://h", "spork"]),
            max_size=3,
        ),
        "auth": st.dictionaries(
            st.sampled_from(["algorithms", "secret", "public_key_file", "jwks_file", "jwks_url"]),
            _near([["HS256"], ["ES256"], "short", "keys/public.pem", "jwks.json", "http://[x"]),
            max_size=3,
        ),
        "deny": st.lists(
            st.dictionaries(
                st.sampled_from(["name", "path", "header", "value"]),
                _near(["rule", "(", "^/x", "User-Agent"]),
                max_size=3,
            ),
            max_size=2,
        ),
        "services": st.lists(service, max_size=3),
        "routes": st.lists(route, max_size=4),
    },
)


def dumps(document: dict[str, Any]) -> str:
    try:
        return tomli_w.dumps(document)
    except (TypeError, ValueError):
        assume(False)
        raise  # unreachable: assume(False) stops the example


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for generated files, with a few of the files configs may point at."""
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "schema.json").write_text('{"type": "object"}')
    (directory / "jwks.json").write_text('{"keys": []}')
    (directory / "keys").mkdir()
    (directory / "keys" / "public.pem").write_text("not a key")
    return directory


def assert_in_bounds(text: str, diagnostics: list[Diagnostic]) -> None:
    lines = text.split("\n")
    for d in diagnostics:
        assert 1 <= d.line <= len(lines), (d, len(lines))
        assert 1 <= d.column <= len(lines[d.line - 1]) + 1, (d, lines[d.line - 1])
        assert d.severity in ("error", "warning")
        assert d.code and d.message


def everything(text: str, file: str) -> tuple[Loaded, list[Diagnostic]]:
    """Load, lint, and render ``text`` every way the CLI does; return what was found."""
    loaded = parse_text(text, file, {"HOME": "/root"})
    found = list(loaded.diagnostics)
    if loaded.config is not None:
        found += lint(loaded)
    loaded.diagnostics = found
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        render_text([loaded], strict=True)
    assert "Traceback" not in out.getvalue()
    for d in found:
        annotation = github_annotation(d)
        assert "\n" not in annotation and "\r" not in annotation
    json.dumps([d.as_dict() for d in found])
    return loaded, found


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(document=random_documents)
def test_random_documents_never_raise(workdir: Path, document: dict[str, Any]) -> None:
    text = dumps(document)
    loaded, found = everything(text, str(workdir / "gateway.toml"))
    assert_in_bounds(text, found)
    assert (loaded.config is None) == any(
        d.severity == "error" for d in loaded.diagnostics if d.code in _SCHEMA_CODES
    )


_SCHEMA_CODES = {
    "unknown-key", "missing-key", "wrong-type", "out-of-range", "invalid-value", "env-missing",
    "toml-syntax", "encoding", "too-large", "too-deep", "empty-file",
}  # fmt: skip


@FUZZ
@given(document=structured_documents)
def test_structured_documents_never_raise(workdir: Path, document: dict[str, Any]) -> None:
    text = dumps(document)
    _, found = everything(text, str(workdir / "gateway.toml"))
    assert_in_bounds(text, found)


@FUZZ
@given(text=st.text())
def test_random_text_never_raises(workdir: Path, text: str) -> None:
    _, found = everything(text, str(workdir / "gateway.toml"))
    assert_in_bounds(text, found)


TOMLISH = string.ascii_lowercase[:6] + string.digits[:4] + "[]{}=\"'#., \n\t\r_-$:\\"


@FUZZ
@given(text=st.text(alphabet=TOMLISH, max_size=120))
def test_toml_like_text_never_raises(workdir: Path, text: str) -> None:
    _, found = everything(text, str(workdir / "gateway.toml"))
    assert_in_bounds(text, found)


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_never_raise(workdir: Path, data: bytes) -> None:
    text = data.decode("utf-8", errors="surrogateescape")
    _, found = everything(text, str(workdir / "gateway.toml"))
    assert_in_bounds(text, found)


@contextlib.contextmanager
def _file(workdir: Path, content: bytes) -> Iterator[Path]:
    file = workdir / "cli.toml"
    file.write_bytes(content)
    try:
        yield file
    finally:
        file.unlink()


@settings(max_examples=60, deadline=None)
@given(
    document=st.one_of(structured_documents, random_documents),
    fmt=st.sampled_from(["text", "json", "github"]),
    strict=st.booleans(),
)
def test_cli_never_shows_a_traceback(
    workdir: Path, document: dict[str, Any], fmt: str, strict: bool
) -> None:
    text = dumps(document)
    with _file(workdir, text.encode()) as file:
        args = ["check", "--format", fmt, str(file)] + (["--strict"] if strict else [])
        result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1)
    if fmt == "json":
        found = json.loads(result.stdout)
        failing = {"error", "warning"} if strict else {"error"}
        assert (result.exit_code == 1) == any(d["severity"] in failing for d in found)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=200))
def test_cli_on_random_bytes(workdir: Path, data: bytes) -> None:
    with _file(workdir, data) as file:
        result = CliRunner().invoke(app, ["check", str(file)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1)
