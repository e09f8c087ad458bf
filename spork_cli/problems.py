"""Every error a client sees is RFC 9457 ``application/problem+json``; never a traceback."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import structlog
from aiohttp import web

from spork_cli.gateway.keys import REQUEST_ID

log = structlog.get_logger("spork.gateway")

PROBLEM_TYPE = "urn:spork:problem:"
CONTENT_TYPE = "application/problem+json"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    422: "Unprocessable Content",
    431: "Request Header Fields Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class HTTPProblem(Exception):
    """Raised anywhere in a chain; the errors middleware renders it."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.close = close  # end the connection after the answer (the request is unreadable)
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def problem_body(
    status: int,
    slug: str,
    detail: str,
    request_id: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> bytes:
    """The RFC 9457 document of a problem, as bytes."""
    body: dict[str, object] = {
        "type": PROBLEM_TYPE + slug,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if request_id:
        body["request_id"] = request_id
    if extra:
        body.update(extra)
    return orjson.dumps(body)


def problem_response(
    status: int,
    slug: str,
    detail: str,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> web.Response:
    body = problem_body(status, slug, detail, request_id, extra)
    return web.Response(status=status, body=body, content_type=CONTENT_TYPE, headers=headers)


def render(problem: HTTPProblem, request: web.Request) -> web.Response:
    response = problem_response(
        problem.status,
        problem.slug,
        problem.detail,
        request.get(REQUEST_ID),
        problem.headers,
        problem.extra,
    )
    if problem.close:
        response.force_close()
    return response
