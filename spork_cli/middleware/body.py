"""Request bodies, bounded: one limit for every part that reads or streams a body.

The listener hands bodies over as the client sent them, compressed or not (aiohttp's own
request-body decompression is off), so a body is only inflated where it must be read: a
``body_schema`` route, through ``read_inflated``, ``STEP`` bytes of output at a time with the
event loop free in between, and never past the route's ``max_body``.

``BodyTimeout`` is what a read raises when the client stopped sending the body for
``server.timeouts.body_idle`` (the listener sets it on the request's stream).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from spork_cli.problems import HTTPProblem

CHUNK = 64 * 1024
# Inflated bytes made per step: a step takes well under a millisecond, and the loop runs
# other clients' work between two steps.
STEP = 64 * 1024


class BodyTimeout(RequestPayloadError):
    """The client sent no byte of the body for the listener's ``body_idle``, or not the whole
    body within ``timeouts.body``; its message says which."""


def too_large(limit: int) -> HTTPProblem:
    return HTTPProblem(413, "body-too-large", f"the request body is larger than {limit} bytes")


def unreadable(exc: BaseException) -> HTTPProblem:
    """The answer to a body that broke off: the rest cannot be read either, so the
    connection ends after the answer."""
    if isinstance(exc, BodyTimeout):
        return HTTPProblem(
            408, "body-timeout", f"the request body came too slowly: {exc}", close=True
        )
    return HTTPProblem(
        400,
        "bad-request-body",
        f"the request body could not be read: {_reason_of(exc)}",
        close=True,
    )


def _reason_of(exc: BaseException) -> str:
    message = str(getattr(exc, "message", "") or exc).strip()
    return message.splitlines()[-1].strip() if message else "malformed"


class BodyLimit:
    """Counts a body; past the limit the stream stops and the client gets 413."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.exceeded = False
        self.unreadable: RequestPayloadError | None = None
        # While a streamed body is sent, each chunk the upstream takes pushes this deadline on:
        # an upstream that stops reading gets the same idle timeout as one that stops writing.
        self.idle: asyncio.Timeout | None = None
        self.idle_seconds = 0.0

    def check_length(self, request: web.Request) -> None:
        """413 before a byte is read when the announced length is over the limit."""
        length = request.content_length
        if length is not None and length > self.limit:
            raise too_large(self.limit)

    def problem(self, request: web.Request | None = None) -> HTTPProblem:
        if self.unreadable is not None and request is not None:
            request.content.feed_eof()
            return unreadable(self.unreadable)
        return too_large(self.limit)

    async def stream(self, request: web.Request) -> AsyncIterator[bytes]:
        seen = 0
        chunks = request.content.iter_chunked(CHUNK).__aiter__()
        while True:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except RequestPayloadError as exc:
                self.unreadable = exc
                raise
            seen += len(chunk)
            if seen > self.limit:
                self.exceeded = True
                raise self.problem()
            if self.idle is not None:
                self.idle.reschedule(asyncio.get_running_loop().time() + self.idle_seconds)
            yield chunk


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The whole body as sent, or 413 as soon as it passes ``limit`` (the rest is never
    read)."""
    counted = BodyLimit(limit)
    counted.check_length(request)
    body = bytearray()
    try:
        async for chunk in counted.stream(request):
            body += chunk
    except (RequestPayloadError, HttpProcessingError) as exc:
        raise unreadable(exc) from exc
    return bytes(body)


class Inflater(Protocol):
    """A zlib ``decompressobj``: at most ``max_length`` bytes out per call."""

    @property
    def unconsumed_tail(self) -> bytes: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def eof(self) -> bool: ...
    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


def _gzip(first: bytes) -> Inflater:
    return zlib.decompressobj(16 + zlib.MAX_WBITS)


def _deflate(first: bytes) -> Inflater:
    # RFC 9110 8.4.1.2: "deflate" is the zlib format; some clients send raw deflate, which
    # a zlib header (compression method 8 in the low nibble) tells apart.
    return zlib.decompressobj(zlib.MAX_WBITS if first[:1] and first[0] & 0x0F == 8 else -15)


# Content codings a body_schema route inflates (RFC 9110 8.4.1); any other is a 415.
INFLATERS = {"gzip": _gzip, "x-gzip": _gzip, "deflate": _deflate}
ACCEPT_ENCODING = ", ".join(("identity", *INFLATERS))


def coding_of(request: web.Request) -> str:
    """The request's one content coding, lower-cased; ``identity`` when none."""
    return request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"


async def read_inflated(request: web.Request, coding: str, limit: int) -> tuple[bytes, bytes]:
    """The body as sent and inflated, both bounded by ``limit`` (413 past it); 400 when the
    coding's data is broken or cut short. ``coding`` is a key of ``INFLATERS``."""
    counted = BodyLimit(limit)
    counted.check_length(request)
    make = INFLATERS[coding]
    sent = bytearray()
    plain = bytearray()
    inflater: Inflater | None = None
    try:
        async for chunk in counted.stream(request):
            sent += chunk
            data = chunk
            while data:
                if inflater is None:
                    inflater = make(data)
                elif inflater.eof:
                    if coding == "deflate":
                        raise _broken("data after the end of the deflate stream")
                    inflater = make(data)  # RFC 1952: gzip members may follow one another
                out = inflater.decompress(data, STEP)
                data = inflater.unconsumed_tail or inflater.unused_data
                if len(plain) + len(out) > limit:
                    raise too_large(limit)
                plain += out
                if out:
                    await asyncio.sleep(0)
    except (RequestPayloadError, HttpProcessingError) as exc:
        raise unreadable(exc) from exc
    except zlib.error as exc:
        raise _broken(f"invalid {coding} data ({exc})") from None
    if inflater is not None and not inflater.eof:
        raise _broken(f"the {coding} data ends before its end")
    return bytes(sent), bytes(plain)


def _broken(detail: str) -> HTTPProblem:
    return HTTPProblem(400, "bad-request-body", f"the request body could not be read: {detail}")
