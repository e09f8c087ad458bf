"""Semantic checks beyond the schema: what a valid-looking gateway.toml still gets wrong."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from spork_cli.config.diagnostics import Diagnostic
from spork_cli.config.loaded import Loaded, did_you_mean
from spork_cli.config.model import GatewayConfig
from spork_cli.headers import (
    DEFAULT_IDENTITY_HEADERS,
    FRAMING,
    PROTECTED_RESPONSE,
    protected_request,
)

# RFC 7518 section 3.2: an HMAC key at least as long as the hash output.
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "redis+sentinel")
_HMAC = ("HS256", "HS384", "HS512")

Check = Callable[[GatewayConfig, Loaded], Iterator[Diagnostic]]


def lint(loaded: Loaded) -> list[Diagnostic]:
    """Every semantic finding for a config that passed the schema."""
    config = loaded.config
    if config is None:
        return []
    found: list[Diagnostic] = []
    for check in CHECKS:
        found.extend(check(config, loaded))
    return found


def _services(config: GatewayConfig, loaded: Loaded) -> Iterator[Diagnostic]:
    seen: dict[str, int] = {}
    for i, service in enumerate(config.services):
        if service.name in seen:
            yield loaded.diag(
                ("services", i, "name"),
                "duplicate-service",
                f"service '{service.name}' is already defined as services[{seen[service.name]}]",
            )
        else:
            seen[service.name] = i
        for j, endpoint in enumerate(service.endpoints):
            problem = _url_problem(endpoint.url)
            if problem:
                yield loaded.diag(
                    ("services", i, "endpoints", j, "url")
                    if ("services", i, "endpoints", j, "url") in loaded.positions.values
                    else ("services", i, "endpoints", j),
                    "invalid-url",
                    f"invalid upstream URL '{endpoint.url}': {problem}",
                )
        if service.balance == "weighted" and all(e.weight == 0 for e in service.endpoints):
            yield loaded.diag(
                ("services", i, "endpoints"),
                "no-weight",
                "every endpoint has weight 0, so none can get traffic",
            )
    used = {route.service for route in config.routes}
    for i, service in enumerate(config.services):
        if service.name not in used:
            yield loaded.diag(
                ("services", i, "name"),
                "unused-service",
                f"no route uses service '{service.name}'",
                severity="warning",
            )


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not parts.hostname:
        return "it has no host"
    if port == 0:
        return "port 0 is not a valid port"
    if parts.query or parts.fragment:
        return "an endpoint cannot carry a query or fragment"
    if parts.username or parts.password:
        return "credentials do not belong in the URL"
    return None


def _routes(config: GatewayConfig, loaded: Loaded) -> Iterator[Diagnostic]:
    if not config.routes:
        yield loaded.diag(
            (),
            "no-routes",
            "no routes: every request is answered 404",
            severity="warning",
            hint="add [[routes]], or: spork route add PREFIX --service NAME",
        )
    names = [s.name for s in config.services]
    seen_paths: dict[str, list[tuple[int, frozenset[str]]]] = {}
    for i, route in enumerate(config.routes):
        if config.service(route.service) is None:
            yield loaded.diag(
                ("routes", i, "service"),
                "unknown-service",
                f"route '{route.path}' names unknown service '{route.service}'",
                hint=did_you_mean(route.service, names)
                or ("define it under [[services]]" if not names else None),
            )
        methods = frozenset(route.methods)
        taken: set[str] = set()
        for j, earlier in seen_paths.get(route.path, []):
            if earlier == methods:
                yield loaded.diag(
                    ("routes", i, "path"),
                    "duplicate-route",
                    f"route '{route.path}' duplicates routes[{j}] (same path and methods)",
                )
                break
            taken |= earlier
            if not earlier or (methods and methods <= taken):
                by = f"routes[{j}]" if not earlier or methods <= earlier else "earlier routes"
                yield loaded.diag(
                    ("routes", i, "path"),
                    "shadowed-route",
                    f"route '{route.path}' is never reached: {by} with the same prefix "
                    "already take every one of its methods",
                )
                break
        seen_paths.setdefault(route.path, []).append((i, methods))
        yield from _route_auth(config, loaded, i)
        yield from _route_limits(loaded, i, route.rate_limit)
        if route.cache is not None and route.methods and not {"GET", "HEAD"} & methods:
            yield loaded.diag(
                ("routes", i, "cache"),
                "cache-unused",
                "only GET and HEAD are cached, and this route allows neither",
                severity="warning",
            )
    route_ids: dict[str, int] = {}
    for i, route in enumerate(config.routes):
        if route.name is not None and route.name in route_ids:
            yield loaded.diag(
                ("routes", i, "name"),
                "duplicate-route-name",
                f"route name '{route.name}' is already used by routes[{route_ids[route.name]}]",
            )
        elif route.name is not None:
            route_ids[route.name] = i


def _route_auth(config: GatewayConfig, loaded: Loaded, i: int) -> Iterator[Diagnostic]:
    route = config.routes[i]
    if route.auth != "none" and config.auth is None:
        yield loaded.diag(
            ("routes", i, "auth"),
            "auth-not-configured",
            f"route '{route.path}' has auth = \"{route.auth}\" but there is no [auth] section",
        )
    if route.auth == "none" and (route.roles or route.scopes):
        yield loaded.diag(
            ("routes", i, "roles" if route.roles else "scopes"),
            "roles-without-auth",
            'roles and scopes need auth = "required" or "optional"',
        )
    limit = route.rate_limit
    if limit is not None and route.auth == "none":
        if "user" in limit.key or limit.authenticated is not None:
            yield loaded.diag(
                ("routes", i, "rate_limit"),
                "limit-needs-auth",
                "a per-user key or an authenticated tier needs auth on the route",
                severity="warning",
            )


def _route_limits(loaded: Loaded, i: int, limit: object) -> Iterator[Diagnostic]:
    from spork_cli.config.model import RateLimit, RateTier

    if not isinstance(limit, RateLimit):
        return
    tiers: list[tuple[tuple[str | int, ...], RateLimit | RateTier]] = [
        (("routes", i, "rate_limit"), limit)
    ]
    if limit.authenticated is not None:
        tiers.append((("routes", i, "rate_limit", "authenticated"), limit.authenticated))
    for path, tier in tiers:
        if tier.requests == 0:
            yield loaded.diag(
                (*path, "requests"), "never-admits", "requests = 0 never admits a request"
            )
        if tier.per <= 0:
            yield loaded.diag((*path, "per"), "never-admits", "the period must be longer than zero")
        if tier.burst == 0 and limit.algorithm != "sliding_window":
            yield loaded.diag(
                (*path, "burst"),
                "never-admits",
                "burst = 0 leaves no room for a single request",
                hint="burst counts requests admitted at once; use 1 or more",
            )


def _auth(config: GatewayConfig, loaded: Loaded) -> Iterator[Diagnostic]:
    auth = config.auth
    if auth is None:
        return
    hmac = [a for a in auth.algorithms if a in _HMAC]
    asym = [a for a in auth.algorithms if a not in _HMAC]
    if hmac and auth.secret is None:
        yield loaded.diag(
            ("auth", "algorithms"),
            "missing-secret",
            f"{hmac[0]} needs auth.secret",
            hint='secret = "${SPORK_JWT_SECRET}"',
        )
    if hmac and auth.secret is not None:
        value = auth.secret.get_secret_value()
        size = len(value.encode())
        strongest = max(hmac, key=lambda a: HMAC_MIN_BYTES[a])
        need = HMAC_MIN_BYTES[strongest]
        if size < need:
            yield loaded.diag(
                ("auth", "secret"),
                "weak-secret",
                f"the HMAC secret is {size} bytes; {strongest} needs at least {need}",
                hint=f"spork token keygen --alg {strongest} prints a strong one",
            )
        if "-----BEGIN" in value or value.startswith("ssh-"):
            yield loaded.diag(
                ("auth", "secret"),
                "key-as-secret",
                "auth.secret looks like a PEM or SSH key; an HMAC secret must be random bytes",
                hint="put public keys in public_key_file",
            )
    if asym and not (auth.public_key_file or auth.jwks_file or auth.jwks_url):
        yield loaded.diag(
            ("auth", "algorithms"),
            "missing-key",
            f"{asym[0]} needs public_key_file, jwks_file or jwks_url",
        )
    if auth.jwks_url is not None:
        try:
            parts = urlsplit(auth.jwks_url)
        except ValueError:  # e.g. an unclosed "[" of an IPv6 host
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            yield loaded.diag(
                ("auth", "jwks_url"), "invalid-url", "jwks_url must be an http(s) URL"
            )
    for key in ("public_key_file", "private_key_file"):
        name = getattr(auth, key)
        if name is not None:
            yield from _pem_file(loaded, ("auth", key), name)
    if auth.jwks_file is not None:
        yield from _json_file(loaded, ("auth", "jwks_file"), auth.jwks_file, _jwks_problem)


def _pem_file(loaded: Loaded, path: tuple[str, ...], name: str) -> Iterator[Diagnostic]:
    text = yield from _read(loaded, path, name)
    if text is None:
        return
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_pem_public_key,
    )

    data = text.encode()
    try:
        if "PRIVATE KEY" in text:
            load_pem_private_key(data, password=None)
        else:
            load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        yield loaded.diag(
            path, "file-unparsable", f"{name} is not a usable PEM key ({_first_line(exc)})"
        )


def _jwks_problem(document: object) -> str | None:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        return 'a JWKS is an object with a "keys" array'
    if not document["keys"]:
        return "the JWKS holds no keys"
    return None


def _schema_problem(document: object) -> str | None:
    import jsonschema_rs

    if not isinstance(document, dict | bool):
        return "a JSON Schema is an object"
    try:
        jsonschema_rs.meta.validate(document)
    except jsonschema_rs.ValidationError as exc:
        return f"not a valid JSON Schema: {_first_line(exc)}"
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        return f"not a valid JSON Schema: {_first_line(exc)}"
    return None


def _json_file(
    loaded: Loaded,
    path: tuple[str | int, ...],
    name: str,
    problem: Callable[[object], str | None],
) -> Iterator[Diagnostic]:
    text = yield from _read(loaded, path, name)
    if text is None:
        return
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        yield loaded.diag(path, "file-unparsable", f"{name} is not valid JSON ({exc})")
        return
    found = problem(document)
    if found:
        code = "invalid-json-schema" if problem is _schema_problem else "file-unparsable"
        yield loaded.diag(path, code, f"{name}: {found}")


def _read(
    loaded: Loaded, path: tuple[str | int, ...], name: str
) -> Generator[Diagnostic, None, str | None]:
    """Yield a diagnostic when ``name`` cannot be read; return its text otherwise."""
    file = Path(name) if Path(name).is_absolute() else loaded.base_dir / name
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        yield loaded.diag(path, "file-missing", f"{name} does not exist (looked at {file})")
    except IsADirectoryError:
        yield loaded.diag(path, "file-unreadable", f"{name} is a directory")
    except UnicodeDecodeError:
        yield loaded.diag(path, "file-unparsable", f"{name} is not UTF-8 text")
    except ValueError:  # a NUL in the name, which TOML escapes allow
        yield loaded.diag(path, "file-unreadable", f"{name!r} is not a valid file name")
    except OSError as exc:
        yield loaded.diag(path, "file-unreadable", f"{name} cannot be read ({exc.strerror})")
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _schemas(config: GatewayConfig, loaded: Loaded) -> Iterator[Diagnostic]:
    for i, route in enumerate(config.routes):
        if route.body_schema is not None:
            yield from _json_file(
                loaded, ("routes", i, "body_schema"), route.body_schema, _schema_problem
            )


def _state(config: GatewayConfig, loaded: Loaded) -> Iterator[Diagnostic]:
    state = config.state
    if state.backend == "redis":
        if state.url is None:
            yield loaded.diag(
                ("state", "backend"),
                "missing-redis-url",
                'backend = "redis" needs state.url',
                hint='url = "redis://127.0.0.1:6379/0"',
            )
        else:
            problem = redis_url_problem(state.url)
            if problem:
                yield loaded.diag(("state", "url"), "invalid-redis-url", problem)
    elif state.url is not None:
        yield loaded.diag(
            ("state", "url"),
            "url-ignored",
            'state.url is ignored while backend = "memory"',
            severity="warning",
        )


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is not a Redis URL spork can use, or None."""
    try:
        parts = urlsplit(url)
        # Sentinel and cluster netlocs may list several host:port pairs (.port cannot read)
        several = parts.scheme in ("redis+sentinel", "redis+cluster") and "," in parts.netloc
        port = None if parts.scheme == "redis+sentinel" or several else parts.port
    except ValueError as exc:
        return f"malformed Redis URL '{url}': {exc}"
    if parts.scheme not in REDIS_SCHEMES:
        return f"malformed Redis URL '{url}': the scheme must be one of " + ", ".join(
            f"{s}://" for s in REDIS_SCHEMES
        )
    if parts.scheme == "unix":
        return None if parts.path else f"malformed Redis URL '{url}': no socket path"
    if parts.scheme == "redis+sentinel":
        if not parts.netloc or not parts.path.strip("/"):
            return (
                f"malformed Redis URL '{url}': sentinel URLs are "
                "redis+sentinel://host:port[,host:port]/service_name[/db]"
            )
        return None
    if several:
        for node in parts.netloc.rpartition("@")[2].split(","):
            host, _, number = node.rpartition(":")
            if not host or not number.isdigit() or not 0 < int(number) < 65536:
                return f"malformed Redis URL '{url}': '{node}' is not host:port"
    elif not parts.hostname:
        return f"malformed Redis URL '{url}': no host"
    if port == 0:
        return f"malformed Redis URL '{url}': port 0"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return f"malformed Redis URL '{url}': the database must be a number, not '{db}'"
    if db and parts.scheme == "redis+cluster" and db != "0":
        return f"malformed Redis URL '{url}': Redis Cluster has only database 0"
    return None


