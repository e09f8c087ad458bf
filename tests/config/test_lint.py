"""Semantic checks: one small file per diagnostic code, each placed at its line and column."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spork_cli.config.diagnostics import Diagnostic
from spork_cli.config.lint import lint, redis_url_problem
from spork_cli.config.load import check_file, parse_text

# A service used by a route: the smallest file with nothing to report.
BASE = """\
[[services]]
name = "users"
endpoints = ["http://127.0.0.1:9000"]

[[routes]]
path = "/api"
service = "users"
"""

# BASE as it reads inside the indented cases below (check() dedents the whole text).
INDENTED_BASE = textwrap.indent(BASE, " " * 8)

SECRET = "0123456789abcdef0123456789abcdef"

Where = tuple[str, str, str, int, int]


def where(d: Diagnostic) -> Where:
    return (d.code, d.severity, d.path, d.line, d.column)


def check(
    tmp_path: Path,
    text: str,
    files: dict[str, bytes | None] | None = None,
    *,
    routeless: bool = False,
) -> list[Diagnostic]:
    """check_file() on ``text`` written to tmp_path, beside ``files`` (None: a directory).

    Most cases are the few lines their code is about, often without a route: the no-routes
    warning those get is left out unless ``routeless`` asks for it (see its own tests)."""
    for name, content in (files or {}).items():
        target = tmp_path / name
        if content is None:
            target.mkdir(parents=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    config = tmp_path / "gateway.toml"
    config.write_text(textwrap.dedent(text))
    found = check_file(str(config)).diagnostics
    return found if routeless else [d for d in found if d.code != "no-routes"]


def test_base_file_has_no_diagnostics(tmp_path: Path) -> None:
    assert check(tmp_path, BASE) == []


# (toml, files beside it, expected diagnostics)
CASES: dict[str, tuple[str, dict[str, bytes | None], list[Where]]] = {
    "duplicate-service": (
        """\
        [[services]]
        name = "users"
        endpoints = ["http://127.0.0.1:9000"]

        [[services]]
        name = "users"
        endpoints = ["http://127.0.0.1:9001"]

        [[routes]]
        path = "/api"
        service = "users"
        """,
        {},
        [("duplicate-service", "error", "services[1].name", 6, 8)],
    ),
    "invalid-url-scheme": (
        """\
        [[services]]
        name = "users"
        endpoints = ["http://127.0.0.1:9000", "ftp://127.0.0.1"]

        [[routes]]
        path = "/api"
        service = "users"
        """,
        {},
        [("invalid-url", "error", "services[0].endpoints[1]", 3, 39)],
    ),
    "invalid-url-in-table": (
        """\
        [[services]]
        name = "users"

        [[services.endpoints]]
        url = "http://user:pw@127.0.0.1:9000"

        [[routes]]
        path = "/api"
        service = "users"
        """,
        {},
        [("invalid-url", "error", "services[0].endpoints[0].url", 5, 7)],
    ),
    "invalid-url-bad-port": (
        """\
        [[services]]
        name = "users"
        endpoints = [
          { url = "http://127.0.0.1:99999" },
        ]

        [[routes]]
        path = "/api"
        service = "users"
        """,
        {},
        [("invalid-url", "error", "services[0].endpoints[0].url", 4, 11)],
    ),
    "invalid-url-jwks": (
        """\
        [auth]
        algorithms = ["RS256"]
        jwks_url = "http://[::1"
        """,
        {},
        [("invalid-url", "error", "auth.jwks_url", 3, 12)],
    ),
    "no-weight": (
        """\
        [[services]]
        name = "users"
        balance = "weighted"
        endpoints = [{ url = "http://127.0.0.1:9000", weight = 0 }]

        [[routes]]
        path = "/api"
        service = "users"
        """,
        {},
        [("no-weight", "error", "services[0].endpoints", 4, 13)],
    ),
    "unused-service": (
        INDENTED_BASE
        + """
        [[services]]
        name = "orders"
        endpoints = ["http://127.0.0.1:9001"]
        """,
        {},
        [("unused-service", "warning", "services[1].name", 10, 8)],
    ),
    "unknown-service": (
        """\
        [[services]]
        name = "users"
        endpoints = ["http://127.0.0.1:9000"]

        [[routes]]
        path = "/api"
        service = "user"
        """,
        {},
        [
            ("unused-service", "warning", "services[0].name", 2, 8),
            ("unknown-service", "error", "routes[0].service", 7, 11),
        ],
    ),
    "duplicate-route": (
        INDENTED_BASE
        + """
        [[routes]]
        path = "/api"
        service = "users"
        """,
        {},
        [("duplicate-route", "error", "routes[1].path", 10, 8)],
    ),
    "shadowed-route": (
        INDENTED_BASE
        + """
        [[routes]]
        path = "/api"
        service = "users"
        methods = ["GET"]
        """,
        {},
        [("shadowed-route", "error", "routes[1].path", 10, 8)],
    ),
    "duplicate-route-name": (
        """\
        [[services]]
        name = "users"
        endpoints = ["http://127.0.0.1:9000"]

        [[routes]]
        path = "/a"
        name = "api"
        service = "users"

        [[routes]]
        path = "/b"
        service = "users"
        name = "api"
        """,
        {},
        [("duplicate-route-name", "error", "routes[1].name", 13, 8)],
    ),
    "cache-unused": (
        INDENTED_BASE
        + """\
        methods = ["POST"]

        [routes.cache]
        ttl = "5s"
        """,
        {},
        [("cache-unused", "warning", "routes[0].cache", 10, 9)],
    ),
    "auth-not-configured": (
        INDENTED_BASE
        + """\
        auth = "required"
        """,
        {},
        [("auth-not-configured", "error", "routes[0].auth", 8, 8)],
    ),
    "roles-without-auth": (
        INDENTED_BASE
        + """\
        roles = ["admin"]
        """,
        {},
        [("roles-without-auth", "error", "routes[0].roles", 8, 9)],
    ),
    "scopes-without-auth": (
        INDENTED_BASE
        + """\
        scopes = ["read"]
        """,
        {},
        [("roles-without-auth", "error", "routes[0].scopes", 8, 10)],
    ),
    "limit-needs-auth": (
        INDENTED_BASE
        + """\
        rate_limit = { requests = 10, per = "1s", key = ["user"] }
        """,
        {},
        [("limit-needs-auth", "warning", "routes[0].rate_limit", 8, 14)],
    ),
    "never-admits-requests": (
        INDENTED_BASE
        + """\
        rate_limit = { requests = 0, per = "1s" }
        """,
        {},
        [("never-admits", "error", "routes[0].rate_limit.requests", 8, 27)],
    ),
    "never-admits-per": (
        INDENTED_BASE
        + """\

        [routes.rate_limit]
        requests = 10
        per = "0s"
        """,
        {},
        [("never-admits", "error", "routes[0].rate_limit.per", 11, 7)],
    ),
    "never-admits-burst": (
        INDENTED_BASE
        + """\
        rate_limit = { requests = 10, per = "1s", burst = 0 }
        """,
        {},
        [("never-admits", "error", "routes[0].rate_limit.burst", 8, 51)],
    ),
    "never-admits-authenticated-tier": (
        f"""\
        [auth]
        secret = "{SECRET}"

        [[services]]
        name = "users"
        endpoints = ["http://127.0.0.1:9000"]

        [[routes]]
        path = "/api"
        service = "users"
        auth = "optional"

        [routes.rate_limit]
        requests = 10
        per = "1s"
        authenticated = {{ requests = 100, per = "0s" }}
        """,
        {},
        [("never-admits", "error", "routes[0].rate_limit.authenticated.per", 16, 41)],
    ),
    "missing-secret": (
        """\
        [auth]
        algorithms = ["HS256"]
        """,
        {},
        [("missing-secret", "error", "auth.algorithms", 2, 14)],
    ),
    "weak-secret": (
        """\
        [auth]
        secret = "too short"
        """,
        {},
        [("weak-secret", "error", "auth.secret", 2, 10)],
    ),
    "missing-key": (
        """\
        [auth]
        algorithms = ["ES256"]
        issuer = "me"
        """,
        {},
        [("missing-key", "error", "auth.algorithms", 2, 14)],
    ),
    "file-missing": (
        """\
        [auth]
        algorithms = ["ES256"]
        public_key_file = "keys/public.pem"
        """,
        {},
        [("file-missing", "error", "auth.public_key_file", 3, 19)],
    ),
    "file-unreadable-directory": (
        """\
        [auth]
        algorithms = ["ES256"]
        public_key_file = "keys"
        """,
        {"keys": None},
        [("file-unreadable", "error", "auth.public_key_file", 3, 19)],
    ),
    "file-unreadable-nul-in-name": (
        """\
        [auth]
        algorithms = ["ES256"]
        public_key_file = "keys\\u0000.pem"
        """,
        {},
        [("file-unreadable", "error", "auth.public_key_file", 3, 19)],
    ),
    "file-unparsable-pem": (
        """\
        [auth]
        algorithms = ["ES256"]
        public_key_file = "public.pem"
        """,
        {"public.pem": b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n"},
        [("file-unparsable", "error", "auth.public_key_file", 3, 19)],
    ),
    "file-unparsable-private-pem": (
        f"""\
        [auth]
        secret = "{SECRET}"
        private_key_file = "private.pem"
        """,
        {"private.pem": b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
        [("file-unparsable", "error", "auth.private_key_file", 3, 20)],
    ),
    "file-unparsable-not-utf8": (
        """\
        [auth]
        algorithms = ["ES256"]
        public_key_file = "public.pem"
        """,
        {"public.pem": b"\xff\xfe\x00binary"},
        [("file-unparsable", "error", "auth.public_key_file", 3, 19)],
    ),
    "file-unparsable-jwks-json": (
        """\
        [auth]
        algorithms = ["RS256"]
        jwks_file = "jwks.json"
        """,
        {"jwks.json": b'{"keys": [}'},
        [("file-unparsable", "error", "auth.jwks_file", 3, 13)],
    ),
    "file-unparsable-jwks-shape": (
        """\
        [auth]
        algorithms = ["RS256"]
        jwks_file = "jwks.json"
        """,
        {"jwks.json": b'{"keys": []}'},
        [("file-unparsable", "error", "auth.jwks_file", 3, 13)],
    ),
    "file-missing-body-schema": (
        INDENTED_BASE
        + """\
        body_schema = "schemas/user.json"
        """,
        {},
        [("file-missing", "error", "routes[0].body_schema", 8, 15)],
    ),
    "file-unparsable-body-schema": (
        INDENTED_BASE
        + """\
        body_schema = "user.json"
        """,
        {"user.json": b"{'type': 'object'}"},
        [("file-unparsable", "error", "routes[0].body_schema", 8, 15)],
    ),
    "invalid-json-schema": (
        INDENTED_BASE
        + """\
        body_schema = "user.json"
        """,
        {"user.json": b'{"type": 12}'},
        [("invalid-json-schema", "error", "routes[0].body_schema", 8, 15)],
    ),
    "invalid-json-schema-not-an-object": (
        INDENTED_BASE
        + """\
        body_schema = "user.json"
        """,
        {"user.json": b"[1, 2]"},
        [("invalid-json-schema", "error", "routes[0].body_schema", 8, 15)],
    ),
    "missing-redis-url": (
        """\
        [state]
        backend = "redis"
        """,
        {},
        [("missing-redis-url", "error", "state.backend", 2, 11)],
    ),
    "invalid-redis-url-scheme": (
        """\
        [state]
        backend = "redis"
        url = "http://127.0.0.1:6379"
        """,
        {},
        [("invalid-redis-url", "error", "state.url", 3, 7)],
    ),
    "invalid-redis-url-db": (
        """\
        [state]
        backend = "redis"
        url = "redis://127.0.0.1:6379/zero"
        """,
        {},
        [("invalid-redis-url", "error", "state.url", 3, 7)],
    ),
    "url-ignored": (
        """\
        [state]
        url = "redis://127.0.0.1:6379/0"
        """,
        {},
        [("url-ignored", "warning", "state.url", 2, 7)],
    ),
    # Workers on memory state share their supervisor's store: a limit is no finding.
    "workers-share-memory-state": (
        """\
        [server]
        workers = 4

        """
        + INDENTED_BASE
        + """\
        rate_limit = { requests = 5, per = "1m" }
        """,
        {},
        [],
    ),
    "threshold-range-breaker": (
        INDENTED_BASE
        + """\

        [services.breaker]
        failures = 0
        failure_ratio = 1.5
        """,
        {},
        [
            ("threshold-range", "error", "services[0].breaker.failures", 10, 12),
            ("threshold-range", "error", "services[0].breaker.failure_ratio", 11, 17),
        ],
    ),
    "threshold-range-breaker-cooldowns": (
        """\
        [[services]]
        name = "users"
        endpoints = ["http://127.0.0.1:9000"]
        breaker = { cooldown = "10m", max_cooldown = "1m", cooldown_multiplier = 0.5 }

        [[routes]]
        path = "/api"
        service = "users"
        """,
        {},
        [
            ("threshold-range", "error", "services[0].breaker.max_cooldown", 4, 46),
            ("threshold-range", "error", "services[0].breaker.cooldown_multiplier", 4, 74),
        ],
    ),
    "threshold-range-health": (
        """\
        [[services]]
        name = "users"
        endpoints = ["http://127.0.0.1:9000"]

        [services.health]
        healthy_threshold = 0
        interval = "1s"
        timeout = "2s"

        [[routes]]
        path = "/api"
        service = "users"
        """,
        {},
        [
            ("threshold-range", "error", "services[0].health.healthy_threshold", 6, 21),
            ("threshold-range", "warning", "services[0].health.timeout", 8, 11),
        ],
    ),
    "threshold-range-retries": (
        """\
        [[services]]
        name = "users"
        endpoints = ["http://127.0.0.1:9000"]
        retries.backoff = "2s"
        retries.max_backoff = "1s"

        [[routes]]
        path = "/api"
        service = "users"
        """,
        {},
        [("threshold-range", "error", "services[0].retries.max_backoff", 5, 23)],
    ),
    "invalid-regex-deny": (
        """\
        [[deny]]
        name = "dotfiles"
        path = "/\\\\.(git"
        """,
        {},
        [("invalid-regex", "error", "deny[0].path", 3, 8)],
    ),
    "invalid-regex-cors": (
        """\
        [cors]
        allow_origin_regex = [
          "^https://.*\\\\.example\\\\.com$",
          "^https://[a-z",
        ]
        """,
        {},
        [("invalid-regex", "error", "cors.allow_origin_regex[1]", 4, 3)],
    ),
    "invalid-regex-deeply-nested-group": (
        """\
        [[deny]]
        name = "deep"
        query = "%s"
        """
        % ("(" * 5000 + ")" * 5000),
        {},
        [("invalid-regex", "error", "deny[0].query", 3, 9)],
    ),
    "empty-rule": (
        """\
        [[deny]]
        name = "nothing"
        """,
        {},
        [("empty-rule", "error", "deny[0]", 1, 3)],
    ),
    "empty-rule-header-without-value": (
        """\
        [[deny]]
        name = "ok"
        path = "^/ok"

        [[deny]]
        name = "half"
        header = "User-Agent"
        """,
        {},
        [("empty-rule", "error", "deny[1]", 5, 3)],
    ),
    "cors-credentials-wildcard": (
        """\
        [cors]
        allow_origins = "*"
        allow_credentials = true
        """,
        {},
        [("cors-credentials-wildcard", "error", "cors.allow_credentials", 3, 21)],
    ),
    "cors-credentials-wildcard-on-route": (
        INDENTED_BASE
        + """\
        cors = { allow_origins = ["*"], allow_credentials = true }
        """,
        {},
        [("cors-credentials-wildcard", "error", "routes[0].cors.allow_credentials", 8, 53)],
    ),
    "invalid-cidr": (
        """\
        [server]
        trusted_proxies = ["10.0.0.0/8", "10.0.0.0/33"]
        """,
        {},
        [("invalid-cidr", "error", "server.trusted_proxies[1]", 2, 34)],
    ),
    "port-clash": (
        """\
        [server]
        port = 9000

        [admin]
        port = 9000
        """,
        {},
        [("port-clash", "error", "admin.port", 5, 8)],
    ),
    "admin-exposed": (
        """\
        [admin]
        host = "0.0.0.0"
        """,
        {},
        [("admin-exposed", "error", "admin.host", 2, 8)],
    ),
}


@pytest.mark.parametrize(("text", "files", "expected"), list(CASES.values()), ids=list(CASES))
def test_semantic_diagnostic_code_path_and_position(
    tmp_path: Path, text: str, files: dict[str, bytes | None], expected: list[Where]
) -> None:
    found = check(tmp_path, text, files)
    assert [where(d) for d in found] == expected
    assert all(d.file == str(tmp_path / "gateway.toml") for d in found)
    assert all(d.message for d in found)


def test_every_documented_code_has_a_case() -> None:
    documented = {
        "duplicate-service", "invalid-url", "no-weight", "unused-service", "unknown-service",
        "duplicate-route", "shadowed-route", "duplicate-route-name", "cache-unused",
        "auth-not-configured", "roles-without-auth", "limit-needs-auth", "never-admits",
        "missing-secret", "weak-secret", "missing-key", "file-missing", "file-unreadable",
        "file-unparsable", "invalid-json-schema", "missing-redis-url", "invalid-redis-url",
        "url-ignored", "threshold-range", "invalid-regex", "empty-rule",
        "cors-credentials-wildcard", "invalid-cidr", "port-clash", "admin-exposed",
    }  # fmt: skip
    covered = {code for _, _, expected in CASES.values() for code, *_ in expected}
    assert documented <= covered


def test_unknown_service_suggests_the_closest_name(tmp_path: Path) -> None:
    found = check(tmp_path, CASES["unknown-service"][0])
    (d,) = [d for d in found if d.code == "unknown-service"]
    assert d.hint == "did you mean 'users'?"
    assert "'user'" in d.message


def test_unknown_service_without_services_says_how_to_define_one(tmp_path: Path) -> None:
    (d,) = check(tmp_path, '[[routes]]\npath = "/"\nservice = "users"\n')
    assert d.code == "unknown-service"
    assert d.hint == "define it under [[services]]"


def test_different_methods_on_one_path_are_fine(tmp_path: Path) -> None:
    text = BASE + 'methods = ["GET"]\n\n[[routes]]\npath = "/api"\nservice = "users"\n'
    text += 'methods = ["POST"]\n'
    assert check(tmp_path, text) == []


def test_any_method_after_a_narrow_route_is_not_shadowed(tmp_path: Path) -> None:
    text = BASE + 'methods = ["GET"]\n\n[[routes]]\npath = "/api"\nservice = "users"\n'
    assert check(tmp_path, text) == []


def test_weak_secret_counts_bytes_and_a_long_one_passes(tmp_path: Path) -> None:
    (d,) = check(tmp_path, '[auth]\nsecret = "short"\n')
    assert "5 bytes" in d.message
    assert check(tmp_path, f'[auth]\nsecret = "{SECRET}"\n') == []


def test_weak_secret_is_not_leaked_in_the_message(tmp_path: Path) -> None:
    (d,) = check(tmp_path, '[auth]\nsecret = "hunter2"\n')
    assert "hunter2" not in d.message + (d.hint or "")


def test_valid_key_jwks_and_schema_files_pass(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    text = (
        '[auth]\nalgorithms = ["ES256"]\npublic_key_file = "keys/public.pem"\n'
        'private_key_file = "keys/private.pem"\njwks_file = "jwks.json"\n\n'
        + BASE
        + 'auth = "required"\nbody_schema = "schemas/user.json"\n'
    )
    files: dict[str, bytes | None] = {
        "keys/public.pem": public,
        "keys/private.pem": private,
        "jwks.json": json.dumps(jwks).encode(),
        "schemas/user.json": json.dumps(schema).encode(),
    }
    assert check(tmp_path, text, files) == []


def test_referenced_files_are_relative_to_the_config_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    text = BASE + 'body_schema = "user.json"\n'
    assert check(tmp_path, text, {"user.json": b'{"type": "object"}'}) == []


def test_redis_backend_with_good_url_passes(tmp_path: Path) -> None:
    text = '[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:6379/0"\n[server]\nworkers = 4\n'
    assert check(tmp_path, text) == []


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://user:pw@example.com:6380",
        "unix:///run/redis.sock",
        "redis+cluster://10.0.0.1:7000",
        "redis+sentinel://10.0.0.1:26379/mymaster/0",
        "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster",
    ],
)
def test_redis_url_accepted(url: str) -> None:
    assert redis_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:6379", "scheme"),
        ("redis://", "no host"),
        ("redis://127.0.0.1:0", "port 0"),
        ("redis://127.0.0.1:99999", "out of range"),
        ("redis://127.0.0.1/x", "must be a number"),
        ("redis+cluster://127.0.0.1:7000/3", "only database 0"),
        ("redis+sentinel://10.0.0.1:26379", "sentinel URLs are"),
        ("unix://", "no socket path"),
        ("redis://[::1", "malformed"),
    ],
)
def test_redis_url_rejected_with_a_reason(url: str, problem: str) -> None:
    found = redis_url_problem(url)
    assert found is not None and problem in found


def test_diagnostics_come_in_file_order(tmp_path: Path) -> None:
    text = """\
    [admin]
    host = "0.0.0.0"

    [state]
    url = "redis://127.0.0.1:6379/0"

    [server]
    trusted_proxies = ["nope"]
    """
    found = check(tmp_path, text)
    assert [(d.line, d.code) for d in found] == [
        (2, "admin-exposed"),
        (5, "url-ignored"),
        (8, "invalid-cidr"),
    ]


def test_no_routes_is_a_warning_that_every_request_gets_404(tmp_path: Path) -> None:
    text = '[[services]]\nname = "users"\nendpoints = ["http://127.0.0.1:9000"]\n'
    found = check(tmp_path, "[server]\nport = 8080\n" + text, routeless=True)
    assert [where(d) for d in found] == [
        ("no-routes", "warning", "", 1, 1),
        ("unused-service", "warning", "services[0].name", 4, 8),
    ]
    assert found[0].message == "no routes: every request is answered 404"


def test_a_file_with_a_route_gets_no_no_routes_warning(tmp_path: Path) -> None:
    assert check(tmp_path, BASE, routeless=True) == []


def test_lint_skips_an_invalid_config() -> None:
    loaded = parse_text('[server]\nworkers = "many"\n', "g.toml", {})
    assert loaded.config is None
    assert lint(loaded) == []
