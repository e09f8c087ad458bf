"""The one upstream of the suite: a real HTTP server on loopback that records and echoes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from tests.support.net import LOOPBACK


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


async def serve_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: any free port); the runner and the bound port.

    A client that gives up (a gateway timeout) cancels the handler, so teardown does not
    wait for sleeps nobody is listening to any more.
    """
    runner = web.AppRunner(
        app, handle_signals=False, handler_cancellation=True, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


@dataclass
class Upstream:
    """A real HTTP server on loopback that echoes each request back as JSON.

    Routes: `/health` answers `{"status": "ok"}`; `/status/{code}` answers with that status;
    `/slow?ms=N` waits N ms first; `/stream` sends the echo chunked, in pieces; everything
    else echoes. Every request is recorded in `requests` and answered with an
    `X-Upstream: <name>` header, plus one header for each `respond-header=Name:Value` in the
    query.

    The echo body has `upstream` (this server's name), `method`, `raw_path` (as received,
    query included), `path` (still percent-encoded), `query` (raw), `headers` (lower-case
    names; repeated headers joined with ", ") and `body` (text).
    """

    name: str
    host: str = LOOPBACK
    port: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Serve on `port`, or on a port picked by the kernel when it is 0 (no race)."""
        if self._runner is not None:
            return
        self._runner, self.port = await serve_app(self._build_app(), self.host, self.port)

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
        app.router.add_route("*", "/{tail:(?s:.*)}", self._echo)  # control characters too
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        recorded = RecordedRequest(
            method=request.method,
            raw_path=request.raw_path,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=await request.read(),
        )
        self.requests.append(recorded)
        request[RECORDED] = recorded
        response: web.StreamResponse = await handler(request)
        if not response.prepared:
            response.headers.extend(self._asked_headers(request))
            response.headers["X-Upstream"] = self.name
        return response

    @staticmethod
    def _asked_headers(request: web.Request) -> list[tuple[str, str]]:
        asked = []
        for spec in request.query.getall("respond-header", ()):
            name, _, value = spec.partition(":")
            asked.append((name, value.strip()))
        return asked

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
        }

    async def _echo(self, request: web.Request) -> web.Response:
        return web.json_response(self._echo_payload(request))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.headers.extend(self._asked_headers(request))
        response.headers["X-Upstream"] = self.name
        response.enable_chunked_encoding()
        await response.prepare(request)
        body = json.dumps(self._echo_payload(request)).encode()
        for start in range(0, len(body), 16):
            await response.write(body[start : start + 16])
        await response.write_eof()
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        if code < 200 or code > 599:
            return web.json_response({"error": f"unsupported status {code}"}, status=400)
        if code in (204, 304):
            return web.Response(status=code)
        return web.json_response(self._echo_payload(request), status=code)

    async def _slow(self, request: web.Request) -> web.Response:
        try:
            delay_ms = float(request.query.get("ms", "1000"))
        except ValueError:
            return web.json_response({"error": "ms must be a number"}, status=400)
        await asyncio.sleep(delay_ms / 1000)
        return web.json_response(self._echo_payload(request))


class UpstreamFactory:
    """Starts named upstreams on demand and stops them all in `close()`."""

    def __init__(self) -> None:
        self.upstreams: dict[str, Upstream] = {}

    async def __call__(self, name: str | None = None) -> Upstream:
        if name is None:
            name = f"upstream-{len(self.upstreams) + 1}"
        if name in self.upstreams:
            raise ValueError(f"an upstream named {name!r} is already running")
        upstream = Upstream(name)
        await upstream.start()
        self.upstreams[name] = upstream
        return upstream

    async def many(self, *names: str) -> list[Upstream]:
        return [await self(name) for name in names]

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.stop()