def _thresholds(config: GatewayConfig, loaded: Loaded) -> Iterator[Diagnostic]:
    def bad(path: tuple[str | int, ...], message: str) -> Diagnostic:
        return loaded.diag(path, "threshold-range", message)

    for i, service in enumerate(config.services):
        b = service.breaker
        base: tuple[str | int, ...] = ("services", i, "breaker")
        if b is not None:
            if b.failures < 1:
                yield bad((*base, "failures"), "failures must be 1 or more")
            if b.failure_ratio is not None and not 0 < b.failure_ratio <= 1:
                yield bad((*base, "failure_ratio"), "failure_ratio must be > 0 and <= 1")
            if b.min_requests < 1:
                yield bad((*base, "min_requests"), "min_requests must be 1 or more")
            if b.half_open_probes < 1:
                yield bad((*base, "half_open_probes"), "half_open_probes must be 1 or more")
            if b.cooldown <= 0:
                yield bad((*base, "cooldown"), "cooldown must be longer than zero")
            if b.max_cooldown < b.cooldown:
                yield bad((*base, "max_cooldown"), "max_cooldown is shorter than cooldown")
            if b.cooldown_multiplier < 1:
                yield bad((*base, "cooldown_multiplier"), "cooldown_multiplier must be >= 1")
            if b.failure_ratio is not None and b.window <= 0:
                yield bad((*base, "window"), "window must be longer than zero")
        h = service.health
        base = ("services", i, "health")
        if h is not None:
            for key in ("healthy_threshold", "unhealthy_threshold"):
                if not 1 <= getattr(h, key) <= 100:
                    yield bad((*base, key), f"{key} must be between 1 and 100")
            if h.interval <= 0:
                yield bad((*base, "interval"), "interval must be longer than zero")
            elif h.timeout >= h.interval:
                yield loaded.diag(
                    (*base, "timeout"),
                    "threshold-range",
                    "timeout is not shorter than interval, so probes overlap",
                    severity="warning",
                )
            if h.timeout <= 0:
                yield bad((*base, "timeout"), "timeout must be longer than zero")
        if service.timeout <= 0:
            yield bad(("services", i, "timeout"), "timeout must be longer than zero")
        r = service.retries
        if r.max_backoff < r.backoff:
            yield bad(("services", i, "retries", "max_backoff"), "max_backoff is below backoff")


