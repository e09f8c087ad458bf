"""Middlewares: plain async callables ``(request, handler) -> response``, chained per route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

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
