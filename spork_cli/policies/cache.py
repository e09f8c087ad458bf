"""The response cache as a shared cache (RFC 9111): whether a response may be stored, how long
it stays fresh, what a request asks of the cache, the key of a request, and the stored form of
a response; and the view the CLI and the admin API give of it. The middleware that applies it
is `spork_cli.middleware.cache`; the configuration reference has the table of directives."""

from __future__ import annotations

import calendar
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from hashlib import blake2b
from typing import TYPE_CHECKING

import orjson

from spork_cli.state import StateStore, cache_key, cache_stats_key, glob_literal

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy, MultiMapping

    from spork_cli.config.model import Cache, GatewayConfig, Route

CACHEABLE_METHODS = frozenset(("GET", "HEAD"))
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE"))
# RFC 9110 15.1: statuses a cache may store without explicit freshness (206 aside: ranges are
# never cached here). Others need s-maxage, max-age, Expires or `public`.
HEURISTIC_STATUSES = frozenset((200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501))
# RFC 5861: what "an error" is for stale-if-error.
ERROR_STATUSES = frozenset((500, 502, 503, 504))
HEURISTIC_FRACTION = 0.1  # of the time since Last-Modified (RFC 9111 4.2.2)
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
# A 304 does not change these of the stored response (RFC 9111 3.2, 4.3.4): they describe
# the stored content itself (its coding, range, validator and digests), which a 304 does not send.
NOT_UPDATED = UNSTORED | {
    "content-encoding",
    "content-range",
    "content-md5",
    "content-digest",
    "repr-digest",
    "digest",
    "etag",
}


# -- reading the fields -----------------------------------------------------------------------


def cache_control(values: Iterable[str]) -> dict[str, str]:
    """The directives of Cache-Control header values, lower-cased, values unquoted; a directive
    given twice with different values is kept as "" with its name in ``"!conflict"``."""
    directives: dict[str, str] = {}
    for value in values:
        for part in _split(value):
            name, _, argument = part.partition("=")
            name = name.strip().lower()
            if not name:
                continue
            argument = argument.strip()
            if len(argument) >= 2 and argument[0] == argument[-1] == '"':
                argument = argument[1:-1].replace('\\"', '"')
            if name in directives and directives[name] != argument:
                directives["!conflict"] = directives.get("!conflict", "") + f" {name}"
            directives.setdefault(name, argument)
    return directives


def _split(value: str) -> list[str]:
    """Split on commas outside quoted strings (`no-cache="a, b"` is one directive)."""
    if '"' not in value:
        return value.split(",")
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def delta_seconds(text: str | None) -> int | None:
    """RFC 9111 1.2.2: digits only; None when absent or malformed. Huge values are capped."""
    if text is None or not text.isdigit() or not text.isascii():
        return None
    return min(int(text), 2**31)


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MON = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"(\d{2}):(\d{2}):(\d{2})"
_IMF = re.compile(rf"{_DAY}, (\d{{2}}) {_MON} (\d{{4}}) {_TIME} GMT")
_RFC850 = re.compile(rf"{_LONG_DAY}, (\d{{2}})-{_MON}-(\d{{2}}) {_TIME} GMT")
_ASCTIME = re.compile(rf"{_DAY} {_MON} ([ \d]\d) {_TIME} (\d{{4}})")