def _regexes(config: GatewayConfig, loaded: Loaded) -> Iterator[Diagnostic]:
    def compiled(path: tuple[str | int, ...], pattern: str) -> Iterator[Diagnostic]:
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            yield loaded.diag(path, "invalid-regex", f"invalid regular expression: {exc}")

    for i, rule in enumerate(config.deny):
        for key in ("path", "query", "value"):
            pattern = getattr(rule, key)
            if pattern is not None:
                yield from compiled(("deny", i, key), pattern)
        if rule.path is None and rule.query is None and rule.header is None:
            yield loaded.diag(("deny", i), "empty-rule", "a deny rule needs path, query or header")
        if (rule.header is None) != (rule.value is None):
            yield loaded.diag(
                ("deny", i), "empty-rule", "header and value go together in a deny rule"
            )
    corses = [(("cors",), config.cors)] + [
        (("routes", i, "cors"), r.cors) for i, r in enumerate(config.routes)
    ]
    for base, cors in corses:
        if cors is None:
            continue
        for j, pattern in enumerate(cors.allow_origin_regex):
            yield from compiled((*base, "allow_origin_regex", j), pattern)
        if cors.allow_credentials and "*" in cors.allow_origins:
            yield loaded.diag(
                (*base, "allow_credentials"),
                "cors-credentials-wildcard",
                'browsers refuse credentials with allow_origins = ["*"]; list the origins',
            )


