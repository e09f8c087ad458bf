"""The client-facing connection: errors aiohttp answers before any handler runs (malformed
requests, oversized heads) are problem+json too, carry the configured security headers, and
never a traceback; and each connection is held to the listener's bounds (bounds.py):

- a request head must arrive within ``header_timeout`` of the connection's start or of its
  first byte (then 408, or for a connection that sent nothing, the close), and be at most
  ``max_header_size`` bytes (then 431; a request line over ``max_line_size`` is a 414);
- a body may pause at most ``body_idle`` while the gateway is reading it, and take at most
  ``body_total`` in all (then the read fails, which the proxy and the validator answer 408);
- an answer given before the request body's end (401, 404, 413, 415...) has
  ``Connection: close``: the body is not read on, what the client still sends is discarded for
  ``LINGER`` at most, and the connection closes;
- past ``max_connections`` open connections, a new one is a 503 problem and the close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest
from aiohttp.web_urldispatcher import UrlMappingMatchInfo
from yarl import URL

from spork_cli.gateway.app import dispatch
from spork_cli.gateway.bounds import DEFAULT_BOUNDS, LINGER, Bounds, Refusal, Refusals, head_size
from spork_cli.gateway.keys import TABLE
from spork_cli.headers import SERVER
from spork_cli.middleware.body import BodyTimeout
from spork_cli.middleware.request_id import request_id
from spork_cli.middleware.security import NO_PAIRS, Pairs
from spork_cli.problems import problem_response


def no_headers() -> Pairs:
    return NO_PAIRS


SLUGS = {408: "request-timeout", 414: "uri-too-long", 431: "header-too-large"}


class HeadRefused(BadHttpMessage):
    """A head the listener answers itself (too slow, too large): the client's error, so not
    logged (logs.py drops BadHttpMessage), like the parser's own."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.code = status


