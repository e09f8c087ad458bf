"""Forwarding a request to a service: headers, streaming both ways, retries, timeouts.

Bodies stream in both directions; small bodies with a known length are read whole, which is
faster and makes them replayable for retries. A streamed request body is never replayed.
The upstream ``timeout`` bounds the wait for the response head; after that it bounds each
idle gap in the body, so long downloads and event streams are not cut off.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

import aiohttp
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from multidict import CIMultiDict
from yarl import URL

from spork_cli.gateway import h1
from spork_cli.gateway.forwarding import require_utf8, response_headers
from spork_cli.gateway.keys import (
    BODY,
    CAPTURE,
    ENDPOINT,
    UPSTREAM_SECONDS,
)
from spork_cli.gateway.table import strip
from spork_cli.gateway.websocket import proxy_websocket
from spork_cli.middleware.body import BodyLimit
from spork_cli.problems import HTTPProblem

if TYPE_CHECKING:
    from spork_cli.config.model import Retries
    from spork_cli.gateway.balancer import EndpointState
    from spork_cli.gateway.table import CompiledRoute
    from spork_cli.policies.cache import Capture

log = structlog.get_logger("spork.proxy")

IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))
REPLAYABLE_BODY = 64 * 1024
BUFFERED_RESPONSE = 256 * 1024


async def forward(request: web.Request, route: CompiledRoute) -> web.StreamResponse:
    """The innermost handler of every route."""
    if request.headers.get("Upgrade", "").lower() == "websocket" and route.config.websocket:
        return await proxy_websocket(request, route)
    limit = BodyLimit(route.max_body)
    try:
        return await _attempts(request, route, limit)
    except HTTPProblem:
        raise
    except RequestPayloadError as exc:
        limit.unreadable = exc
        raise limit.problem(request) from exc
    except Exception as exc:
        if limit.exceeded or limit.unreadable is not None:
            raise limit.problem(request) from exc
        raise


async def _attempts(
    request: web.Request, route: CompiledRoute, limit: BodyLimit
) -> web.StreamResponse:
    pool = route.pool
    upstream, endpoint = await _send(request, route, limit)
    try:
        if isinstance(upstream, h1.Response):
            return await _relay_h1(request, upstream, route.idle_timeout)
        return await _relay(request, upstream)
    finally:
        pool.release(endpoint)


Upstream = aiohttp.ClientResponse | h1.Response


def _discard(upstream: Upstream) -> None:
    if isinstance(upstream, h1.Response):
        upstream.close()
    else:
        upstream.release()


async def _send(
    request: web.Request, route: CompiledRoute, limit: BodyLimit
) -> tuple[Upstream, EndpointState]:
    """Send the request, retrying as configured; the endpoint stays acquired on success."""
    pool = route.pool
    service = pool.config
    body, replayable = await _request_body(request, limit)
    method = request.method
    may_retry = replayable and (method in IDEMPOTENT or route.config.retry_non_idempotent)
    attempts = 1 + (service.retries.attempts if may_retry else 0)
    path = _upstream_path(route, request.raw_path)
    pool.budget.record_request()
    session = pool.session
    if session is None:
        raise HTTPProblem(503, "service-closing", f"service '{pool.name}' is being replaced")
    tried: list[EndpointState] = []
    # No retry starts after the request deadline; each attempt is bounded by the connect and
    # idle timeouts, so the deadline needs no timer of its own on the hot path.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + route.request_timeout
    for attempt in range(attempts):
        if attempt and loop.time() >= deadline:
            raise HTTPProblem(
                504, "upstream-timeout", f"service '{pool.name}' gave no response in time"
            )
        client_timeout = route.client_timeout
        remaining = deadline - loop.time()
        if remaining < route.idle_timeout:
            # Near the deadline the attempt gets only what is left of it.
            client_timeout = aiohttp.ClientTimeout(
                total=None,
                sock_connect=min(service.connect_timeout, remaining),
                sock_read=remaining,
            )
        endpoint = pool.balancer.pick(tried)
        if endpoint is None:
            raise HTTPProblem(
                503, "no-healthy-endpoint", f"service '{pool.name}' has no healthy endpoint"
            )
        tried.append(endpoint)
        request[ENDPOINT] = endpoint.url
        last = attempt == attempts - 1
        headers = route.upstream_headers(request, endpoint, keep_length=not replayable)
        pool.acquire(endpoint)
        keep = False
        started = time.perf_counter()
        upstream: Upstream
        try:
            try:
                if endpoint.h1 is not None and replayable:
                    # The common case: plain HTTP and a body in hand. See gateway/h1.py.
                    upstream = await endpoint.h1.request(
                        method,
                        endpoint.base_path + path,
                        headers,
                        body if isinstance(body, bytes) else None,
                        min(remaining, route.idle_timeout),
                    )
                else:
                    require_utf8(headers)
                    request_call = session.request(
                        method,
                        URL(endpoint.base_str + path, encoded=True),
                        headers=CIMultiDict(headers),
                        data=body,
                        allow_redirects=False,
                        timeout=client_timeout,
                    )
                    if replayable:
                        upstream = await request_call
                    else:
                        async with asyncio.timeout(route.idle_timeout) as idle:
                            limit.idle, limit.idle_seconds = idle, route.idle_timeout
                            upstream = await request_call
                        limit.idle = None
            except (TimeoutError, h1.UpstreamTimeout) as exc:
                pool.record_failure(endpoint, "timeout")
                raise HTTPProblem(
                    504, "upstream-timeout", f"service '{pool.name}' did not answer in time"
                ) from exc
            except (
                aiohttp.ClientConnectorError,
                aiohttp.ServerDisconnectedError,
                h1.ConnectFailed,
                h1.Disconnected,
            ) as exc:
                if limit.exceeded or limit.unreadable is not None:
                    raise limit.problem(request) from exc
                _unless_client_left(request, exc)
                pool.record_failure(endpoint, _reason(exc))
                if not last and pool.budget.try_retry():
                    await _backoff(service.retries, attempt, deadline - loop.time())
                    continue
                raise HTTPProblem(
                    502, "upstream-unreachable", f"service '{pool.name}' could not be reached"
                ) from exc
            except (aiohttp.ClientError, h1.UpstreamError) as exc:
                if limit.exceeded or limit.unreadable is not None:
                    raise limit.problem(request) from exc
                _unless_client_left(request, exc)
                pool.record_failure(endpoint, _reason(exc))
                raise HTTPProblem(
                    502, "upstream-error", f"service '{pool.name}' gave an invalid response"
                ) from exc
            request[UPSTREAM_SECONDS] = time.perf_counter() - started
            if limit.exceeded or limit.unreadable is not None:
                _discard(upstream)
                raise limit.problem(request)
            status = upstream.status
            if status >= 500:
                pool.record_failure(endpoint, f"status {status}")
            else:
                endpoint.record_success()
            if not last and status in service.retries.on_status and pool.budget.try_retry():
                _discard(upstream)
                await _backoff(service.retries, attempt, deadline - loop.time())
                continue
            keep = True
            return upstream, endpoint
        finally:
            if not keep:
                pool.release(endpoint)
    raise AssertionError("unreachable: the last attempt always returns or raises")


def _unless_client_left(request: web.Request, exc: BaseException) -> None:
    """A request whose body was being streamed upstream fails when its client goes away: that
    is no failure of the endpoint (no breaker or health count), and nobody is left to answer
    (dispatch logs it as 499)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the client went away before its request was whole") from exc


