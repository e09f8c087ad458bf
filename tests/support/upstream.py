"""The one upstream of the suite: a real HTTP server on loopback that records and echoes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from tests.support.net import LOOPBACK

# 1 MiB that is not all one byte (a shifted body shows), written a MiB at a time
PATTERN = bytes(range(256)) * 4096


def pattern_blocks(size: int) -> Iterator[memoryview]:
    """``size`` bytes of PATTERN repeated, as views of it: generated on the fly, never held."""
    view = memoryview(PATTERN)
    whole, rest = divmod(size, len(PATTERN))
    for _ in range(whole):
        yield view
    if rest:
        yield view[:rest]


def pattern_bytes(size: int) -> bytes:
    """What ``/bytes?size=N`` sends, whole."""
    return b"".join(pattern_blocks(size))


def pattern_digest(size: int) -> str:
    """The sha256 of what ``/bytes?size=N`` sends, without holding it."""
    digest = hashlib.sha256()
    for block in pattern_blocks(size):
        digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class RecordedRequest:
    """What an upstream saw, byte-exact where the gateway could get it wrong."""

    method: str
    raw_path: str
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def path(self) -> str:
        return self.raw_path.partition("?")[0]

    @property
    def query(self) -> str:
        return self.raw_path.partition("?")[2]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


RECORDED = web.RequestKey("recorded", RecordedRequest)
NTH = web.RequestKey("nth", int)  # how many requests for this path, this one included


async def serve_app(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: any free port), over TLS with ``ssl_context``; the
    runner and the bound port.

    A client that gives up (a gateway timeout) cancels the handler, so teardown does not
    wait for sleeps nobody is listening to any more.
    """
    runner = web.AppRunner(
        app, handle_signals=False, handler_cancellation=True, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


@dataclass
class Upstream:
    """A real HTTP server on loopback that echoes each request back as JSON.

    Routes (``/hold``, ``/bytes`` and ``/sse`` also answer ``/<route>/<anything>``, so a test
    can give each of its resources a path of its own; every other path echoes):

    - ``/health`` answers ``{"status": "ok"}``; ``/status/{code}`` answers with that status.
    - ``/slow?ms=N`` waits N ms first; ``/hold`` waits until ``gate`` is set.
    - ``/stream`` sends the echo chunked, in pieces.
    - ``/bytes?size=N`` sends N bytes of ``PATTERN``, chunked, or with a Content-Length when
      ``length=1``.
    - ``/upload`` reads the body as it streams in, without keeping it (it is recorded
      empty), and answers ``{"size", "sha256", "chunked"}``.
    - ``/sse`` is an event stream (``Cache-Control: no-cache``): ``data: <n>`` at once, then,
      once ``gate`` is set, one ``data: <value>`` for each ``then=<value>`` in the query;
      ``events_sent`` counts the events written.
    - everything else echoes.

    On any route, ``respond-status=N`` in the query answers with status N, and each
    ``respond-header=Name:Value`` adds that response header (then those `respond` set for
    the path). With ``validate=1`` the upstream evaluates a conditional request as a web
    framework does: an ``If-None-Match`` that matches the response's ``ETag`` (or, without
    it, an ``If-Modified-Since`` not before its ``Last-Modified``) is answered 304 with the
    response's caching headers. ``status`` answers every request
    (``/health`` too) with that status, and ``answer(status, path)`` every later request for
    ``path``; either way the body is the echo. Every request is recorded in ``requests`` and
    answered with an ``X-Upstream: <name>`` header. ``tls`` serves HTTPS with that server
    context.

    The echo body has ``upstream`` (this server's name), ``method``, ``raw_path`` (as
    received, query included), ``path`` (still percent-encoded), ``query`` (raw), ``headers``
    (lower-case names; repeated headers joined with ", "), ``body`` (text) and ``n`` (how many
    requests for this path reached the upstream, this one included).
    """

    name: str
    host: str = LOOPBACK
    port: int = 0
    tls: ssl.SSLContext | None = field(default=None, repr=False)
    status: int | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    events_sent: int = 0
    _answers: dict[str, int] = field(default_factory=dict, repr=False)
    _headers: dict[str, list[tuple[str, str]]] = field(default_factory=dict, repr=False)
    _asked: Counter[str] = field(default_factory=Counter, repr=False)
    _runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def hits(self) -> int:
        """Requests recorded, active health probes (``/health``) left out."""
        return sum(1 for request in self.requests if request.path != "/health")

    def calls(self, path: str) -> int:
        """Requests for ``path`` (whatever their query) that reached the upstream."""
        return self._asked[path]

    def answer(self, status: int, path: str) -> None:
        """Answer every later request for ``path`` with ``status``."""
        self._answers[path] = status

    def respond(self, path: str, *headers: str) -> None:
        """Add ``headers`` ("Name: value") to every later answer for ``path`` (none: stop)."""
        self._headers[path] = [
            (name.strip(), value.strip()) for name, _, value in (h.partition(":") for h in headers)
        ]

    async def start(self) -> None:
        """Serve on `port`, or on a port picked by the kernel when it is 0 (no race)."""
        if self._runner is not None:
            return
        self._runner, self.port = await serve_app(self._build_app(), self.host, self.port, self.tls)

    async def stop(self) -> None:
        """Stop serving; the port is kept so `start()` brings the same upstream back."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/health", self._health)
        app.router.add_route("*", "/status/{code:[0-9]{3}}", self._status)
        app.router.add_route("*", "/slow", self._slow)
        app.router.add_route("*", "/stream", self._stream)
        app.router.add_route("*", "/upload", self._upload)
        for route, handler in (("/hold", self._hold), ("/bytes", self._bytes), ("/sse", self._sse)):
            app.router.add_route("*", route + "{tail:(/.*)?}", handler)
        app.router.add_route("*", "/{tail:(?s:.*)}", self._echo)  # control characters too
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        streamed = request.path == "/upload"
        recorded = RecordedRequest(
            method=request.method,
            raw_path=request.raw_path,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=b"" if streamed else await request.read(),
        )
        self.requests.append(recorded)
        self._asked[recorded.path] += 1
        request[RECORDED] = recorded
        request[NTH] = self._asked[recorded.path]
        status = self._answers.get(recorded.path, self.status)
        if status is not None:
            response: web.StreamResponse = self._echo_response(request, status)
        else:
            response = await handler(request)
        if not response.prepared:
            self._add_headers(request, response)
            if request.query.get("validate") == "1" and _not_modified(request, response):
                return _not_modified_response(response)
        return response

    def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for spec in request.query.getall("respond-header", ()):
            name, _, value = spec.partition(":")
            response.headers.add(name, value.strip())
        for name, value in self._headers.get(request.path, ()):
            if name.lower() == "content-type":
                response.headers[name] = value  # replaces the echo's own
            else:
                response.headers.add(name, value)
        response.headers["X-Upstream"] = self.name

    def _echo_payload(self, request: web.Request) -> dict[str, Any]:
        recorded = request[RECORDED]
        headers: dict[str, str] = {}
        for key, value in recorded.headers.items():
            name = key.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return {
            "upstream": self.name,
            "method": recorded.method,
            "raw_path": recorded.raw_path,
            "path": recorded.path,
            "query": recorded.query,
            "headers": headers,
            "body": recorded.text,
            "n": request[NTH],
        }

    def _echo_response(self, request: web.Request, status: int | None = None) -> web.Response:
        if status is None:
            status = int(request.query.get("respond-status", "200"))
        if status in (204, 304):
            return web.Response(status=status)
        return web.json_response(self._echo_payload(request), status=status)

    async def _echo(self, request: web.Request) -> web.Response:
        return self._echo_response(request)

    async def _prepare_stream(
        self, request: web.Request, content_type: str, **headers: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers)
        response.content_type = content_type
        self._add_headers(request, response)
        await response.prepare(request)
        return response

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        self._add_headers(request, response)
        await response.prepare(request)
        body = json.dumps(self._echo_payload(request)).encode()
        for start in range(0, len(body), 16):
            await response.write(body[start : start + 16])
        await response.write_eof()
        return response

    async def _bytes(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        response = web.StreamResponse()
        response.content_type = "application/octet-stream"
        if request.query.get("length") == "1":
            response.content_length = size
        else:
            response.enable_chunked_encoding()
        self._add_headers(request, response)
        await response.prepare(request)
        if request.method != "HEAD":  # aiohttp would send what is written, even to a HEAD
            for block in pattern_blocks(size):
                await response.write(block)
        await response.write_eof()
        return response

    async def _upload(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        chunked = request.headers.get("Transfer-Encoding", "").lower() == "chunked"
        return web.json_response({"size": size, "sha256": digest.hexdigest(), "chunked": chunked})

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        response.content_type = "text/event-stream"
        self._add_headers(request, response)
        await response.prepare(request)
        await response.write(f"data: {request[NTH]}\n\n".encode())
        self.events_sent += 1
        await self.gate.wait()
        for value in request.query.getall("then", ()):
            await response.write(f"data: {value}\n\n".encode())
            self.events_sent += 1
        await response.write_eof()
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        if code < 200 or code > 599:
            return web.json_response({"error": f"unsupported status {code}"}, status=400)
        return self._echo_response(request, code)

    async def _slow(self, request: web.Request) -> web.Response:
        try:
            delay_ms = float(request.query.get("ms", "1000"))
        except ValueError:
            return web.json_response({"error": "ms must be a number"}, status=400)
        await asyncio.sleep(delay_ms / 1000)
        return self._echo_response(request)

    async def _hold(self, request: web.Request) -> web.Response:
        await self.gate.wait()
        return self._echo_response(request)


# What a 304 repeats of the response it stands for (RFC 9110 15.4.5).
NOT_MODIFIED_KEEPS = (
    "Cache-Control",
    "CDN-Cache-Control",
    "Content-Location",
    "Content-MD5",
    "Content-Type",
    "Date",
    "ETag",
    "Expires",
    "Last-Modified",
    "Vary",
    "X-Upstream",
)


def _not_modified(request: web.Request, response: web.StreamResponse) -> bool:
    if not 200 <= response.status < 300:
        return False
    tags = request.headers.get("If-None-Match")
    etag = response.headers.get("ETag")
    if tags is not None:
        wanted = {t.strip().removeprefix("W/") for t in tags.split(",")}
        return etag is not None and ("*" in wanted or etag.removeprefix("W/") in wanted)
    since = request.if_modified_since
    modified = response.headers.get("Last-Modified")
    if since is None or modified is None:
        return False
    from email.utils import parsedate_to_datetime

    return parsedate_to_datetime(modified) <= since


def _not_modified_response(response: web.StreamResponse) -> web.Response:
    answer = web.Response(status=304)
    for name in NOT_MODIFIED_KEEPS:
        for value in response.headers.getall(name, ()):
            answer.headers.add(name, value)
    return answer


class UpstreamFactory:
    """Starts named upstreams on demand and stops them all in `close()`."""

    def __init__(self) -> None:
        self.upstreams: dict[str, Upstream] = {}

    async def __call__(self, name: str | None = None, **options: Any) -> Upstream:
        """Start an upstream; ``options`` are `Upstream`'s (``tls``, ``port``...)."""
        if name is None:
            name = f"upstream-{len(self.upstreams) + 1}"
        if name in self.upstreams:
            raise ValueError(f"an upstream named {name!r} is already running")
        upstream = Upstream(name, **options)
        await upstream.start()
        self.upstreams[name] = upstream
        return upstream

    async def many(self, *names: str) -> list[Upstream]:
        return [await self(name) for name in names]

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.stop()


class ThreadedUpstream:
    """An `Upstream` serving from an event loop of its own, in a thread: a module-scoped
    upstream that outlives each test's loop. ``upstream`` is read and shaped (`calls`,
    `respond`, `answer`) from the test as usual; `call` runs anything else on its loop."""

    def __init__(self, upstream: Upstream, loop: asyncio.AbstractEventLoop) -> None:
        self.upstream = upstream
        self.loop = loop

    def call(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` on the upstream's loop, and return what it returned once it has."""

        async def run() -> Any:
            return work()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)


@contextlib.contextmanager
def upstream_in_thread(name: str, **options: Any) -> Iterator[ThreadedUpstream]:
    """A started `Upstream` on a loop in a thread of its own; stopped, and the thread ended,
    on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"upstream-{name}", daemon=True)
    thread.start()

    async def start() -> Upstream:
        upstream = Upstream(name, **options)
        await upstream.start()
        return upstream

    try:
        upstream = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
        try:
            yield ThreadedUpstream(upstream, loop)
        finally:
            asyncio.run_coroutine_threadsafe(upstream.stop(), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