def http_date(text: str | None, now: float | None = None) -> float | None:
    """An HTTP date (RFC 9110 5.6.7) as a POSIX time: IMF-fixdate, or the obsolete RFC 850
    and asctime forms; None for anything else (``0``, ``-1``, other zones, bad days)."""
    if text is None:
        return None
    text = text.strip()
    if match := _IMF.fullmatch(text):
        day, month, year, hh, mm, ss = match.groups()
        full_year = int(year)
    elif match := _RFC850.fullmatch(text):
        day, month, year, hh, mm, ss = match.groups()
        # A two-digit year more than 50 years ahead is in the past century (RFC 9110 5.6.7).
        this_year = time.gmtime(time.time() if now is None else now).tm_year
        full_year = this_year // 100 * 100 + int(year)
        if full_year > this_year + 50:
            full_year -= 100
    elif match := _ASCTIME.fullmatch(text):
        month, day, hh, mm, ss, year = match.groups()
        full_year = int(year)
    else:
        return None
    parts = (full_year, _MONTHS[month], int(day), int(hh), int(mm), int(ss))
    if not (1 <= parts[2] <= 31 and parts[3] <= 23 and parts[4] <= 59 and parts[5] <= 60):
        return None
    try:
        stamp = calendar.timegm((*parts, 0, 0, 0))
    except (OverflowError, ValueError):
        return None
    if time.gmtime(stamp)[:3] != parts[:3]:
        return None  # 31 Feb and the like
    return float(stamp)


def age_value(values: Iterable[str]) -> int | None:
    """The upstream's Age (RFC 9111 5.1): of a list (``7200, 0``, or two fields) the first
    member counts and the rest are discarded; a member that is not delta-seconds is ignored.
    Empty members are no members (RFC 9110 5.6.1)."""
    for value in values:
        for member in value.split(","):
            if member.strip():
                return delta_seconds(member.strip())
    return None


# -- the route's policy -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    """A route's [routes.cache], ready to apply."""

    cap: float  # ttl: the longest a response is fresh here
    default_ttl: float | None
    heuristic: bool
    statuses: frozenset[int]
    vary: tuple[str, ...]
    varied: frozenset[str]
    cookies: tuple[str, ...]
    targeted: tuple[str, ...]
    request_directives: bool
    keep: float
    stale_while_revalidate: float
    stale_if_error: float
    max_entry_size: int

    @classmethod
    def of(cls, config: Cache) -> Policy:
        return cls(
            cap=float(config.ttl),
            default_ttl=None if config.default_ttl is None else float(config.default_ttl),
            heuristic=config.heuristic,
            statuses=frozenset(config.statuses),
            vary=tuple(config.vary),
            varied=frozenset(name.lower() for name in config.vary),
            cookies=tuple(config.cookies),
            targeted=tuple(config.targeted),
            request_directives=config.request_directives,
            keep=float(config.keep),
            stale_while_revalidate=float(config.stale_while_revalidate),
            stale_if_error=float(config.stale_if_error),
            max_entry_size=config.max_entry_size,
        )

    @property
    def stale_window(self) -> float:
        """The longest an entry is kept past its freshness: a response's own stale windows
        are capped by it."""
        return max(self.keep, self.stale_while_revalidate, self.stale_if_error)

    @property
    def longest(self) -> float:
        """The longest an entry can be kept: what an invalidation marker must outlive."""
        return self.cap + self.stale_window + 1

    def response_directives(self, headers: MultiMapping[str]) -> tuple[dict[str, str], str | None]:
        """The directives that govern this cache, and the targeted field they came from, if
        any (RFC 9213: the first valid targeted field replaces Cache-Control and Expires)."""
        for name in self.targeted:
            values = headers.getall(name, ())
            if values:
                parsed = cache_control(values)
                if parsed and "!conflict" not in parsed and _valid_targeted(parsed):
                    return parsed, name
        return cache_control(headers.getall("Cache-Control", ())), None


def _valid_targeted(directives: Mapping[str, str]) -> bool:
    # A structured-field dictionary: numeric directives must be integers.
    return all(
        delta_seconds(directives[name]) is not None
        for name in ("max-age", "s-maxage", "stale-while-revalidate", "stale-if-error")
        if name in directives
    )


