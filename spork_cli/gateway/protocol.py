"""Errors aiohttp answers before any handler runs (malformed requests, oversized headers)
are problem+json too, carry the configured security headers, and never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from yarl import URL

from spork_cli.gateway.app import TABLE
from spork_cli.middleware.errors import problem_response
from spork_cli.middleware.request_id import request_id
from spork_cli.middleware.security import NO_PAIRS, Pairs


def no_headers() -> Pairs:
    return NO_PAIRS


class ProblemRequestHandler(RequestHandler):
    # The headers of the table serving now: a reload changes them without a new connection.
    edge_headers: Callable[[], Pairs] = staticmethod(no_headers)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        original = super().handle_error(request, status, exc, message)
        slug = "bad-request" if status < 500 else "internal"
        detail = (
            HTTPStatus(status).description if status in HTTPStatus._value2member_map_ else "error"
        )
        if status < 500 and exc is not None:
            detail = _short(exc) or detail
        rid = request_id(None)
        headers = {"Server": "spork", "X-Request-ID": rid}
        # No request was parsed, so HSTS (which depends on how it arrived) is left out.
        headers.update(self.edge_headers())
        response = problem_response(status, slug, detail, rid, headers=headers)
        response.force_close()
        del original
        return response


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or "").strip()
    first = text.splitlines()[0] if text else ""
    return first.split(":")[0][:200]


class ProblemServer(web.Server):
    edge_headers: Callable[[], Pairs] = staticmethod(no_headers)

    def __call__(self) -> RequestHandler:
        handler = ProblemRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.edge_headers = self.edge_headers
        return handler


class GatewayRunner(web.AppRunner):
    """An AppRunner whose low-level errors are problem+json with the security headers."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = ProblemServer
        assert isinstance(server, ProblemServer)
        app = self.app
        if TABLE in app:
            server.edge_headers = lambda: app[TABLE].current.edge.security.plain
        make = server.request_factory

        def request_factory(message: Any, *args: Any) -> web.BaseRequest:
            if message.url is None:
                # aiohttp's parser lets a CONNECT without a target through, and no request can
                # be built from that; with an empty target no route takes it (404).
                message = message._replace(url=URL(""), path="")
            return make(message, *args)

        server.request_factory = request_factory
        return server
