"""Response caching of a route, as a shared cache (RFC 9111, RFC 5861): GET and HEAD served
from the state store while fresh, revalidated with their validators once stale, served stale
where the response (or the route) allows it, and invalidated by a successful unsafe request.
Every answer says what the cache did: ``X-Cache: HIT|MISS|STALE|REVALIDATED|BYPASS``, with
``Age`` and ``X-Cache-Key``. What may be stored, and for how long, is `spork_cli.policies.cache`."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import structlog
from aiohttp import web
from multidict import CIMultiDict, MultiMapping

from spork_cli.errors import StateError
from spork_cli.gateway.canonical import BadPath, canonical_target
from spork_cli.gateway.forwarding import PROXY_ONLY
from spork_cli.gateway.keys import (
    CAPTURE,
    IDENTITY,
    RESPONSE_HEADERS,
    TABLE,
    UPSTREAM_CONDITIONS,
    UPSTREAM_SECONDS,
)
from spork_cli.middleware import Handler
from spork_cli.policies.cache import (
    CACHEABLE_METHODS,
    ERROR_STATUSES,
    NOTHING_ASKED,
    SAFE_METHODS,
    Asks,
    Capture,
    Entry,
    Policy,
    cookie_pairs,
    digest,
    freshness,
    http_date,
    request_asks,
    url_digest,
)
from spork_cli.policies.failure import StoreFailure
from spork_cli.problems import HTTPProblem
from spork_cli.state import CacheHit, StateStore, cache_key, cache_marker_key, cache_stats_key

if TYPE_CHECKING:
    from spork_cli.config.model import OnError, Route
    from spork_cli.gateway.forwarding import Forwarding
    from spork_cli.gateway.metrics import GatewayMetrics
    from spork_cli.state.outage import StateOutage

log = structlog.get_logger("spork.cache")

LOCK_TIMEOUT = 5.0  # longest a miss waits for a concurrent miss of the same key
COUNT_EVERY = 0.5  # the counters go to the store at most this often
REFRESHES = 32  # background refreshes (stale-while-revalidate) running at once, at most
RETRY_EVERY = 1.0  # an invalidation the store refused is tried again this often
UNSENT_LIMIT = 100_000  # invalidations held for a store that cannot take them, at most
_BACKGROUND: set[asyncio.Task[None]] = set()  # refreshes running after their answer was sent
_REFRESHES: set[str] = set()  # keys being refreshed in the background, every route's
# The longest any entry of a route could be kept, under any config this process has run:
# an invalidation marker outlives every entry it may invalidate, across reloads too.
_LONGEST: dict[str, float] = {}
# Requests that carry conditions only the origin can evaluate (on the state of the resource,
# not of a representation the cache holds): they go upstream, and are not stored.
ORIGIN_CONDITIONS = ("If-Match", "If-Unmodified-Since")


def _mark(request: web.Request, result: str, key: str | None = None) -> None:
    """Headers for this request's answer, relayed or served from the cache (the prepare hook
    adds them to whatever answer is sent)."""
    extra = request.get(RESPONSE_HEADERS)
    if extra is None:
        extra = request[RESPONSE_HEADERS] = {}
    extra["X-Cache"] = result
    if key is not None:
        extra["X-Cache-Key"] = key


def _strong(tag: str) -> str:
    return tag.strip().removeprefix("W/")


def not_modified(request: web.Request, entry: Entry) -> bool:
    """The client's own conditions (RFC 9110 13.2.2), against a stored 2xx: If-None-Match
    (weak comparison), else If-Modified-Since against Last-Modified."""
    if not 200 <= entry.status < 300:
        return False
    wanted = request.headers.get("If-None-Match")
    if wanted is not None:
        etag = entry.header("ETag")
        if etag is None:
            return False
        tags = {_strong(t) for t in wanted.split(",")}
        return "*" in tags or _strong(etag) in tags
    since = http_date(request.headers.get("If-Modified-Since"))
    modified = http_date(entry.header("Last-Modified"))
    return since is not None and modified is not None and modified <= since


def _serve(request: web.Request, entry: Entry, age: float, key: str, result: str) -> web.Response:
    headers = CIMultiDict(entry.headers)
    _mark(request, result, key)  # the head is finished with the request's own headers
    headers["Age"] = str(int(age))
    if not_modified(request, entry):
        return web.Response(status=304, headers=headers)
    return web.Response(status=entry.status, reason=entry.reason, headers=headers, body=entry.body)


def _validators(entry: Entry | None) -> tuple[tuple[str, str], ...]:
    """The conditions the cache sends for ``entry`` in place of the client's own (none: ask
    for the whole response, which can then be stored)."""
    if entry is None or not entry.fresh.validator:
        return ()
    pairs = []
    etag = entry.header("ETag")
    if etag is not None:
        pairs.append(("If-None-Match", etag))
    modified = entry.header("Last-Modified")
    if modified is not None:
        pairs.append(("If-Modified-Since", modified))
    return tuple(pairs)


class Counters:
    """What one route's cache answered in this process, added to the store's counters at most
    every ``COUNT_EVERY`` seconds (one write, not one per request)."""

    def __init__(self, stats: str, store: StateStore) -> None:
        self.stats = stats
        self.store = store
        self.pending: Counter[str] = Counter()
        self._scheduled = False

    def add(self, field: str) -> None:
        self.pending[field] += 1
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(COUNT_EVERY, self._flush_soon)

    def _flush_soon(self) -> None:
        task = asyncio.ensure_future(self.flush())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    async def flush(self) -> None:
        self._scheduled = False
        counts, self.pending = dict(self.pending), Counter()
        if not counts:
            return
        try:
            await self.store.cache_count(self.stats, counts)
        except StateError:
            self.pending.update(counts)  # the next flush tries again


class Unsent:
    """Invalidations a store could not take (it was unreachable), tried again every
    `RETRY_EVERY` seconds until it takes them or until nothing they cover could still be
    kept; while one is held, its URL is not served from the cache by this process."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[StateStore, float, float]] = {}  # marker: store, ttl, until
        self._retrying: asyncio.Task[None] | None = None

    def holds(self, marker: str) -> bool:
        return bool(self.held) and marker in self.held

    def add(self, store: StateStore, marker: str, ttl: float) -> None:
        if marker not in self.held and len(self.held) >= UNSENT_LIMIT:
            log.warning("cache invalidations pending past the limit; one is dropped")
            self.held.pop(next(iter(self.held)))
        self.held[marker] = (store, ttl, time.monotonic() + ttl)
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.ensure_future(self._retry())

    async def _retry(self) -> None:
        while self.held:
            await asyncio.sleep(RETRY_EVERY)
            now = time.monotonic()
            for marker, (store, ttl, until) in list(self.held.items()):
                if until <= now:
                    self.held.pop(marker, None)  # what it covered has expired by now
                    continue
                try:
                    await store.cache_invalidate(marker, ttl)
                except StateError:
                    break  # still unreachable: the rest wait for the next round
                except Exception as exc:  # a closed store (reloaded away): nothing to mark
                    log.info("cache invalidation dropped", error=str(exc)[:200])
                    self.held.pop(marker, None)
                else:
                    if self.held.get(marker, (None, 0.0, 0.0))[2] == until:
                        self.held.pop(marker, None)


