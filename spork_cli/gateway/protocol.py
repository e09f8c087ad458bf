"""Errors aiohttp answers before any handler runs (malformed requests, oversized headers)
are problem+json too, and never carry a traceback."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from spork_cli.middleware.errors import problem_response


class ProblemRequestHandler(RequestHandler):
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
        response = problem_response(status, slug, detail, headers={"Server": "spork"})
        response.force_close()
        del original
        return response


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or "").strip()
    first = text.splitlines()[0] if text else ""
    return first.split(":")[0][:200]


class ProblemServer(web.Server):
    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose low-level errors are problem+json."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = ProblemServer
        return server
