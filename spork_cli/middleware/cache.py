"""Response caching of a route: GET and HEAD served from the state store while fresh, with
``X-Cache: HIT|MISS|BYPASS``, ``Age`` and ``X-Cache-Key``; what may be stored, and for how
long, is `spork_cli.cache`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from spork_cli.cache import CACHEABLE_METHODS, Capture, Entry, digest, lifetime
from spork_cli.errors import StateError
from spork_cli.gateway.metrics import METRICS
from spork_cli.middleware import (
    CAPTURE,
    IDENTITY,
    REQUEST_ID,
    RESPONSE_HEADERS,
    Handler,
    Middleware,
)
from spork_cli.middleware.errors import HTTPProblem
from spork_cli.state import CacheHit, StateStore, cache_key, cache_stats_key

if TYPE_CHECKING:
    from spork_cli.config.model import Cache, OnError, Route
    from spork_cli.state.outage import StateOutage


LOCK_TIMEOUT = 5.0  # longest a miss waits for a concurrent miss of the same key


def _mark(request: web.Request, result: str, key: str | None = None) -> None:
    """Headers for the response the proxy relays (it merges them in before sending)."""
    extra = request.get(RESPONSE_HEADERS)
    if extra is None:
        extra = request[RESPONSE_HEADERS] = {}
    extra["X-Cache"] = result
    if key is not None:
        extra["X-Cache-Key"] = key


def _bypass(request: web.Request, route: Route) -> bool:
    if request.method not in CACHEABLE_METHODS or "Range" in request.headers:
        return True
    # Without the user in the key, a response to a credentialed request is not shared.
    return route.auth == "none" and "Authorization" in request.headers


def _not_modified(request: web.Request, entry: Entry) -> bool:
    wanted = request.headers.get("If-None-Match")
    if not wanted or entry.status != 200:
        return False
    etag = next((v for k, v in entry.headers if k.lower() == "etag"), None)
    if etag is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in wanted.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags


def _serve(request: web.Request, entry: Entry, age: float, key: str) -> web.Response:
    headers = CIMultiDict(entry.headers)
    headers["X-Request-ID"] = request[REQUEST_ID]
    headers["Server"] = "spork"
    extra = request.get(RESPONSE_HEADERS)
    if extra:
        headers.update(extra)
    headers["X-Cache"] = "HIT"
    headers["X-Cache-Key"] = key
    headers["Age"] = str(int(entry.age + age))
    if _not_modified(request, entry):
        return web.Response(status=304, headers=headers)
    return web.Response(status=entry.status, reason=entry.reason, headers=headers, body=entry.body)


def cache_middleware(
    route: Route,
    route_id: str,
    prefix: str,
    policy: OnError,
    store: StateStore,
    local: StateStore | None,
    outage: StateOutage,
) -> Middleware:
    config: Cache | None = route.cache
    assert config is not None
    statuses = frozenset(config.statuses)
    vary = tuple(config.vary)
    varied = frozenset(name.lower() for name in vary)
    stats = cache_stats_key(prefix, route_id)
    # Concurrent misses of one key in this process wait for the first one's upstream call.
    flights: dict[str, asyncio.Future[Entry | None]] = {}

    def mark(request: web.Request, result: str, key: str | None = None) -> None:
        _mark(request, result, key)
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.count("cache_requests", route_id, result.lower())

    def serve(request: web.Request, entry: Entry, age: float, key: str) -> web.Response:
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.count("cache_requests", route_id, "hit")
        return _serve(request, entry, age, key)

    async def lookup(request: web.Request, key: str) -> tuple[CacheHit | None, StateStore | None]:
        """The stored entry, and the store to write a fresh one to (None: do not store)."""
        try:
            return await store.cache_get(key, stats), store
        except StateError as exc:
            outage.failed("cache", exc)
            if policy == "closed":
                raise HTTPProblem(
                    503, "state-unavailable", "the gateway cannot use its cache right now"
                ) from exc
            if policy == "local" and local is not None:
                return await local.cache_get(key, stats), local
            return None, None

    async def keep(target: StateStore, key: str, entry: Entry, ttl: float) -> None:
        try:
            await target.cache_set(key, stats, entry.encode(), ttl)
        except StateError as exc:
            outage.failed("cache", exc)  # not stored: the next request asks the service again

    def storable(
        response: web.StreamResponse, capture: Capture, skip: tuple[str, ...]
    ) -> tuple[Entry, float] | None:
        if response.status not in statuses:
            return None
        ttl = lifetime(response.headers, config.ttl, varied)
        if ttl is None:
            return None
        if isinstance(response, web.Response) and not response.prepared:
            body = response.body
            if not isinstance(body, bytes) or len(body) > config.max_entry_size:
                return None
        else:
            body = capture.body()
            if body is None:
                return None
        return Entry.of(response.status, response.reason, response.headers, body, skip), ttl

    async def cached(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _bypass(request, route):
            mark(request, "BYPASS")
            return await handler(request)
        identity = request.get(IDENTITY) if route.auth != "none" else None
        if identity is not None and not identity.sub:
            # A token that names no one cannot be told apart from another: nothing shared.
            mark(request, "BYPASS")
            return await handler(request)
        user = identity.sub if identity is not None else None
        key = digest(request.raw_path, request.headers, vary, user)
        full_key = cache_key(prefix, route_id, key)
        hit, target = await lookup(request, full_key)
        if hit is not None:
            entry = Entry.decode(hit.value)
            if entry is not None:
                return serve(request, entry, hit.age, key)
        if target is None:
            mark(request, "BYPASS")
            return await handler(request)
        leader = flights.get(full_key)
        if leader is not None:
            try:
                # Bounded, as nginx's proxy_cache_lock_timeout: an endless stream (or a slow
                # body) on the first request must not hold the others back.
                shared = await asyncio.wait_for(asyncio.shield(leader), LOCK_TIMEOUT)
            except TimeoutError:
                shared = None
            if shared is not None:
                return serve(request, shared, 0.0, key)
            mark(request, "MISS", key)
            return await handler(request)
        flight: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        flights[full_key] = flight

        def release() -> None:
            if not flight.done():
                flight.set_result(None)

        entry_made: Entry | None = None
        try:
            mark(request, "MISS", key)
            # A streamed body may take long (or never end): waiters go their own way at once.
            capture = request[CAPTURE] = Capture(config.max_entry_size, on_stream=release)
            response = await handler(request)
            if request.method == "GET":
                # What the gateway added for this request alone (rate limits) is not stored.
                made = storable(response, capture, tuple(request.get(RESPONSE_HEADERS) or ()))
                if made is not None:
                    entry_made, ttl = made
                    await keep(target, full_key, entry_made, ttl)
            return response
        finally:
            del flights[full_key]
            if not flight.done():
                flight.set_result(entry_made)

    return cached
