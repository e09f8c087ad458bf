"""The gateway.toml model: frozen pydantic models, unknown keys rejected.

Fields marked ``json_schema_extra=RESTART`` (the listeners, the state store, metrics, logging)
need a restart to change (spork_cli/config/restart.py); everything else hot-reloads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from spork_cli.config.restart import RESTART
from spork_cli.config.units import Duration, Size

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
Algorithm = Literal[
    "HS256", "HS384", "HS512",
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512",
    "EdDSA",
]  # fmt: skip
OnError = Literal["open", "closed", "local"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
HEADER_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
HeaderName = Annotated[str, Field(pattern=HEADER_PATTERN)]
# A name or an address as written in a Host header: `name`, `1.2.3.4`, `[::1]`, each with an
# optional `:port`.
HOST_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?$"
Status = Annotated[int, Field(ge=100, le=599)]


def _upper(value: Any) -> Any:
    if isinstance(value, list):
        return [v.upper() if isinstance(v, str) else v for v in value]
    return value


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Methods = Annotated[list[HttpMethod], BeforeValidator(_upper)]
StrList = Annotated[
    list[str],
    BeforeValidator(_one_or_many),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]


class Model(BaseModel):
    """Base of every section: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # Lax mode would read `port = true` as 1; in a config file that is always a mistake.
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and _numeric(field.annotation):
                raise ValueError("expected a number, found a boolean")
        return value