# -- storing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Freshness:
    """What a stored response carries about its reuse (RFC 9111 4.2, RFC 5861)."""

    lifetime: float  # freshness lifetime, capped by the route's ttl; 0: revalidate every use
    initial_age: float  # its age when it arrived (RFC 9111 4.2.3)
    must_revalidate: bool  # never served stale (must-revalidate, proxy-revalidate, s-maxage)
    stale_while_revalidate: float
    stale_if_error: float
    validator: bool  # it has an ETag or a Last-Modified: it can be revalidated

    def retention(self, policy: Policy) -> float:
        """How long the store keeps it: while fresh, then as long as it can still be of use,
        at most the route's longest stale window (`Policy.stale_window`), so that an
        invalidation marker always outlives what it invalidates."""
        fresh = max(self.lifetime - self.initial_age, 0.0)
        extra = self.stale_while_revalidate
        if not self.must_revalidate:
            extra = max(extra, self.stale_if_error)
        if self.validator:
            extra = max(extra, policy.keep)
        return fresh + min(extra, policy.stale_window)


def freshness(
    status: int,
    headers: MultiMapping[str],
    policy: Policy,
    now: float,
    response_delay: float = 0.0,
) -> Freshness | None:
    """How a response to a GET may be reused, or None when it must not be stored (RFC 9111 3).

    Not stored: a status outside ``statuses``; ``no-store`` or ``private``; a ``Set-Cookie``;
    a Vary on a request header outside the configured ``vary`` (or ``*``); a status outside
    RFC 9110 15.1 without explicit freshness; and a response that would be of no use (no
    freshness, no validator, no stale window)."""
    if status not in policy.statuses:
        return None
    directives, targeted = policy.response_directives(headers)
    if "no-store" in directives or "private" in directives or "Set-Cookie" in headers:
        return None
    if targeted is not None and targeted.lower() == "surrogate-control":
        # Surrogate-Control is often one blanket value for a CDN tier, sent with responses
        # whose Cache-Control says `private` or `no-store` (which such tiers still honour).
        plain = cache_control(headers.getall("Cache-Control", ()))
        if "no-store" in plain or "private" in plain:
            return None
    vary = {n.strip().lower() for v in headers.getall("Vary", ()) for n in v.split(",")}
    vary.discard("")
    if "*" in vary or not vary <= policy.varied:
        return None
    date = http_date(headers.get("Date"))
    explicit: float | None = None
    conflict = "!conflict" in directives and any(
        name in directives["!conflict"].split() for name in ("s-maxage", "max-age")
    )
    if conflict:
        explicit = 0.0  # RFC 9111 4.2.1: conflicting values make it stale
    else:
        for name in ("s-maxage", "max-age"):
            if name in directives:
                given = delta_seconds(directives[name])
                explicit = 0.0 if given is None else float(given)  # malformed: stale
                break
        else:
            if targeted is None and "Expires" in headers:
                until = http_date(headers.get("Expires"))
                explicit = 0.0 if until is None else max(until - (date or now), 0.0)
    validator = "ETag" in headers or http_date(headers.get("Last-Modified")) is not None
    if explicit is None and "public" not in directives and status not in HEURISTIC_STATUSES:
        return None
    if explicit is not None:
        lifetime = explicit
    elif policy.default_ttl is not None:
        lifetime = policy.default_ttl
    elif policy.heuristic and (modified := http_date(headers.get("Last-Modified"))) is not None:
        lifetime = max((date or now) - modified, 0.0) * HEURISTIC_FRACTION
    else:
        lifetime = 0.0
    if "no-cache" in directives:
        lifetime = 0.0  # may be stored, must be revalidated before each reuse
    lifetime = min(lifetime, policy.cap)
    # no-cache: revalidated before every reuse, so never served stale either.
    must = any(
        d in directives for d in ("must-revalidate", "proxy-revalidate", "s-maxage", "no-cache")
    )
    # Date has whole seconds: the age it shows is counted in whole seconds too, so that an
    # answer from within the same second is not up to a second old already.
    apparent = max(math.floor(now) - date, 0.0) if date is not None else 0.0
    initial_age = max(apparent, float(age_value(headers.getall("Age", ())) or 0) + response_delay)
    swr = delta_seconds(directives.get("stale-while-revalidate"))
    sie = delta_seconds(directives.get("stale-if-error"))
    fresh = Freshness(
        lifetime=lifetime,
        initial_age=initial_age,
        must_revalidate=must,
        stale_while_revalidate=float(swr) if swr is not None else policy.stale_while_revalidate,
        stale_if_error=float(sie) if sie is not None else policy.stale_if_error,
        validator=validator,
    )
    return fresh if fresh.retention(policy) > 0 else None