class ProblemRequestHandler(RequestHandler):
    # The headers of the table serving now: a reload changes them without a new connection.
    edge_headers: Callable[[], Pairs] = staticmethod(no_headers)
    bounds: Bounds = DEFAULT_BOUNDS
    # Per connection, set only when they change (the class values are the fresh state).
    _head_timer: Any = None  # asyncio.TimerHandle while a head is awaited
    _head_bytes = 0  # of a head not yet complete
    _body: StreamReader | None = None  # the last head's body, while it is being received
    _body_timer: Any = None
    _body_seen = 0.0  # when a byte of that body last came (or reading resumed)
    _body_due = 0.0  # when the whole body must be in (timeouts.body), pauses of ours added
    _body_checked = 0.0  # when _body_check last ran
    _counted = 0  # _request_count as data_received last left it
    _refused = False  # answered already: nothing more is read
    _gone: asyncio.Event | None = None  # set when the connection is lost (a lingering close)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # A connection that sends nothing is closed like one that sends a head too slowly.
        self._head_timer = self._loop.call_later(self.bounds.header_timeout, self._head_late)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._gone is not None:
            self._gone.set()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._body = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._request_count != self._counted:
            # Heads parsed elsewhere (the tail of a declined upgrade): whose bytes come next.
            self._body = self._receiving()
        body = self._body
        in_head = body is None or body.is_eof()
        count = self._request_count
        super().data_received(data)
        if self._upgraded or self._payload_parser is not None:
            self._counted = self._request_count
            if self._head_timer is not None:
                self._stop_head_timer()
            return
        if self._request_count == count:
            if in_head:
                if data:
                    self._head_bytes += len(data)
                    if self._head_bytes > self.bounds.max_header_size:
                        self._refuse(431, "the request head is larger than server.max_header_size")
                    elif self._head_timer is None:
                        self._head_timer = self._loop.call_later(
                            self.bounds.header_timeout, self._head_late
                        )
            elif self._body_timer is not None:
                self._body_seen = self._loop.time()
            return
        self._counted = self._request_count
        if self._head_timer is not None:
            self._stop_head_timer()
        if self._head_bytes + len(data) > self.bounds.max_header_size:
            self._check_heads(self._request_count - count)
        self._head_bytes = 0
        if self._refused or not self._messages:
            return
        payload = self._messages[-1][1]
        if payload.is_eof():
            self._body = None
            return
        self._body = payload
        now = self._body_seen = self._body_checked = self._loop.time()
        self._body_due = now + self.bounds.body_total
        if self._body_timer is None:
            first = min(self.bounds.body_idle, self.bounds.body_total)
            self._body_timer = self._loop.call_later(first, self._body_check)

    def _receiving(self) -> StreamReader | None:
        if self._messages:
            return self._messages[-1][1]
        current = self._current_request
        return current.content if current is not None else None

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _check_heads(self, new: int) -> None:
        """The size of each head that came whole in one read, too much data to tell by the
        read's size alone; the first one too large is answered 431, and nothing after it."""
        messages = self._messages
        start = len(messages) - new
        for i in range(max(start, 0), len(messages)):
            message = messages[i][0]
            if isinstance(message, _ErrInfo):
                continue
            size = head_size(message.method, message.path, message.raw_headers)
            if size > self.bounds.max_header_size:
                while len(messages) > i:
                    messages.pop()
                self._refuse(431, "the request head is larger than server.max_header_size")
                return

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` once the requests before are answered, and read no more."""
        self._refused = True
        self._stop_head_timer()
        exc = HeadRefused(status, message)
        self._messages.append((_ErrInfo(status=status, exc=exc, message=message), EMPTY_PAYLOAD))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _head_late(self) -> None:
        self._head_timer = None
        if self._refused or self.transport is None:
            return
        if self._head_bytes:
            self._refuse(408, "the request head did not arrive within server.timeouts.header")
        elif self._current_request is None and not self._messages:
            self.force_close()  # nothing sent at all: nobody to answer

    def _body_check(self) -> None:
        self._body_timer = None
        body = self._body
        if body is None or body.is_eof() or self.transport is None:
            return
        loop = self._loop
        now = loop.time()
        if self._reading_paused or self._buffer_paused:
            # The gateway is not reading (an upstream takes the body slowly): not the
            # client's pause, nor the client's time.
            self._body_seen = now
            self._body_due += now - self._body_checked
        self._body_checked = now
        idle = self._body_seen + self.bounds.body_idle
        deadline = min(idle, self._body_due)
        if now < deadline:
            self._body_timer = loop.call_at(deadline, self._body_check)
            return
        self._refused = True
        request = self._current_request
        if request is None or request.content is not body:
            self.force_close()  # answered already, or not started: nobody reads it
            return
        if now >= idle:
            why = f"no byte of the body for {self.bounds.body_idle:g}s (timeouts.body_idle)"
        else:
            why = f"the body took longer than {self.bounds.body_total:g}s (timeouts.body)"
        body.set_exception(BodyTimeout(why))

    def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> Coroutine[Any, Any, tuple[web.StreamResponse, bool]]:
        # Not a coroutine itself: the usual answer (its body read to the end) costs no frame.
        if request.content.is_eof():
            if self._refused:
                return self._finish_refused(request, resp, start_time)
            return super().finish_response(request, resp, start_time)
        return self._finish_early(request, resp, start_time)

    async def _finish_refused(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """A head refused (408, 431) while the client may still be sending it: the answer,
        then the end of our side, then what still comes is read and dropped for ``LINGER`` at
        most before the connection closes (a lingering close, as nginx's): closed with unread
        bytes, the socket would reset the connection, and the client could lose the answer."""
        result = await super().finish_response(request, resp, start_time)
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            self._gone = asyncio.Event()
            transport.write_eof()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gone.wait(), LINGER)
        return result

    async def _finish_early(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """Answered before the body's end: the rest is not read, and the connection ends."""
        body = request.content
        resp.force_close()
        broken = body.exception() is not None
        if broken:
            body.feed_eof()  # cut short or timed out: nothing more is read, not even to discard
        result = await super().finish_response(request, resp, start_time)
        transport = self.transport
        if not broken and transport is not None and transport.can_write_eof():
            transport.write_eof()  # the answer is whole: the client sees the end at once
        return result

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        original = super().handle_error(request, status, exc, message)
        if status == 400:
            status = _size_status(exc, self.max_line_size) or status
        slug = SLUGS.get(status) or ("bad-request" if status < 500 else "internal")
        detail = (
            HTTPStatus(status).description if status in HTTPStatus._value2member_map_ else "error"
        )
        if status < 500 and exc is not None:
            detail = _short(exc) or detail
        rid = request_id(None)
        # Said outright: aiohttp answers these as to an HTTP/1.0 request, where it goes unsaid.
        headers = {"Server": SERVER, "X-Request-ID": rid, "Connection": "close"}
        # No request was parsed, so HSTS (which depends on how it arrived) is left out.
        headers.update(self.edge_headers())
        response = problem_response(status, slug, detail, rid, headers=headers)
        response.force_close()
        del original
        return response


def _size_status(exc: BaseException | None, max_line_size: int) -> int | None:
    """414 for a request line over the parser's limit, 431 for a header field or too many of
    them (RFC 9110 15.5.15, RFC 6585 5); None for any other parse error."""
    if isinstance(exc, LineTooLong):
        return 414 if exc.args[1:2] == (max_line_size,) else 431
    if isinstance(exc, HttpProcessingError) and "Too many headers" in str(exc.message):
        return 431
    return None


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or "").strip()
    first = text.splitlines()[0] if text else ""
    return first.split(":")[0][:200]


def _direct(app: web.Application, routed: Any) -> Any:
    """The gateway app's handler without aiohttp's router: the app has one catch-all route,
    which every origin-form target resolves to, so such a request goes straight to dispatch
    with that route's match (built once). Any other target, a CONNECT (whose target aiohttp
    reads as an authority, which the router places nowhere: a 404), and a request with
    ``Expect`` (100-continue is the router's to answer) take aiohttp's own way."""
    route = next(iter(next(iter(app.router.resources()))))
    match = UrlMappingMatchInfo({}, route)
    match.add_app(app)
    match.freeze()

    async def handle(request: web.Request) -> web.StreamResponse:
        if (
            request.raw_path[:1] != "/"
            or request.method == "CONNECT"
            or "Expect" in request.headers
        ):
            return await routed(request)  # type: ignore[no-any-return]
        request._match_info = match
        return await dispatch(request)

    return handle


class ProblemServer(web.Server):
    edge_headers: Callable[[], Pairs] = staticmethod(no_headers)
    bounds: Bounds = DEFAULT_BOUNDS
    refusals: Refusals

    def __call__(self) -> Any:
        bounds = self.bounds
        if len(self._connections) >= bounds.max_connections:
            return Refusal(self.refusals, bounds.max_connections)
        handler = ProblemRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.edge_headers = self.edge_headers
        handler.bounds = bounds
        return handler


class GatewayRunner(web.AppRunner):
    """An AppRunner whose low-level errors are problem+json with the security headers, and
    whose connections keep to ``bounds``."""

    def __init__(
        self, app: web.Application, *, bounds: Bounds = DEFAULT_BOUNDS, **kwargs: Any
    ) -> None:
        kwargs.setdefault("lingering_time", LINGER)
        super().__init__(app, **kwargs)
        self.bounds = bounds

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = ProblemServer
        assert isinstance(server, ProblemServer)
        app = self.app
        if TABLE in app:
            server.edge_headers = lambda: app[TABLE].current.edge.security.plain
            server.request_handler = _direct(app, server.request_handler)
        server.bounds = self.bounds
        server.refusals = Refusals(server.edge_headers)
        make = server.request_factory

        def request_factory(message: Any, *args: Any) -> web.BaseRequest:
            if message.url is None:
                # aiohttp's parser lets a CONNECT without a target through, and no request can
                # be built from that; with an empty target no route takes it (404).
                message = message._replace(url=URL(""), path="")
            return make(message, *args)

        server.request_factory = request_factory
        return server
