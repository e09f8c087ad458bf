"""The response cache as a shared cache (RFC 9111): whether a response may be stored and for
how long, the key of a request, the stored form of a response, and the view the CLI and the
admin API give of it. The middleware that applies it is `spork_cli.middleware.cache`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from hashlib import blake2b
from typing import TYPE_CHECKING

import orjson

from spork_cli.state import StateStore, cache_key, cache_stats_key, glob_literal

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy, MultiMapping

    from spork_cli.config.model import GatewayConfig, Route

CACHEABLE_METHODS = frozenset(("GET", "HEAD"))
# Never stored: hop-by-hop headers, per-request ones, and the cache's own.
UNSTORED = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "age",
        "server",
        "x-request-id",
        "x-cache",
        "x-cache-key",
    )
)
# Directives that keep a response out of a shared cache (RFC 9111, 5.2.2). `no-cache` allows
# storing but demands revalidation on every use, which this cache does not do.
NOT_STORED = ("no-store", "private", "no-cache")


def cache_control(values: Iterable[str]) -> dict[str, str]:
    """The directives of Cache-Control header values, lower-cased, values unquoted."""
    directives: dict[str, str] = {}
    for value in values:
        for part in value.split(","):
            name, _, argument = part.strip().partition("=")
            if name:
                directives.setdefault(name.strip().lower(), argument.strip().strip('"'))
    return directives


def _seconds(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def lifetime(headers: MultiMapping[str], ttl: float, varied: frozenset[str]) -> float | None:
    """Seconds a response may be served from the cache; None when it must not be stored.

    The route's ``ttl`` is the longest; ``s-maxage`` (else ``max-age``) can only shorten it,
    and the upstream's ``Age`` counts against it. A response that varies on a request header
    outside ``varied`` (lower-cased names in the key) is not stored: it could be served to a
    request it does not fit.
    """
    directives = cache_control(headers.getall("Cache-Control", ()))
    if any(name in directives for name in NOT_STORED) or "Set-Cookie" in headers:
        return None
    vary = {n.strip().lower() for v in headers.getall("Vary", ()) for n in v.split(",")}
    vary.discard("")
    if "*" in vary or not vary <= varied:
        return None
    fresh = float(ttl)
    for name in ("s-maxage", "max-age"):
        if name in directives:
            given = _seconds(directives[name])
            if given is None:
                return None  # malformed: RFC 9111 says treat it as stale
            fresh = min(fresh, given)
            break
    else:
        if "Expires" in headers:
            until = _expires(headers.get("Expires", ""), headers.get("Date"))
            if until is None:
                return None  # `Expires: 0` and other invalid dates mean already stale
            fresh = min(fresh, until)
    fresh -= _seconds(headers.get("Age", "0")) or 0
    return fresh if fresh > 0 else None


def _expires(expires: str, date: str | None) -> float | None:
    """Seconds from the response's Date (or now) until its Expires; None when invalid."""
    try:
        until = parsedate_to_datetime(expires)
        since = parsedate_to_datetime(date) if date else datetime.now(UTC)
    except (TypeError, ValueError, IndexError):
        return None
    if until.tzinfo is None or since.tzinfo is None:
        return None
    return (until - since).total_seconds()