# -- what a request asks ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Asks:
    """A request's cache directives (RFC 9111 5.2.1), or none when the route ignores them."""

    no_store: bool = False
    no_cache: bool = False  # also max-age=0 and Pragma: no-cache: revalidate first
    max_age: float | None = None
    max_stale: float | None = None  # inf for a bare max-stale
    min_fresh: float = 0.0
    only_if_cached: bool = False
    stale_if_error: float | None = None


NOTHING_ASKED = Asks()


def request_asks(headers: MultiMapping[str]) -> Asks:
    values = headers.getall("Cache-Control", ())
    if not values:
        pragma = headers.get("Pragma", "")
        if "no-cache" in pragma.lower():
            return Asks(no_cache=True)
        return NOTHING_ASKED
    d = cache_control(values)
    max_age = _number(d, "max-age")
    max_stale: float | None = None
    if "max-stale" in d:
        max_stale = float("inf") if not d["max-stale"] else _number(d, "max-stale")
    return Asks(
        no_store="no-store" in d,
        no_cache="no-cache" in d or max_age == 0,
        max_age=max_age,
        max_stale=max_stale,
        min_fresh=_number(d, "min-fresh") or 0.0,
        only_if_cached="only-if-cached" in d,
        stale_if_error=_number(d, "stale-if-error"),
    )


def _number(directives: Mapping[str, str], name: str) -> float | None:
    value = delta_seconds(directives.get(name))
    return None if value is None else float(value)


# -- the key ----------------------------------------------------------------------------------


def digest(raw_path: str, parts: Iterable[tuple[str, str]]) -> str:
    """``<url>:<variant>``: the path and query, then every other part of the key (the
    authority, the user, roles and scopes, the configured vary headers and cookies) as
    name/value pairs, none of which can be shuffled into another."""
    variant = blake2b(digest_size=8)
    for name, value in parts:
        variant.update(_framed(name) + _framed(value))
    return f"{url_digest(raw_path)}:{variant.hexdigest()}"


def _framed(text: str) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    return len(data).to_bytes(4, "big") + data