async def _without_body(
    request: web.Request,
    status: int,
    reason: str | None,
    headers: CIMultiDict[str],
    capture: Capture | None = None,
) -> web.StreamResponse:
    """HEAD, 204 and 304: the upstream's headers (Content-Length too) and no body. For the
    cache (``capture.hold``) a 304, and any such answer with no client waiting, comes back
    unsent: the cache answers with its stored response instead. So does a GET's 204, which
    the cache may store (it has no length to keep: nothing is lost by sending it later)."""
    if capture is not None and (
        capture.detached
        or (capture.hold and (status == 304 or (status == 204 and request.method == "GET")))
    ):
        if status == 204:
            headers.popall("Content-Length", None)
            return web.Response(status=status, reason=reason, headers=headers, body=b"")
        return web.Response(status=status, reason=reason, headers=headers)
    response = web.StreamResponse(status=status, reason=reason)
    response.headers.extend(headers)
    await response.prepare(request)
    await response.write_eof()
    return response


async def _relay_h1(
    request: web.Request, upstream: h1.Response, timeout: float
) -> web.StreamResponse:
    headers = CIMultiDict(upstream.headers)
    capture = request.get(CAPTURE)
    if capture is not None:
        capture.headers = CIMultiDict(headers)
    if upstream.body is not None:
        if request.method == "HEAD" or upstream.status in (204, 304):
            return await _without_body(request, upstream.status, upstream.reason, headers, capture)
        headers.popall("Content-Length", None)
        return web.Response(
            status=upstream.status, reason=upstream.reason, body=upstream.body, headers=headers
        )
    if capture is not None and capture.detached:
        try:
            async for chunk in upstream.chunks(timeout):
                capture.add(chunk)
                if capture.chunks is None:
                    break  # too large to keep: read no further
        finally:
            upstream.close()
        capture.complete = True
        return _collected(upstream.status, upstream.reason, headers, capture)
    length = upstream.content_length()
    headers.popall("Content-Length", None)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    response.headers.extend(headers)
    if length is not None:
        response.content_length = length
    if capture is not None and capture.on_stream is not None:
        capture.on_stream()
    try:
        await response.prepare(request)
        async for chunk in upstream.chunks(timeout):
            if capture is not None:
                capture.add(chunk)
            await response.write(chunk)
        await response.write_eof()
        if capture is not None:
            capture.complete = True
    except h1.UpstreamError as exc:
        _cut(request, str(exc))
    except ConnectionResetError:
        pass  # the client went away; nothing is left to answer
    finally:
        upstream.close()
    return response


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    headers = response_headers(upstream.headers)
    length = upstream.content_length
    response: web.StreamResponse | None = None
    capture = request.get(CAPTURE)
    if capture is not None:
        capture.headers = CIMultiDict(headers)
    try:
        if request.method == "HEAD" or upstream.status in (204, 304):
            return await _without_body(request, upstream.status, upstream.reason, headers, capture)
        if capture is not None and capture.detached:
            async for chunk in upstream.content.iter_any():
                capture.add(chunk)
                if capture.chunks is None:
                    break  # too large to keep: read no further
            capture.complete = True
            return _collected(upstream.status, upstream.reason, headers, capture)
        if length is not None and length <= BUFFERED_RESPONSE:
            body = await upstream.read()
            headers.popall("Content-Length", None)
            return web.Response(
                status=upstream.status, reason=upstream.reason, body=body, headers=headers
            )
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        headers.popall("Content-Length", None)
        response.headers.extend(headers)
        if length is not None:
            response.content_length = length
        if capture is not None and capture.on_stream is not None:
            capture.on_stream()
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            if capture is not None:
                capture.add(chunk)
            await response.write(chunk)
        await response.write_eof()
        if capture is not None:
            capture.complete = True
        return response
    except ConnectionResetError:  # first: aiohttp's ClientConnectionResetError subclasses it
        if response is None:
            raise
        # Writing to the client failed: it went away, and nothing is left to answer. (Reading
        # from the upstream raises ClientPayloadError or ServerDisconnectedError, below.)
    except (aiohttp.ClientError, TimeoutError) as exc:
        if response is None or not response.prepared:
            raise HTTPProblem(
                502, "upstream-error", "the service's response broke off before its end"
            ) from exc
        _cut(request, _reason(exc))
    finally:
        upstream.release()
    return response