def digest(raw_path: str, headers: Mapping[str, str], vary: Iterable[str], user: str | None) -> str:
    """``<url>:<variant>``: the path and query, then the user and the ``vary`` headers."""
    url = blake2b(raw_path.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
    variant = blake2b(digest_size=8)
    variant.update(b"u\0" if user is None else b"u:" + user.encode() + b"\0")
    for name in vary:
        variant.update(name.lower().encode() + b"=" + headers.get(name, "").encode() + b"\0")
    return f"{url}:{variant.hexdigest()}"


def url_digest(raw_path: str) -> str:
    return digest(raw_path, {}, (), None).partition(":")[0]


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored response. ``age`` is how old it already was when stored (its upstream Age)."""

    status: int
    reason: str | None
    headers: tuple[tuple[str, str], ...]
    body: bytes
    age: int = 0

    @classmethod
    def of(
        cls,
        status: int,
        reason: str | None,
        headers: CIMultiDictProxy[str] | MultiMapping[str],
        body: bytes,
        skip: Iterable[str] = (),
    ) -> Entry:
        dropped = UNSTORED | {name.lower() for name in skip}
        kept = tuple((k, v) for k, v in headers.items() if k.lower() not in dropped)
        return cls(status, reason, kept, body, _seconds(headers.get("Age", "0")) or 0)

    def encode(self) -> bytes:
        # The head as JSON (never a raw newline inside), a newline, then the body as is.
        head = orjson.dumps([self.status, self.reason, self.headers, self.age])
        return head + b"\n" + self.body

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        """None for anything unreadable: a stored entry is never trusted to be well formed."""
        head, newline, body = raw.partition(b"\n")
        try:
            status, reason, headers, age = orjson.loads(head)
            pairs = tuple((k, v) for k, v in headers)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return None
        servable = (
            newline
            and type(status) is int
            and 200 <= status <= 599
            and (reason is None or isinstance(reason, str))
            and type(age) is int
            and age >= 0
            and all(isinstance(k, str) and isinstance(v, str) for k, v in pairs)
        )
        return cls(status, reason, pairs, body, age) if servable else None


class Capture:
    """The body of a streamed response, collected while it is relayed, up to ``limit``."""

    __slots__ = ("chunks", "complete", "limit", "on_stream", "size")

    def __init__(self, limit: int, on_stream: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.on_stream = on_stream  # called when the proxy starts streaming the body
        self.size = 0
        self.chunks: list[bytes] | None = []
        self.complete = False

    def add(self, chunk: bytes) -> None:
        if self.chunks is None:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.chunks = None  # too large to store; stop holding on to it
        else:
            self.chunks.append(chunk)

    def body(self) -> bytes | None:
        return b"".join(self.chunks) if self.complete and self.chunks is not None else None


# -- looking inside (the CLI and the admin API; never on the request path) ---------------------


def cached_routes(config: GatewayConfig, route: str | None = None) -> list[tuple[str, Route]]:
    """(route id, route) of every cached route, or of the one named (by id or path)."""
    return [
        (r.route_id, r)
        for r in config.routes
        if r.cache is not None and (route is None or route in (r.route_id, r.path))
    ]


async def cache_rows(
    store: StateStore, config: GatewayConfig, route: str | None = None
) -> list[dict[str, object]]:
    """Per cached route: entries held now, and the lookups and stores counted so far."""
    prefix = config.state.prefix
    rows: list[dict[str, object]] = []
    for route_id, cfg in cached_routes(config, route):
        assert cfg.cache is not None
        stats_key = cache_stats_key(prefix, route_id)
        keys = await store.scan(glob_literal(cache_key(prefix, route_id, "")) + "*:*")
        counters = await store.cache_stats(stats_key)
        hits, misses = counters.get("hits", 0), counters.get("misses", 0)
        rows.append(
            {
                "route": route_id,
                "ttl": cfg.cache.ttl,
                "entries": len(keys),
                "hits": hits,
                "misses": misses,
                "stores": counters.get("stores", 0),
                "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
            }
        )
    return rows


async def purge(
    store: StateStore,
    config: GatewayConfig,
    route: str | None = None,
    path: str | None = None,
    key: str | None = None,
) -> int:
    """Delete cached entries: of every cached route or one; all of them, those of one request
    ``path`` (with its query, every user and variant), or the one ``key`` (an X-Cache-Key).
    Returns how many were deleted; the hit counters stay."""
    prefix = config.state.prefix
    if key is not None:
        pattern = glob_literal(key)
    elif path is not None:
        pattern = glob_literal(url_digest(path)) + ":*"
    else:
        pattern = "*:*"
    doomed: set[str] = set()
    for route_id, _ in cached_routes(config, route):
        head = glob_literal(cache_key(prefix, route_id, ""))
        doomed.update(await store.scan(head + pattern))
    return await store.delete(sorted(doomed)) if doomed else 0
