"""Helpers for the edge tests: a backend the test shapes through the query string, an
in-process gateway in front of it (over TLS when asked), and a raw HTTP/1.1 client for bodies
that no well-behaved client library would send.

The backend is a real HTTP server on loopback. It records every request that reaches it (method,
path, headers and the exact body bytes), so a test can tell what the gateway answered itself
from what it forwarded.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict, CIMultiDictProxy

from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.app import build_app
from tests.support import LOOPBACK, assert_problem, self_signed_certificate, serve_app

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]


@dataclass(frozen=True)
class Seen:
    """One request as the backend received it."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass
class Backend:
    """``/<anything>?h=Name:value&status=N``: answers JSON (method, path, body size and sha256)
    with those headers and that status. ``/big/<anything>?size=N``: N bytes, chunked, so the
    gateway streams the answer instead of buffering it. Records every request in ``seen``."""

    host: str = LOOPBACK
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def calls(self) -> int:
        return len(self.seen)

    async def start(self) -> None:
        # The exact bytes: a compressed body is recorded compressed, as it was forwarded.
        app = web.Application(
            client_max_size=64 * 1024 * 1024, handler_args={"auto_decompress": False}
        )
        app.router.add_get("/big/{tail:.*}", self.big)
        app.router.add_route("*", "/{tail:.*}", self.shaped)
        self._runner, self.port = await serve_app(app, self.host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _record(self, request: web.Request, body: bytes) -> None:
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        self.seen.append(Seen(request.method, request.path_qs, headers, body))

    @staticmethod
    def _headers(request: web.Request) -> list[tuple[str, str]]:
        pairs = []
        for spec in request.query.getall("h", ()):
            name, _, value = spec.partition(":")
            pairs.append((name.strip(), value.strip()))
        return pairs

    async def shaped(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._record(request, body)
        answer = {
            "method": request.method,
            "path": request.path_qs,
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        response = web.Response(
            status=int(request.query.get("status", "200")),
            body=orjson.dumps(answer),
            content_type="application/json",
        )
        for name, value in self._headers(request):
            response.headers.add(name, value)
        return response

    async def big(self, request: web.Request) -> web.StreamResponse:
        self._record(request, b"")
        response = web.StreamResponse(headers=CIMultiDict(self._headers(request)))
        response.content_type = "application/octet-stream"
        response.enable_chunked_encoding()
        await response.prepare(request)
        size = int(request.query["size"])
        for start in range(0, size, 16 * 1024):
            await response.write(b"b" * min(16 * 1024, size - start))
        await response.write_eof()
        return response


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    server = Backend()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def edge_config(backend_url: str, *routes: dict[str, Any], **sections: Any) -> GatewayConfig:
    """One service ``svc`` at ``backend_url``; ``routes`` (each gets ``service = "svc"``; one
    route at ``/`` when none are given) and top-level ``sections``. No retries, so a count of
    backend calls is a count of requests forwarded."""
    data: dict[str, Any] = {
        "admin": {"enabled": False},
        "logging": {"access_log": False},
        "services": [{"name": "svc", "endpoints": [backend_url], "retries": {"attempts": 0}}],
        "routes": [{"service": "svc", **r} for r in (routes or ({"path": "/"},))],
        **sections,
    }
    return GatewayConfig.model_validate(data)


Gateway = Callable[..., Awaitable[Client]]


@pytest.fixture
def gateway(aiohttp_client: ClientFactory) -> Gateway:
    """`await gateway(config)`: `build_app(config)` on loopback, and a client for it;
    `await gateway(config, tls=context)` serves it over TLS."""

    async def start(config: GatewayConfig, tls: ssl.SSLContext | None = None) -> Client:
        server = TestServer(build_app(config))
        # aiohttp_client starts a server without arguments; one started first keeps its TLS.
        await server.start_server(ssl=tls)
        return await aiohttp_client(server)

    return start


problem = assert_problem  # the name these tests know it by


def cors_headers(headers: Any) -> dict[str, str]:
    """Every ``Access-Control-*`` response header, lower-cased names."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("access-control-")}


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_server_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1."""
    cert_file, key_file = self_signed_certificate(
        tmp_path_factory.mktemp("tls"), "spork edge tests"
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


# --- a raw HTTP/1.1 client ----------------------------------------------------------------------


@dataclass
class RawConnection:
    """One TCP connection to the gateway, driven byte by byte."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self, timeout: float = 5.0) -> tuple[int, CIMultiDict[str], bytes]:
        """Status, headers and the body (by Content-Length) of the next response."""
        async with asyncio.timeout(timeout):
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers: CIMultiDict[str] = CIMultiDict()
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers.add(name.strip(), value.strip())
            body = await self.reader.readexactly(int(headers.get("Content-Length", "0")))
        return status, headers, body

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


Connect = Callable[[Client], Awaitable[RawConnection]]


@pytest.fixture
async def raw_connection() -> AsyncIterator[Connect]:
    """`await raw_connection(client)`: a raw connection to that client's gateway."""
    opened: list[RawConnection] = []

    async def connect(client: Client) -> RawConnection:
        assert client.server.port is not None
        reader, writer = await asyncio.open_connection(LOOPBACK, client.server.port)
        connection = RawConnection(reader, writer)
        opened.append(connection)
        return connection

    try:
        yield connect
    finally:
        for connection in opened:
            await connection.close()
