"""Middlewares: plain async callables ``(request, handler) -> response``, chained per route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from spork_cli.auth.claims import Identity
    from spork_cli.cache import Capture

# Typed per-request storage shared by the dispatcher, the middlewares and the proxy.
REQUEST_ID = web.RequestKey("spork.request_id", str)
ENDPOINT = web.RequestKey("spork.endpoint", str)
UPSTREAM_SECONDS = web.RequestKey("spork.upstream_seconds", float)
# Headers a middleware adds to the response the proxy relays (e.g. rate-limit headers).
RESPONSE_HEADERS = web.RequestKey("spork.response_headers", dict)
# Set by the auth middleware for a verified token; typed without importing the auth stack.
IDENTITY: web.RequestKey[Identity] = web.RequestKey("spork.identity")
# Set by the cache middleware on a miss: the proxy keeps a copy of a streamed body in it.
CAPTURE: web.RequestKey[Capture] = web.RequestKey("spork.capture")
# The conditions the cache sends upstream in place of the client's If-None-Match and
# If-Modified-Since (its own validators, or none, to get a whole response it can store).
UPSTREAM_CONDITIONS = web.RequestKey("spork.upstream_conditions", tuple)
# A body a middleware has already read whole (to validate it): the proxy sends these bytes.
BODY = web.RequestKey("spork.body", bytes)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def chain(middlewares: Sequence[Middleware], handler: Handler) -> Handler:
    """Build the route's handler once: the first middleware is the outermost."""
    for middleware in reversed(middlewares):
        handler = _bind(middleware, handler)
    return handler


def _bind(middleware: Middleware, inner: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await middleware(request, inner)

    return handle