UNSENT = Unsent()


class RouteCache:
    """The cache middleware of one route (``__call__``), and what other routes' unsafe
    requests use to invalidate its entries (`invalidate`)."""

    def __init__(
        self,
        route: Route,
        route_id: str,
        prefix: str,
        on_error: OnError,
        store: StateStore,
        local: StateStore | None,
        outage: StateOutage,
        forwarding: Forwarding | None = None,
        auth_cookie: str | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        assert route.cache is not None
        self.metrics = metrics
        self.route = route
        self.route_id = route_id
        self.prefix = prefix
        self.store = store
        self.local = local
        self.outage = outage
        self.failure = StoreFailure(on_error, outage, local, "cache", "use its cache")
        self.forwarding = forwarding
        self.auth_cookie = auth_cookie if route.auth != "none" else None
        self.policy = Policy.of(route.cache)
        stats = cache_stats_key(prefix, route_id)
        self.counters = Counters(stats, store)
        self.marker_ttl = _LONGEST[stats] = max(_LONGEST.get(stats, 0.0), self.policy.longest)
        # Concurrent misses of one key in this process wait for the first one's upstream call.
        self.flights: dict[str, asyncio.Future[Entry | None]] = {}

    # -- counting --------------------------------------------------------------------------

    def count(self, request: web.Request, result: str) -> None:
        field = {"HIT": "hits", "MISS": "misses", "BYPASS": "bypasses"}.get(result)
        self.counters.add(field or result.lower())
        if self.metrics is not None:
            self.metrics.count("cache_requests", self.route_id, result.lower())

    def answer(
        self, request: web.Request, entry: Entry, age: float, key: str, result: str
    ) -> web.Response:
        self.count(request, result)
        return _serve(request, entry, age, key, result)

    async def bypass(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        _mark(request, "BYPASS")
        self.count(request, "BYPASS")
        return await handler(request)

    # -- the store -------------------------------------------------------------------------

    async def lookup(self, key: str, marker: str) -> tuple[CacheHit | None, StateStore | None]:
        """The stored entry, and the store to write a fresh one to (None: do not store)."""
        if UNSENT.holds(marker):
            # Its URL was invalidated while the store could not take the marker: what the
            # store holds of it may be out of date, so it is neither served nor refilled.
            return None, None
        try:
            return await self.store.cache_get(key, marker), self.store
        except StateError as exc:
            fallback = self.failure.fallback(exc)
            if fallback is None:
                return None, None
            return await fallback.cache_get(key, marker), fallback

    async def keep(
        self, target: StateStore, key: str, marker: str, entry: Entry, asked: float
    ) -> None:
        """Store ``entry``, brought by a request sent upstream at ``asked`` (monotonic): not
        when its URL was invalidated since (that answer may be what the write replaced)."""
        try:
            encoded = entry.encode()
        except TypeError:
            return  # a header that is not text (bytes past UTF-8): not stored
        ttl = entry.fresh.retention(self.policy)
        try:
            stored = await target.cache_set(key, encoded, ttl, marker, time.monotonic() - asked)
        except StateError as exc:
            self.outage.failed("cache", exc)  # not stored: the next request asks the service again
            return
        if stored:
            self.counters.add("stores")

    async def drop(self, target: StateStore, key: str) -> None:
        try:
            await target.delete([key])
        except StateError as exc:
            self.outage.failed("cache", exc)

    async def invalidate(self, raw_path: str) -> None:
        """Entries of ``raw_path`` (path and query; every user and variant) are not served
        again, on any instance sharing the store. When the store cannot take the marker now,
        it is tried again until it does (or until nothing it covers could still be kept),
        and until then this process serves none of the URL's entries."""
        marker = cache_marker_key(self.prefix, self.route_id, url_digest(raw_path))
        for store in (self.store, self.local):
            if store is None:
                continue
            try:
                await store.cache_invalidate(marker, self.marker_ttl)
            except StateError as exc:
                self.outage.failed("cache", exc)
                UNSENT.add(store, marker, self.marker_ttl)
        self.counters.add("invalidations")

    # -- the key ---------------------------------------------------------------------------

    def key_parts(self, request: web.Request) -> list[tuple[str, str]] | None:
        """What besides the path and query tells responses apart; None: nothing may be shared
        (a cookie the key does not cover, a token that names no one)."""
        headers = request.headers
        parts = [("host", headers.get("Host", "").lower()), ("scheme", request.scheme)]
        forwarding = self.forwarding
        if (
            forwarding is not None
            and forwarding.trusted
            and forwarding.is_trusted(request.remote or "")
        ):
            # What trusted proxies say goes upstream, and the answer may reflect it.
            for name in ("X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"):
                parts.append((name.lower(), ", ".join(headers.getall(name, ()))))
            # Headers only trusted proxies may send (X-Original-URL, method overrides...)
            # change what the upstream does: such a request is not shared.
            if any(name in headers for name in PROXY_ONLY):
                return None
        if self.route.auth != "none":
            identity = request.get(IDENTITY)
            if identity is None and "Authorization" in headers:
                return None  # credentials the gateway did not read (Basic...): not shared
            if identity is not None:
                if not identity.sub:
                    return None  # a token that names no one cannot be told apart from another
                parts += [
                    ("user", identity.sub),
                    ("roles", " ".join(sorted(identity.roles))),
                    ("scopes", " ".join(sorted(identity.scopes))),
                ]
                if forwarding is not None:
                    # Every claim sent upstream (a tenant, an email...) may shape the answer.
                    claims = forwarding.claim_headers(identity)
                    parts += [(f"claim:{name.lower()}", value) for name, value in claims]
        if "Cookie" in headers:
            cookies = cookie_pairs("; ".join(headers.getall("Cookie")))
            if cookies is None:
                return None
            cookies.pop(self.auth_cookie or "", None)
            if not set(cookies) <= set(self.policy.cookies):
                return None
            parts += [(f"cookie:{name}", cookies.get(name, "")) for name in self.policy.cookies]
        for name in self.policy.vary:
            parts.append((f"vary:{name.lower()}", ", ".join(headers.getall(name, ()))))
        return parts

    # -- the request -----------------------------------------------------------------------

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        method = request.method
        if method not in CACHEABLE_METHODS:
            _mark(request, "BYPASS")
            self.count(request, "BYPASS")
            return await invalidating(request, handler)
        headers = request.headers
        if "Range" in headers or any(name in headers for name in ORIGIN_CONDITIONS):
            return await self.bypass(request, handler)
        # Without the user in the key, a response to a credentialed request is not shared.
        if self.route.auth == "none" and "Authorization" in headers:
            return await self.bypass(request, handler)
        parts = self.key_parts(request)
        if parts is None:
            return await self.bypass(request, handler)
        asks = request_asks(headers) if self.policy.request_directives else NOTHING_ASKED
        if asks.no_store:
            return await self.bypass(request, handler)
        key = digest(request.raw_path, parts)
        full_key = cache_key(self.prefix, self.route_id, key)
        marker = cache_marker_key(self.prefix, self.route_id, key.partition(":")[0])
        hit, target = await self.lookup(full_key, marker)
        entry = self.usable(hit) if hit is not None else None
        age = 0.0
        if entry is not None and hit is not None:
            age = entry.fresh.initial_age + hit.age
            left = entry.fresh.lifetime - age
            if left > 0 and _fresh_enough(asks, age, left):
                return self.answer(request, entry, age, key, "HIT")
            stale_for = max(-left, 0.0)
            if left <= 0 and _stale_allowed(asks, entry, age, stale_for):
                return self.answer(request, entry, age, key, "STALE")
            if (
                left <= 0
                and not asks.no_cache
                and asks.max_age is None
                and not entry.fresh.must_revalidate
                and stale_for <= entry.fresh.stale_while_revalidate
                and target is not None
            ):
                self.refresh_later(request, handler, full_key, marker, target, entry)
                return self.answer(request, entry, age, key, "STALE")
        if asks.only_if_cached:
            self.count(request, "MISS")
            raise HTTPProblem(504, "not-cached", "only-if-cached: no stored response may be used")
        if target is None:
            return await self.bypass(request, handler)
        leader = self.flights.get(full_key)
        if leader is not None:
            try:
                # Bounded, as nginx's proxy_cache_lock_timeout: an endless stream (or a slow
                # body) on the first request must not hold the others back.
                shared = await asyncio.wait_for(asyncio.shield(leader), LOCK_TIMEOUT)
            except TimeoutError:
                shared = None
            if shared is not None:
                return self.answer(request, shared, shared.fresh.initial_age, key, "HIT")
            _mark(request, "MISS", key)
            self.count(request, "MISS")
            return await handler(request)
        flight: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        self.flights[full_key] = flight

        def release() -> None:
            if not flight.done():
                flight.set_result(None)

        made: Entry | None = None
        try:
            response, made = await self.fetch(
                request, handler, full_key, marker, target, entry, age, asks, release
            )
            if made is not None and response is None:
                response = self.answer(request, made, made.fresh.initial_age, key, "REVALIDATED")
            assert response is not None
            return response
        finally:
            del self.flights[full_key]
            if not flight.done():
                flight.set_result(made)

    async def fetch(
        self,
        request: web.Request,
        handler: Handler,
        full_key: str,
        marker: str,
        target: StateStore,
        entry: Entry | None,
        age: float,
        asks: Asks,
        on_stream: Callable[[], None] | None = None,
    ) -> tuple[web.StreamResponse | None, Entry | None]:
        """Ask the upstream (with the entry's validators when there is one). Returns the
        answer and the entry now stored; no answer with an entry: a 304 revalidated it."""
        key = full_key.rpartition("}:")[2]
        _mark(request, "MISS", key)
        request[UPSTREAM_CONDITIONS] = _validators(entry)
        capture = request[CAPTURE] = Capture(
            self.policy.max_entry_size,
            on_stream=on_stream,
            hold=True,
        )
        asked = time.monotonic()
        try:
            response = await handler(request)
        except HTTPProblem as problem:
            if entry is not None and problem.status in ERROR_STATUSES:
                if _stale_on_error(asks, entry, age):
                    return self.answer(request, entry, age, key, "STALE"), None
            raise
        if entry is not None and response.status in ERROR_STATUSES and not response.prepared:
            if _stale_on_error(asks, entry, age):
                return self.answer(request, entry, age, key, "STALE"), None
        delay = request.get(UPSTREAM_SECONDS) or 0.0
        now = time.time()
        if entry is not None and response.status == 304 and not response.prepared:
            merged = _merged(entry, response.headers)
            fresh = freshness(entry.status, merged, self.policy, now, delay)
            if fresh is None:
                # The new headers forbid storing: this answer is the stored one, not kept.
                return self.answer(request, entry, 0.0, key, "REVALIDATED"), None
            updated = entry.updated(response.headers, fresh)
            await self.keep(target, full_key, marker, updated, asked)
            return None, updated
        self.count(request, "MISS")
        if entry is not None and request.method == "HEAD" and response.status == 200:
            origin = capture.headers if capture.headers is not None else response.headers
            await self.head_checked(origin, full_key, marker, target, entry, asked, now, delay)
            return response, None
        made = self.storable(request, response, capture, now, delay)
        if made is not None:
            await self.keep(target, full_key, marker, made, asked)
            if _client_conditional(request) and not_modified(request, made):
                return _serve(request, made, made.fresh.initial_age, key, "MISS"), made
        return response, made

    async def head_checked(
        self,
        given: MultiMapping[str],
        full_key: str,
        marker: str,
        target: StateStore,
        entry: Entry,
        asked: float,
        now: float,
        delay: float,
    ) -> None:
        """A HEAD's 200 for a stored GET (RFC 9111 4.3.5), ``given`` its upstream's head: the
        same representation (its validators, length and type agree) refreshes the entry's
        headers; another one means the entry is out of date, and it goes. (A client chooses
        when a HEAD is asked: it must not be able to retype what others are served.)"""
        length = given.get("Content-Length")
        same = (
            entry.fresh.validator
            and given.get("ETag") == entry.header("ETag")
            and given.get("Last-Modified") == entry.header("Last-Modified")
            and (length is None or length.strip() == str(len(entry.body)))
            and given.get("Content-Type") == entry.header("Content-Type")
        )
        fresh = freshness(entry.status, _merged(entry, given), self.policy, now, delay)
        if same and fresh is not None:
            await self.keep(target, full_key, marker, entry.updated(given, fresh), asked)
        else:
            await self.drop(target, full_key)

    def usable(self, hit: CacheHit) -> Entry | None:
        """The stored entry as this route's settings now allow it: none when kept longer
        than they would keep it, its freshness no longer than their ``ttl`` (a reload that
        lowers them applies to what is stored already)."""
        entry = Entry.decode(hit.value)
        if entry is None:
            return None
        fresh = entry.fresh
        if hit.age > fresh.retention(self.policy):
            return None
        if fresh.lifetime > self.policy.cap:
            return replace(entry, fresh=replace(fresh, lifetime=self.policy.cap))
        return entry

    def storable(
        self,
        request: web.Request,
        response: web.StreamResponse,
        capture: Capture,
        now: float,
        delay: float,
    ) -> Entry | None:
        if request.method != "GET":
            return None
        head = capture.headers if capture.headers is not None else response.headers
        fresh = freshness(response.status, head, self.policy, now, delay)
        if fresh is None:
            return None
        if isinstance(response, web.Response) and not response.prepared:
            body = response.body
            if not isinstance(body, bytes) or len(body) > self.policy.max_entry_size:
                return None
        else:
            body = capture.body()
            if body is None:
                return None
        # What the gateway added for this request alone (rate limits) is not stored.
        skip = tuple(request.get(RESPONSE_HEADERS) or ())
        return Entry.of(response.status, response.reason, head, body, fresh, skip)

    def refresh_later(
        self,
        request: web.Request,
        handler: Handler,
        full_key: str,
        marker: str,
        target: StateStore,
        entry: Entry,
    ) -> None:
        """stale-while-revalidate: one background request (per key, in this process, and at
        most `REFRESHES` at once) brings the entry up to date while the stale one is served."""
        if full_key in _REFRESHES or full_key in self.flights or len(_REFRESHES) >= REFRESHES:
            return
        _REFRESHES.add(full_key)
        clone = request.clone()
        clone[RESPONSE_HEADERS] = {}

        async def refresh() -> None:
            try:
                clone[CAPTURE] = Capture(self.policy.max_entry_size, detached=True, hold=True)
                clone[UPSTREAM_CONDITIONS] = _validators(entry)
                asked = time.monotonic()
                response = await handler(clone)
                now = time.time()
                delay = clone.get(UPSTREAM_SECONDS) or 0.0
                if response.status == 304:
                    merged = _merged(entry, response.headers)
                    fresh = freshness(entry.status, merged, self.policy, now, delay)
                    if fresh is not None:
                        updated = entry.updated(response.headers, fresh)
                        await self.keep(target, full_key, marker, updated, asked)
                        self.counters.add("revalidated")
                    return
                made = self.storable(clone, response, clone[CAPTURE], now, delay)
                if made is not None:
                    await self.keep(target, full_key, marker, made, asked)
            except Exception as exc:  # a background refresh that fails leaves the entry as is
                log.info("cache refresh failed", route=self.route_id, error=str(exc)[:200])
            finally:
                _REFRESHES.discard(full_key)

        task = asyncio.ensure_future(refresh())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


def _merged(entry: Entry, given: MultiMapping[str]) -> CIMultiDict[str]:
    """The stored headers with those of a 304 in place of theirs (RFC 9111 4.3.4)."""
    merged = CIMultiDict(entry.headers)
    for name in {k.lower() for k in given}:
        if name == "content-length":
            continue
        merged.popall(name, None)
        merged.extend((k, v) for k, v in given.items() if k.lower() == name)
    return merged


def _client_conditional(request: web.Request) -> bool:
    headers = request.headers
    return "If-None-Match" in headers or "If-Modified-Since" in headers


def _fresh_enough(asks: Asks, age: float, left: float) -> bool:
    if asks.no_cache:
        return False
    if asks.max_age is not None and age > asks.max_age:
        return False
    return left >= asks.min_fresh


def _stale_allowed(asks: Asks, entry: Entry, age: float, stale_for: float) -> bool:
    """max-stale: the client takes a stale answer (never one that must be revalidated)."""
    if asks.max_stale is None or asks.no_cache or entry.fresh.must_revalidate:
        return False
    if asks.max_age is not None and age > asks.max_age:
        return False
    return stale_for <= asks.max_stale


def _stale_on_error(asks: Asks, entry: Entry, age: float) -> bool:
    """stale-if-error, the response's (or the route's) or the request's."""
    if entry.fresh.must_revalidate:
        return False
    stale_for = max(age - entry.fresh.lifetime, 0.0)
    allowed = entry.fresh.stale_if_error
    if asks.stale_if_error is not None:
        allowed = max(allowed, asks.stale_if_error)
    return stale_for <= allowed


async def invalidating(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After a successful unsafe request (a 2xx or 3xx to anything but GET, HEAD, OPTIONS and
    TRACE): the cached responses for its target URI, and for its ``Location`` and
    ``Content-Location`` on the same authority, are invalidated (RFC 9111 4.4)."""
    response = await handler(request)
    if request.method in SAFE_METHODS or not 200 <= response.status < 400:
        return response
    targets = [request.raw_path]
    host = request.headers.get("Host", "").lower()
    for name in ("Location", "Content-Location"):
        value = response.headers.get(name)
        if value:
            path = _same_authority(value, request.raw_path, host)
            if path is not None:
                targets.append(path)
    await invalidate_targets(request, targets)
    return response


def _same_authority(reference: str, base: str, host: str) -> str | None:
    """The path and query of ``reference`` when it names this authority; None otherwise."""
    try:
        parts = urlsplit(urljoin(base, reference.strip()))
    except ValueError:
        return None
    if parts.netloc and parts.netloc.lower() != host:
        return None
    if parts.scheme and parts.scheme not in ("http", "https"):
        return None
    path = parts.path or "/"
    return path + (f"?{parts.query}" if parts.query else "")


async def invalidate_targets(request: web.Request, targets: list[str]) -> None:

    holder = request.app.get(TABLE)
    if holder is None:
        return
    table = holder.current
    server = table.config.server
    done: set[tuple[int, str]] = set()
    for target in targets:
        try:
            clean = (
                canonical_target(
                    target,
                    merge_slashes=server.merge_slashes,
                    keep_encoded_slashes=server.encoded_slashes == "keep",
                )
                or target
            )
        except BadPath:
            continue
        route = table.match("GET", clean).route
        cache = route.cache if route is not None else None
        if cache is not None and (route.index, clean) not in done:  # type: ignore[union-attr]
            done.add((route.index, clean))  # type: ignore[union-attr]
            await cache.invalidate(clean)