def _server(config: GatewayConfig, loaded: Loaded) -> Iterator[Diagnostic]:
    for i, cidr in enumerate(config.server.trusted_proxies):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            yield loaded.diag(
                ("server", "trusted_proxies", i),
                "invalid-cidr",
                f"'{cidr}' is not an IP address or CIDR block",
            )
    if config.admin.enabled and (config.admin.host, config.admin.port) == (
        config.server.host,
        config.server.port,
    ):
        yield loaded.diag(
            ("admin", "port"), "port-clash", "the admin listener uses the gateway's own port"
        )
    exposed = admin_exposure(config)
    if exposed is not None:
        yield loaded.diag(("admin", "host"), "admin-exposed", exposed, hint=ADMIN_EXPOSED_HINT)


ADMIN_EXPOSED_HINT = (
    'set admin.token = "${SPORK_ADMIN_TOKEN}", bind admin.host to 127.0.0.1, '
    "or set admin.insecure_public = true if the network is yours alone"
)


def admin_exposure(config: GatewayConfig) -> str | None:
    """Why the admin listener would take changes from anyone on the network, or None.

    `spork serve` refuses to start for the same reason `spork check` reports it.
    """
    admin = config.admin
    if not admin.enabled or admin.insecure_public:
        return None
    if admin.token is not None and admin.token.get_secret_value():
        return None  # (an empty one, from `${VAR:-}`, guards nothing)
    if admin.host.lower() == "localhost":
        return None
    try:
        if ipaddress.ip_address(admin.host.strip("[]")).is_loopback:
            return None
    except ValueError:
        pass  # a name: it may resolve to any address
    return (
        f"the admin listener on {admin.host} is reachable beyond loopback without a token: "
        "anyone who reaches it can open breakers, reset limits and revoke tokens"
    )


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _header_edits(config: GatewayConfig, loaded: Loaded) -> Iterator[Diagnostic]:
    """``[routes.request_headers]`` / ``[routes.response_headers]``: names an edit may not
    take (the gateway sets them, or they frame the message) and values HTTP forbids."""
    auth = config.auth
    identity = (auth.forward_claims if auth is not None else DEFAULT_IDENTITY_HEADERS).values()
    for i, route in enumerate(config.routes):
        for table, protected in (
            ("request_headers", protected_request(identity)),
            ("response_headers", PROTECTED_RESPONSE),
        ):
            edit = getattr(route, table)
            for name, value in edit.set.items():
                where = ("routes", i, table, "set", name)
                if name.lower() in protected:
                    yield loaded.diag(
                        where,
                        "protected-header",
                        f"{name} cannot be set here: the gateway sets it itself",
                        hint="identity, forwarding and framing headers are the gateway's",
                        at="key",
                    )
                elif _CONTROL.search(value):
                    yield loaded.diag(
                        where, "invalid-value", f"the value of {name} holds a control character"
                    )
            for j, name in enumerate(edit.remove):
                if name.lower() in FRAMING:
                    yield loaded.diag(
                        ("routes", i, table, "remove", j),
                        "protected-header",
                        f"{name} frames the message and cannot be removed",
                    )