def _collected(
    status: int, reason: str | None, headers: CIMultiDict[str], capture: Capture
) -> web.Response:
    """A body read whole for nobody waiting (a background refresh): too large, it is a 502
    that is not stored."""
    body = capture.body()
    headers.popall("Content-Length", None)
    if body is None:
        return web.Response(status=502, headers={"X-Cache-Refresh": "too-large"})
    return web.Response(status=status, reason=reason, body=body, headers=headers)


def _cut(request: web.Request, reason: str) -> None:
    """The head was sent already: all that is left is to end the client's connection, so
    it sees the body stop short. The response is still returned, and so logged and counted."""
    log.warning("upstream broke off mid-response", error=reason)
    transport = request.transport
    if transport is not None:
        transport.close()


async def _request_body(request: web.Request, limit: BodyLimit) -> tuple[object, bool]:
    """The body to send: bytes when small and known (replayable), else the stream."""
    read = request.get(BODY)
    if read is not None:
        return read, True
    if not request.body_exists:
        return None, True
    limit.check_length(request)
    length = request.content_length
    if length is not None and length <= REPLAYABLE_BODY:
        return await request.read(), True
    return limit.stream(request), False


def _upstream_path(route: CompiledRoute, raw_path: str) -> str:

    return strip(route, raw_path)


async def _backoff(retries: Retries, attempt: int, remaining: float) -> None:
    # Full jitter (AWS architecture blog): spreads retries of many clients apart.
    ceiling = min(retries.max_backoff, retries.backoff * (2**attempt), max(remaining, 0.0))
    await asyncio.sleep(random.uniform(0, ceiling))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connect: {exc.os_error.strerror or exc.os_error}"
    return type(exc).__name__