def url_digest(raw_path: str) -> str:
    return blake2b(raw_path.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def cookie_pairs(header: str | None) -> dict[str, str] | None:
    """The cookies of a Cookie header (RFC 6265 5.4), name to value; None when servers could
    read it two ways (a name given twice, where some keep the first and some the last, or a
    part without ``=``, which some read as a cookie of that name)."""
    cookies: dict[str, str] = {}
    if header:
        for part in header.split(";"):
            if not part.strip():
                continue
            name, sep, value = part.strip().partition("=")
            name = name.strip()
            if not sep or not name or name in cookies:
                return None
            cookies[name] = value.strip()
    return cookies


# -- the stored form --------------------------------------------------------------------------

ENTRY_VERSION = 2


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored response and what it carries about its reuse."""

    status: int
    reason: str | None
    headers: tuple[tuple[str, str], ...]
    body: bytes
    fresh: Freshness

    @classmethod
    def of(
        cls,
        status: int,
        reason: str | None,
        headers: CIMultiDictProxy[str] | MultiMapping[str],
        body: bytes,
        fresh: Freshness,
        skip: Iterable[str] = (),
    ) -> Entry:
        dropped = UNSTORED | {name.lower() for name in skip}
        kept = tuple((k, v) for k, v in headers.items() if k.lower() not in dropped)
        return cls(status, reason, kept, body, fresh)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    def updated(self, headers: MultiMapping[str], fresh: Freshness) -> Entry:
        """After a 304 (RFC 9111 4.3.4): its header fields replace the stored ones of the
        same name, and its freshness is the entry's new one."""
        given = {k.lower() for k in headers if k.lower() not in NOT_UPDATED}
        kept = tuple((k, v) for k, v in self.headers if k.lower() not in given)
        added = tuple((k, v) for k, v in headers.items() if k.lower() in given)
        return replace(self, headers=kept + added, fresh=fresh)

    def encode(self) -> bytes:
        # The head as JSON (never a raw newline inside), a newline, then the body as is.
        f = self.fresh
        head = orjson.dumps(
            [
                ENTRY_VERSION,
                self.status,
                self.reason,
                self.headers,
                [
                    f.lifetime,
                    f.initial_age,
                    f.must_revalidate,
                    f.stale_while_revalidate,
                    f.stale_if_error,
                    f.validator,
                ],
            ]
        )
        return head + b"\n" + self.body

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        """None for anything unreadable: a stored entry is never trusted to be well formed."""
        head, newline, body = raw.partition(b"\n")
        try:
            version, status, reason, headers, meta = orjson.loads(head)
            pairs = tuple((k, v) for k, v in headers)
            lifetime, initial_age, must, swr, sie, validator = meta
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return None
        numbers = (lifetime, initial_age, swr, sie)
        servable = (
            newline
            and version == ENTRY_VERSION
            and type(status) is int
            and 200 <= status <= 599
            and (reason is None or isinstance(reason, str))
            and all(type(n) in (int, float) and 0 <= n < float("inf") for n in numbers)
            and type(must) is bool
            and type(validator) is bool
            and all(isinstance(k, str) and isinstance(v, str) for k, v in pairs)
        )
        if not servable:
            return None
        fresh = Freshness(
            float(lifetime), float(initial_age), must, float(swr), float(sie), validator
        )
        return cls(status, reason, pairs, body, fresh)


class Capture:
    """The body of a streamed response, collected while it is relayed, up to ``limit``."""

    __slots__ = (
        "chunks",
        "complete",
        "detached",
        "headers",
        "hold",
        "limit",
        "on_stream",
        "size",
    )

    def __init__(
        self,
        limit: int,
        on_stream: Callable[[], None] | None = None,
        *,
        hold: bool = False,
        detached: bool = False,
    ) -> None:
        self.limit = limit
        self.on_stream = on_stream  # called when the proxy starts streaming the body
        # hold: a 304 (or a HEAD's answer) comes back unsent, for the cache to answer with.
        self.hold = hold
        # detached: no client waits (a background refresh): nothing is sent, the body is
        # read whole (up to ``limit``) instead of streamed.
        self.detached = detached
        self.size = 0
        self.chunks: list[bytes] | None = []
        self.complete = False
        # The upstream's head as the proxy relays it, before the gateway finishes it for this
        # client (security, CORS, rate limits, edits): what is stored is what the origin said.
        self.headers: MultiMapping[str] | None = None

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


# The counters of a route, as `spork cache stats` shows them: what clients were answered
# (hits, misses, stale, revalidated, bypasses), entries written, and invalidations.
COUNTED = ("hits", "misses", "stale", "revalidated", "bypasses", "stores", "invalidations")


async def cache_rows(
    store: StateStore, config: GatewayConfig, route: str | None = None
) -> list[dict[str, object]]:
    """Per cached route: entries held now, and the answers and writes counted so far."""
    prefix = config.state.prefix
    rows: list[dict[str, object]] = []
    for route_id, cfg in cached_routes(config, route):
        assert cfg.cache is not None
        stats_key = cache_stats_key(prefix, route_id)
        keys = await store.scan(glob_literal(cache_key(prefix, route_id, "")) + "*:*")
        counters = await store.cache_stats(stats_key)
        counted = {name: counters.get(name, 0) for name in COUNTED}
        # Answered from the cache: fresh, stale, or after a 304 from the upstream.
        served = counted["hits"] + counted["stale"] + counted["revalidated"]
        asked = served + counted["misses"]
        rows.append(
            {
                "route": route_id,
                "ttl": cfg.cache.ttl,
                "entries": len(keys),
                **counted,
                "hit_ratio": round(served / asked, 4) if asked else None,
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