# A browser's request head with a few cookies is 1-4 KiB; each open connection may hold this
# much while its head arrives.
MIN_HEADER_SIZE = 1024
LARGE_HEADER_SIZE = 1024 * 1024


def _bounds(config: GatewayConfig, loaded: Loaded) -> Iterator[Diagnostic]:
    """Listener bounds that would refuse every client or protect against none."""
    server = config.server
    timeouts = server.timeouts
    for key in ("header", "body_idle", "body"):
        if getattr(timeouts, key) <= 0:
            yield loaded.diag(
                ("server", "timeouts", key),
                "bound-range",
                f"timeouts.{key} must be longer than zero: every client would time out at once",
            )
    if server.max_header_size < MIN_HEADER_SIZE:
        yield loaded.diag(
            ("server", "max_header_size"),
            "bound-range",
            f"max_header_size below {MIN_HEADER_SIZE} bytes refuses ordinary requests (431)",
        )
    elif server.max_header_size > LARGE_HEADER_SIZE:
        yield loaded.diag(
            ("server", "max_header_size"),
            "bound-range",
            "max_header_size over 1 MiB: each slow client may hold that much memory",
            severity="warning",
        )


CHECKS: tuple[Check, ...] = (
    _server,
    _bounds,
    _state,
    _auth,
    _services,
    _routes,
    _schemas,
    _thresholds,
    _regexes,
    _header_edits,
)