def _numeric(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    return any(_numeric(arg) for arg in getattr(annotation, "__args__", ()))


# -- the listener and the state store (mostly read once, at start) -------------------------


class ServerTimeouts(Model):
    """Timeouts of the client-facing listener."""

    keepalive: Duration = Field(
        75.0, description="Idle keep-alive connections close after this.", json_schema_extra=RESTART
    )
    request: Duration = Field(
        60.0,
        description=(
            "Longest the gateway waits for a response to start, retries included (then 504)."
        ),
    )
    shutdown: Duration = Field(
        30.0,
        description="On SIGTERM, how long in-flight requests may drain before exit.",
        json_schema_extra=RESTART,
    )
    header: Duration = Field(
        10.0,
        description=(
            "Longest a client may take to send a request head, counted from the connection's "
            "start or the head's first byte (slowloris); then a 408 problem, or for a "
            "connection that sent nothing just the close."
        ),
        json_schema_extra=RESTART,
    )
    body_idle: Duration = Field(
        30.0,
        description=(
            "Longest a client may pause while sending a request body; then a 408 problem "
            "and the connection closes. Time the gateway itself is not reading (an upstream "
            "taking the body slowly) does not count."
        ),
        json_schema_extra=RESTART,
    )
    body: Duration = Field(
        60.0,
        description=(
            "Longest a client may take to send a whole request body, however steadily it "
            "trickles (one byte every few seconds never trips `body_idle`); then a 408 "
            "problem and the connection closes. Time the gateway itself is not reading does "
            "not count."
        ),
        json_schema_extra=RESTART,
    )


class Server(Model):
    """The client-facing listener: its address, workers and connection bounds need a restart;
    what it does with requests reloads."""

    host: str = Field(
        "127.0.0.1",
        description="Address to listen on.",
        examples=["0.0.0.0"],
        json_schema_extra=RESTART,
    )
    port: int = Field(
        8080, ge=1, le=65535, description="TCP port to listen on.", json_schema_extra=RESTART
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes sharing the port (SO_REUSEPORT).",
        json_schema_extra=RESTART,
    )
    max_body: Size = Field(
        8 * 1024 * 1024,
        description=(
            "Largest request body accepted (413 past it); routes may set their own. A body goes "
            "upstream as sent, compressed or not: the gateway does not inflate it, except on a "
            "`body_schema` route, where the limit bounds it both as sent and inflated."
        ),
        examples=["512KiB"],
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description=(
            "CIDRs whose X-Forwarded-For / Forwarded headers are believed: the client address "
            "is the nearest untrusted hop of X-Forwarded-For, or of `Forwarded: for=` when "
            "there is no X-Forwarded-For. Only these peers may send the headers upstream "
            "frameworks read as the client's address, the scheme, a path prefix, the original "
            "target or the method (X-Real-IP, X-Client-IP, True-Client-IP, Client-IP, "
            "X-Forwarded-Prefix/-Port/-Server/-Ssl/-Scheme/-Uri, X-Url-Scheme, X-Host, "
            "X-Original-URL, X-Rewrite-URL, X-HTTP-Method-Override and the like, listed in "
            "gateway/forwarding.py); from anyone else they are dropped. `Proxy` is dropped "
            "from everyone."
        ),
        examples=[["127.0.0.1/32", "10.0.0.0/8"]],
    )
    underscores_in_headers: bool = Field(
        False,
        description=(
            "Pass on client headers whose names contain `_`. Off (nginx's default) they are "
            "dropped: CGI-style servers (WSGI, Rack, PHP) read `X_User_Id` as `X-User-Id`. "
            "On, a name that reads as one the gateway sets or strips (identity, forwarding, "
            "Host, Content-Length, Content-Type) is still dropped."
        ),
    )
    allow_trace: bool = Field(
        False,
        description=(
            "Pass TRACE requests on. Off, TRACE is a 405 problem: an upstream that echoes the "
            "request would reflect its headers, cookies and tokens included."
        ),
    )
    merge_slashes: bool = Field(
        True,
        description=(
            "Merge runs of slashes in a request path into one before routing and forwarding "
            "(as nginx's merge_slashes); off keeps empty segments as sent."
        ),
    )
    encoded_slashes: Literal["reject", "keep"] = Field(
        "reject",
        description=(
            "A request path with an encoded `/` or `\\` (`%2F`, `%5C`): `reject` answers 400, "
            "since servers disagree on whether it separates segments; `keep` routes it as one "
            "opaque segment and forwards it encoded, for APIs that put slashes in names; a "
            "path that, read with those slashes as separators (as upstreams decode it), falls "
            "under another route is still refused (400)."
        ),
    )
    max_header_size: Size = Field(
        32 * 1024,
        description=(
            "Largest request head, request line and header fields together; a larger one is "
            "a 431 problem and the connection closes. Whatever this says, one field is at "
            "most 16 KiB and the request line 8 KiB (a 414)."
        ),
        examples=["64KiB"],
        json_schema_extra=RESTART,
    )
    max_connections: int = Field(
        1024,
        ge=1,
        description=(
            "Most client connections open at once, per worker process. One more is answered "
            "503 problem (`Retry-After: 1`) and closed, while the open ones go on."
        ),
        json_schema_extra=RESTART,
    )
    timeouts: ServerTimeouts = Field(default_factory=ServerTimeouts)


class Admin(Model):
    """The admin listener: health, metrics, admin API and dashboard (static)."""

    enabled: bool = Field(
        True,
        description=(
            "Serve the admin listener at all. It takes a change (a POST) only as "
            "`Content-Type: application/json` and, from a browser, only from its own origin "
            "(else 415 or 403), so no other web page can make one."
        ),
    )
    host: str = Field("127.0.0.1", description="Address of the admin listener.")
    port: int = Field(9901, ge=1, le=65535, description="Port of the admin listener.")
    token: SecretStr | None = Field(
        None,
        description=(
            "Bearer token required by every admin endpoint but `/health`, `/health/ready` and "
            "the dashboard page itself (which asks for it) when set."
        ),
        examples=["${SPORK_ADMIN_TOKEN}"],
    )
    allowed_hosts: list[Annotated[str, Field(pattern=HOST_PATTERN)]] = Field(
        default_factory=list,
        description=(
            "More names the admin listener answers to in `Host`, besides `127.0.0.1`, "
            "`localhost`, `[::1]` and `host` at `port`: a name alone allows any port, "
            "`name:port` that port only. Any other `Host` is a 403, so a DNS-rebinding page "
            "cannot read the admin API."
        ),
        examples=[["spork-admin.internal", "localhost:19901"]],
    )
    metrics_public: bool = Field(
        False, description="Serve the metrics without the token (for a scraper that has none)."
    )
    insecure_public: bool = Field(
        False,
        description=(
            "Allow a `host` beyond loopback without a `token`: anyone who reaches the port can "
            "then open breakers, reset limits and revoke tokens. Without it `spork check` "
            "reports such a config as an error and `spork serve` refuses to start."
        ),
    )


class State(Model):
    """Where limiter, breaker, cache and revocation state lives (all but `on_error` need a
    restart)."""

    backend: Literal["memory", "redis"] = Field(
        "memory",
        description="`memory`: this process only. `redis`: shared by every instance.",
        json_schema_extra=RESTART,
    )
    url: str | None = Field(
        None,
        description=(
            "Redis URL: redis://, rediss://, unix://, redis+cluster:// or redis+sentinel://."
        ),
        examples=["redis://127.0.0.1:6379/0"],
        json_schema_extra=RESTART,
    )
    prefix: str = Field(
        "spork", pattern=NAME_PATTERN, description="Prefix of every key.", json_schema_extra=RESTART
    )
    timeout: Duration = Field(
        0.05, description="Longest a request waits on the state store.", json_schema_extra=RESTART
    )
    on_error: OnError = Field(
        "open",
        description=(
            "When the store fails: `open` allows, `closed` answers 503, `local` falls back "
            "to per-process memory until the store answers again. `/health/ready` fails "
            "during an outage only with `closed` (else it says `degraded`)."
        ),
    )
    pool_size: int = Field(
        2,
        ge=1,
        le=1024,
        description="Connections to each Redis node; requests are pipelined over them.",
        json_schema_extra=RESTART,
    )
    max_keys: int = Field(
        100_000,
        ge=100,
        description=(
            "Memory backend: the most rate-limit keys it holds, and apart from them the most "
            "cached responses. Half of the keys are reserved in equal parts for the limited "
            "routes (each tier of one, authenticated apart), the rest go first come, so a "
            "flood of keys through one route never takes another's room. A replenished key "
            "is dropped first, a live one never: a new client that finds no room gets a 503 "
            "`limiter-full` problem with `Retry-After`, whatever `on_error` says (this is "
            "not a store outage), while known clients keep exact limits. In the per-process "
            "fallback of a Redis store (`on_error` `local`) the same shares apply, but "
            "such a client is admitted uncounted. Cached responses past it go least recently "
            "used first. Breakers and revocations are never evicted."
        ),
        json_schema_extra=RESTART,
    )
    max_bytes: Size = Field(
        64 * 1024 * 1024,
        description="Bytes the memory backend keeps (cached responses, mostly) before evicting.",
        examples=["256MiB"],
        json_schema_extra=RESTART,
    )


# -- the rest (applied by every reload, but for logging and metrics) -----------------------


class Auth(Model):
    """How JWTs are verified, and which claims are forwarded upstream."""

    algorithms: list[Algorithm] = Field(
        default_factory=lambda: list[Algorithm](["HS256"]),
        min_length=1,
        description="Accepted `alg` values; any other (and `none`) is rejected.",
    )
    secret: SecretStr | None = Field(
        None,
        description="HMAC secret for HS* algorithms, at least 32 bytes.",
        examples=["${SPORK_JWT_SECRET}"],
    )
    public_key_file: str | None = Field(
        None, description="PEM public key for RS/PS/ES/EdDSA, relative to this file."
    )
    private_key_file: str | None = Field(
        None, description="PEM private key `spork token mint` signs with (never the gateway)."
    )
    jwks_file: str | None = Field(None, description="A JWKS document on disk.")
    jwks_url: str | None = Field(None, description="A JWKS URL, fetched and cached.")
    jwks_cache_ttl: Duration = Field(300.0, description="How long a fetched JWKS is kept.")
    issuer: str | None = Field(None, description="Required `iss`, when set.")
    audience: StrList = Field(
        default_factory=list, description="Accepted `aud` values (any one matches)."
    )
    leeway: Duration = Field(0.0, description="Clock skew allowed on exp, nbf and iat.")
    require_exp: bool = Field(True, description="Reject tokens without `exp`.")
    roles_claim: str = Field("roles", description="Claim holding the roles list.")
    scopes_claim: str = Field("scope", description="Claim holding scopes (list or spaces).")
    cookie: str | None = Field(None, description="Also read the token from this cookie.")
    query_param: str | None = Field(None, description="Also read the token from this parameter.")
    forward_claims: dict[str, HeaderName] = Field(
        default_factory=lambda: {"sub": "X-User-Id", "roles": "X-User-Roles"},
        description=(
            "Claims sent upstream as headers. Clients can never set these headers themselves, "
            "in any spelling (case, `_` for `-`). A list is sent comma-joined, so a token whose "
            "roles or scopes claim holds a value with a comma, a control character or "
            "surrounding spaces is refused (401 `malformed`): one value never reads as two."
        ),
    )
    cache_size: int = Field(10_000, ge=0, description="Verified tokens remembered per process.")
    revocation_cache_ttl: Duration = Field(
        1.0,
        description=(
            "How long a remembered token found not revoked is not asked about again (0: on "
            "every request). Revocations through this gateway's admin API apply at once; "
            "others (another instance, `spork token revoke` on Redis) within this time."
        ),
    )


class Cors(Model):
    """Cross-origin resource sharing, answered at the gateway (preflights never reach services)."""

    allow_origins: StrList = Field(
        default_factory=list,
        description=(
            "Exact origins, or `*` for any (echoed when credentials are allowed). Other origins "
            "get no CORS headers; a service's own are replaced."
        ),
        examples=[["http://localhost:3000"]],
    )
    allow_origin_regex: StrList = Field(
        default_factory=list,
        description="Origins matching any of these regexes in full are allowed.",
    )
    allow_methods: Methods = Field(
        default_factory=lambda: list[HttpMethod](["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
        description="Methods allowed in preflight.",
    )
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Authorization", "Content-Type"],
        description="Request headers allowed in preflight; `*` allows any (echoes the asked ones).",
    )
    expose_headers: list[str] = Field(default_factory=list, description="Headers JS may read.")
    allow_credentials: bool = Field(False, description="Allow cookies and credentials.")
    max_age: Duration = Field(600.0, description="How long browsers cache a preflight.")


class SecurityHeaders(Model):
    """Security headers on every response, errors included: presets fill in, explicit keys win."""

    preset: Literal["default", "strict", "off"] = Field(
        "default",
        description=(
            "Baseline set of headers: `default`, `strict` (adds a deny-all CSP) or `off`. A "
            "preset's header is added only where the upstream sent none of that name (its "
            "`X-Frame-Options: DENY` stays); the keys below override the preset and replace "
            "the upstream's value (so does `hsts_max_age` when set)."
        ),
    )
    hsts_max_age: Duration = Field(
        31_536_000.0,
        description=(
            "HSTS max-age, sent only on requests that came over HTTPS (TLS here, or "
            "X-Forwarded-Proto from a trusted proxy)."
        ),
    )
    content_security_policy: str | None = Field(
        None, description="Content-Security-Policy; the preset's value when unset, none if empty."
    )
    frame_options: Literal["DENY", "SAMEORIGIN"] | None = Field(
        None, description="X-Frame-Options; the preset's value when unset."
    )
    referrer_policy: str | None = Field(
        None, description="Referrer-Policy; the preset's value when unset, none if empty."
    )
    permissions_policy: str | None = Field(
        None, description="Permissions-Policy; the preset's value when unset, none if empty."
    )
    extra: dict[HeaderName, str] = Field(
        default_factory=dict,
        description="Further headers to set on every response; an empty value drops one.",
    )


class Logging(Model):
    """Structured logs: JSON when stdout is not a terminal, readable when it is."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe level written.", json_schema_extra=RESTART
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="`auto`: console on a terminal, JSON otherwise.",
        json_schema_extra=RESTART,
    )
    access_log: bool = Field(True, description="One line per request.")


DEFAULT_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class Metrics(Model):
    """Prometheus metrics on the admin listener."""

    enabled: bool = Field(True, description="Serve Prometheus metrics.", json_schema_extra=RESTART)
    path: str = Field(
        "/metrics",
        pattern=r"^/",
        description="Path on the admin listener.",
        json_schema_extra=RESTART,
    )
    buckets: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: list(DEFAULT_BUCKETS),
        min_length=1,
        description="Latency histogram buckets in seconds.",
        json_schema_extra=RESTART,
    )


class DenyRule(Model):
    """A tripwire for known-bad requests (403, before routing); not a web application firewall."""

    name: str = Field(
        pattern=NAME_PATTERN,
        description="Shown in logs and the 403 body. A rule matches when all its conditions do.",
        examples=["dotfiles"],
    )
    path: str | None = Field(
        None,
        description=(
            "Regex searched in the canonical path (the one routes match: `/%2Egit` is `/.git`)."
        ),
        examples=[r"/\.(git|env)(/|$)"],
    )
    query: str | None = Field(None, description="Regex searched in the raw query string.")
    header: HeaderName | None = Field(None, description="Header whose value `value` is tested.")
    value: str | None = Field(None, description="Regex searched in that header's value.")


class Demo(Model):
    """A built-in demo "users" service that `spork serve` starts beside the gateway."""

    enabled: bool = Field(False, description="Start the demo service with the gateway.")
    host: str = Field("127.0.0.1", description="Address of the demo service.")
    port: int = Field(9100, ge=1, le=65535, description="Port of the demo service.")


# -- services ---------------------------------------------------------------------------------


class Endpoint(Model):
    """One upstream instance of a service."""

    url: str = Field(
        description="Base URL, http:// or https://.", examples=["http://127.0.0.1:9000"]
    )
    weight: int = Field(1, ge=0, le=1000, description="Share of traffic with `weighted`.")


def _endpoints(value: Any) -> Any:
    if isinstance(value, list):
        return [{"url": v} if isinstance(v, str) else v for v in value]
    return value


def _endpoints_schema(schema: dict[str, Any]) -> None:
    schema["items"] = {"anyOf": [{"type": "string"}, schema["items"]]}


class Retries(Model):
    """Retrying failed upstream attempts, on another endpoint."""

    attempts: int = Field(2, ge=0, le=10, description="Retries after the first try.")
    on_status: list[Status] = Field(
        default_factory=lambda: [502, 503, 504], description="Statuses that are retried."
    )
    backoff: Duration = Field(0.025, description="Base of exponential backoff (full jitter).")
    max_backoff: Duration = Field(1.0, description="Cap of one backoff wait.")
    budget: float = Field(
        0.2, ge=0, le=1, description="Retries at most this share of recent requests."
    )


class Passive(Model):
    """Passive ejection of endpoints that keep failing real traffic."""

    failures: int = Field(5, ge=1, description="Consecutive failures that eject an endpoint.")
    cooldown: Duration = Field(30.0, description="How long an ejected endpoint rests.")


class HealthCheck(Model):
    """Active health checks of each endpoint."""

    path: str = Field("/health", pattern=r"^/", description="Path probed on every endpoint.")
    interval: Duration = Field(10.0, description="Time between probes.")
    timeout: Duration = Field(2.0, description="A probe slower than this fails.")
    expected_status: list[Status] = Field(
        default_factory=lambda: [200], min_length=1, description="Statuses that count as healthy."
    )
    healthy_threshold: int = Field(2, description="Consecutive passes that mark healthy.")
    unhealthy_threshold: int = Field(3, description="Consecutive fails that mark unhealthy.")


class Breaker(Model):
    """A circuit breaker shared by every instance through the state store."""

    failures: int = Field(5, description="Consecutive failures that open the breaker.")
    failure_ratio: float | None = Field(
        None, description="Or: failure share over `window` that opens it (0 < ratio <= 1)."
    )
    window: Duration = Field(30.0, description="Rolling window of `failure_ratio`.")
    min_requests: int = Field(20, description="Requests in the window before the ratio counts.")
    cooldown: Duration = Field(30.0, description="How long the breaker stays open.")
    max_cooldown: Duration = Field(
        300.0, description="Cap of the cooldown when it grows on repeated trips."
    )
    cooldown_multiplier: float = Field(
        1.0, description="Cooldown grows by this factor on each trip in a row (>= 1)."
    )
    half_open_probes: int = Field(1, description="Requests let through to test recovery.")
    failure_on: list[Literal["connect", "timeout"]] = Field(
        default_factory=lambda: list[Literal["connect", "timeout"]](["connect", "timeout"]),
        description="Transport errors that count as failures.",
    )
    failure_statuses: list[Status] = Field(
        default_factory=lambda: [500, 502, 503, 504],
        description="Upstream statuses that count as failures.",
    )
    on_error: OnError | None = Field(None, description="Overrides `state.on_error`.")


class Service(Model):
    """An upstream service with one or more endpoints."""

    name: str = Field(pattern=NAME_PATTERN, description="Referenced by routes.", examples=["users"])
    endpoints: Annotated[list[Endpoint], BeforeValidator(_endpoints)] = Field(
        min_length=1,
        json_schema_extra=_endpoints_schema,
        description="URLs, or tables with `url` and `weight`.",
        examples=[["http://127.0.0.1:9001", "http://127.0.0.1:9002"]],
    )
    balance: Literal["round_robin", "weighted", "least_conn", "p2c"] = Field(
        "round_robin", description="How an endpoint is chosen."
    )
    preserve_host: bool = Field(
        False, description="Send the client's Host upstream instead of the endpoint's."
    )
    timeout: Duration = Field(30.0, description="Total time for one upstream attempt.")
    connect_timeout: Duration = Field(2.0, description="Time to open a connection.")
    max_connections: int = Field(100, ge=1, le=10000, description="Pool size per endpoint.")
    retries: Retries = Field(default_factory=Retries)
    health: HealthCheck | None = Field(None, description="Active checks; off when absent.")
    passive: Passive = Field(
        default_factory=Passive,
        description="Ejection of endpoints that keep failing real traffic (always on).",
    )
    breaker: Breaker | None = Field(None, description="Circuit breaker; off when absent.")


# -- routes -----------------------------------------------------------------------------------

RateKey = Annotated[str, Field(pattern=r"^(ip|user|route|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$")]


class RateTier(Model):
    """A limit: `requests` per `per`, with an optional burst."""

    requests: int = Field(ge=0, description="Requests admitted per period.", examples=[60])
    per: Duration = Field(description="The period.", examples=["1m"])
    burst: int | None = Field(
        None, ge=0, description="Extra requests admitted at once.", examples=[10]
    )


class RateLimit(Model):
    """Rate limiting of a route; the top-level limit applies to anonymous clients."""

    requests: int = Field(ge=0, description="Requests admitted per period.", examples=[60])
    per: Duration = Field(description="The period.", examples=["1m"])
    burst: int | None = Field(
        None, ge=0, description="Extra requests admitted at once.", examples=[10]
    )
    algorithm: Literal["gcra", "token_bucket", "sliding_window"] = Field(
        "gcra", description="GCRA and token bucket allow bursts; sliding window counts."
    )
    key: list[RateKey] = Field(
        default_factory=lambda: ["ip"],
        min_length=1,
        description="What identifies a client: ip, user, route, header:NAME (combined).",
    )
    authenticated: RateTier | None = Field(
        None, description="A separate limit for requests with a valid token."
    )
    exempt_roles: list[str] = Field(default_factory=list, description="Roles never limited.")
    on_error: OnError | None = Field(None, description="Overrides `state.on_error`.")


class Cache(Model):
    """Response caching of GET and HEAD, as a shared cache (RFC 9111): what the upstream says
    decides what is stored and for how long; these settings cap it and fill in only where
    asked to. The table of directives is in the configuration reference."""

    ttl: Duration = Field(
        30.0,
        description=(
            "The longest a stored response is fresh here: caps the freshness the upstream "
            "gives (`s-maxage`, `max-age`, `Expires`) and `default_ttl`."
        ),
    )
    default_ttl: Duration | None = Field(
        None,
        description=(
            "Freshness for a response that states none (no `s-maxage`, `max-age` or "
            "`Expires`), as nginx's `proxy_cache_valid`. Unset, such a response is stored "
            "only when it has a validator (`ETag`, `Last-Modified`), and revalidated before "
            "each reuse."
        ),
    )
    heuristic: bool = Field(
        False,
        description=(
            "For a response that states no freshness but has `Last-Modified`: fresh for 10% "
            "of its age then (RFC 9111 4.2.2), capped by `ttl`. `default_ttl` comes first."
        ),
    )
    statuses: list[Status] = Field(
        default_factory=lambda: [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501],
        description=(
            "Statuses that may be stored (a filter on RFC 9111's rules). Those outside RFC "
            "9110 15.1's list are stored only with explicit freshness or `public`."
        ),
    )
    vary: list[HeaderName] = Field(
        default_factory=list, description="Request headers that are part of the key."
    )
    cookies: list[HeaderName] = Field(
        default_factory=list,
        description=(
            "Cookie names whose values are part of the key. A request with a cookie not "
            "named here (`auth.cookie` aside, on a route that needs a token) is neither "
            "served from nor stored in the cache."
        ),
        examples=[["lang"]],
    )
    targeted: list[HeaderName] = Field(
        default_factory=lambda: ["CDN-Cache-Control", "Surrogate-Control"],
        description=(
            "Targeted cache-control fields (RFC 9213), first valid one wins: it replaces "
            "`Cache-Control` and `Expires` for this cache. `Surrogate-Control` is the field "
            "reverse-proxy caches (surrogates) read; its directives targeted at a named "
            "surrogate (`max-age=60;edge`) are not the gateway's, and a `no-store` or "
            "`private` in `Cache-Control` still keeps the response out. Empty: "
            "`Cache-Control` alone."
        ),
    )
    request_directives: bool = Field(
        True,
        description=(
            "Honour the request's `Cache-Control` and `Pragma: no-cache` (`no-cache`, "
            "`no-store`, `max-age`, `max-stale`, `min-fresh`, `only-if-cached`); false "
            "ignores them."
        ),
    )
    keep: Duration = Field(
        600.0,
        description="How long a stale response with a validator is kept to be revalidated.",
    )
    stale_while_revalidate: Duration = Field(
        0.0,
        description=(
            "For a response without its own `stale-while-revalidate`: how long after it goes "
            "stale it is still served (`X-Cache: STALE`) while one request refreshes it."
        ),
    )
    stale_if_error: Duration = Field(
        0.0,
        description=(
            "For a response without its own `stale-if-error`: how long after it goes stale "
            "it is served instead of an error (500, 502, 503, 504, an unreachable upstream, "
            "an open breaker)."
        ),
    )
    max_entry_size: Size = Field(1024 * 1024, description="Larger responses are not cached.")
    on_error: OnError | None = Field(None, description="Overrides `state.on_error`.")


class HeaderEdit(Model):
    """Headers to set and to remove."""

    set: dict[HeaderName, str] = Field(
        default_factory=dict,
        description="Headers to set, replacing any of that name.",
        examples=[{"X-Env": "dev"}],
    )
    remove: list[HeaderName] = Field(
        default_factory=list,
        description="Headers to drop, in any spelling of their name.",
        examples=[["Cookie", "X-Powered-By"]],
    )


class Route(Model):
    """A path prefix mapped to a service. The longest matching prefix wins."""

    path: str = Field(
        pattern=r"^/",
        description=(
            "Path prefix, matched on segment boundaries. Requests are matched, and forwarded, "
            "by one canonical path: escapes of unreserved characters decoded (`%61` is `a`), "
            "other escapes upper-cased, dot segments (`.`, `..`, `%2e`) resolved, runs of "
            "slashes merged (`server.merge_slashes`), also when the target is a full URL. "
            "What servers read differently is refused (400): `%2F` and `%5C` (unless "
            '`server.encoded_slashes = "keep"`), a backslash, a raw `#`, `%00` and other '
            "control characters, a `%` that starts no escape, and dots such as `..;`."
        ),
        examples=["/api/users"],
    )
    name: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="Name in metrics and state keys; the path when unset.",
        examples=["users"],
    )
    service: str = Field(description="Name of a `[[services]]` entry.", examples=["users"])
    methods: Methods = Field(default_factory=list, description="Allowed methods; empty = any.")
    strip_prefix: bool = Field(False, description="Remove `path` before forwarding.")
    auth: Literal["required", "optional", "none"] = Field(
        "none",
        description=(
            "`required`: 401 without a valid token. `optional`: identity when a valid token "
            "comes, anonymous without one, 401 for an invalid one. `none`: tokens ignored."
        ),
    )
    roles: list[str] = Field(default_factory=list, description="Roles a token must hold.")
    roles_mode: Literal["any", "all"] = Field(
        "any", description="Whether any one of `roles` suffices, or all are needed."
    )
    scopes: list[str] = Field(default_factory=list, description="Scopes a token must hold.")
    scopes_mode: Literal["any", "all"] = Field(
        "all", description="Whether any one of `scopes` suffices, or all are needed."
    )
    rate_limit: RateLimit | None = Field(None, description="Off when absent.")
    cache: Cache | None = Field(None, description="Off when absent.")
    body_schema: str | None = Field(
        None,
        description=(
            "JSON Schema file for POST, PUT and PATCH bodies, relative to this file (415 unless "
            "JSON, 400 if unparsable, 422 listing each schema error). A body with "
            "`Content-Encoding: gzip` or `deflate` is inflated to be checked (`max_body` "
            "bounds the inflated size too) and goes upstream compressed, as sent; any other "
            "coding is a 415."
        ),
        examples=["schemas/user.json"],
    )
    max_body: Size | None = Field(
        None, description="Overrides `server.max_body`.", examples=["64KiB"]
    )
    timeout: Duration | None = Field(
        None, description="Overrides the service timeout.", examples=["10s"]
    )
    retry_non_idempotent: bool = Field(
        False, description="Allow retries of POST and PATCH on this route."
    )
    websocket: bool = Field(True, description="Proxy WebSocket upgrades.")
    cors: Cors | None = Field(None, description="Overrides the global `[cors]`.")
    security_headers: SecurityHeaders | None = Field(
        None, description="Replaces the global `[security_headers]`."
    )
    request_headers: HeaderEdit = Field(
        default_factory=HeaderEdit,
        description=(
            "Edits of the request sent upstream, after the client's hop-by-hop and spoofable "
            "headers are dropped: `remove` first, then `set`. The identity headers of "
            "`auth.forward_claims`, `Host`, `X-Forwarded-*`, `Forwarded`, `X-Request-ID`, "
            "`traceparent` and framing headers cannot be set."
        ),
    )
    response_headers: HeaderEdit = Field(
        default_factory=HeaderEdit,
        description=(
            "Edits of every answer of this route (relayed, streamed, from the cache, or the "
            "gateway's own problems), made last, after the security headers and CORS: "
            "`remove` first, then `set`. Framing headers and `X-Request-ID` cannot be set."
        ),
    )

    @property
    def route_id(self) -> str:
        return self.name or self.path


# -- the file ---------------------------------------------------------------------------------


class GatewayConfig(Model):
    """The whole gateway.toml."""

    server: Server = Field(default_factory=Server)
    admin: Admin = Field(default_factory=Admin, json_schema_extra=RESTART)
    state: State = Field(default_factory=State)
    auth: Auth | None = Field(None, description="JWT verification; routes need it for auth.")
    cors: Cors | None = Field(None, description="Global CORS; off when absent.")
    security_headers: SecurityHeaders = Field(default_factory=SecurityHeaders)
    logging: Logging = Field(default_factory=Logging)
    metrics: Metrics = Field(default_factory=Metrics)
    deny: list[DenyRule] = Field(default_factory=list, description="Requests refused with 403.")
    demo: Demo = Field(default_factory=Demo, json_schema_extra=RESTART)
    services: list[Service] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)
