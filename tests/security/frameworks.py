"""Real upstream frameworks on loopback, each in a thread of its own, each echoing what *it*
made of the request: the identity an app would read, the headers, the client address and the
path prefix it believes.

- ``aiohttp``: an aiohttp app on its own event loop
- ``h11``, ``httptools``: a Starlette app under uvicorn (with uvicorn's default proxy headers:
  it believes X-Forwarded-For from 127.0.0.1, which is the gateway)
- ``werkzeug``: a WSGI app behind ``ProxyFix`` (one trusted hop) on ``werkzeug.serving``
- ``wsgiref``: the same WSGI app on the standard library's server, which, like CGI, turns
  ``X_User_Id`` and ``X-User-Id`` into the one variable ``HTTP_X_USER_ID``

Each server listens before its thread starts (a socket bound beforehand, or a server that
binds when made), so a fixture never waits for one to come up.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import wsgiref.simple_server
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import uvicorn
from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.support import LOOPBACK

FRAMEWORKS = ("aiohttp", "h11", "httptools", "werkzeug", "wsgiref")
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
# A path ending so makes every upstream send its own, strict X-Frame-Options.
FRAMED = "/framed"


def _echo(framework: str, method: str, path: str, headers: dict[str, str], **seen: Any) -> bytes:
    return json.dumps(
        {"framework": framework, "method": method, "path": path, "headers": headers, **seen}
    ).encode()


def _joined(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        found[key] = f"{found[key]}, {value}" if key in found else value
    return found


def _own_headers(path: str) -> list[tuple[str, str]]:
    return [("X-Frame-Options", "DENY")] if path.endswith(FRAMED) else []


# --- aiohttp ---------------------------------------------------------------------------------


async def _aiohttp_echo(request: web.Request) -> web.Response:
    body = _echo(
        "aiohttp",
        request.method,
        request.path,
        _joined(request.headers.items()),
        identity=request.headers.get("X-User-Id"),
        roles=request.headers.get("X-User-Roles"),
        remote=request.remote,
        prefix="",
    )
    response = web.Response(body=body, content_type="application/json")
    response.headers.extend(_own_headers(request.path))
    return response


@contextmanager
def _aiohttp(sock: socket.socket) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _aiohttp_echo)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# --- Starlette under uvicorn -----------------------------------------------------------------


async def _starlette_echo(request: Request) -> JSONResponse:
    client = request.client
    return JSONResponse(
        json.loads(
            _echo(
                "starlette",
                request.method,
                request.url.path,
                _joined(request.headers.items()),
                identity=request.headers.get("x-user-id"),
                roles=request.headers.get("x-user-roles"),
                remote=client.host if client is not None else None,
                prefix=request.scope.get("root_path", ""),
            )
        ),
        headers=dict(_own_headers(request.url.path)),
    )


STARLETTE = Starlette(routes=[Route("/{path:path}", _starlette_echo, methods=METHODS)])


@contextmanager
def _uvicorn(sock: socket.socket, http: str) -> Iterator[None]:
    config = uvicorn.Config(STARLETTE, http=http, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


# --- WSGI ------------------------------------------------------------------------------------


def wsgi_echo(framework: str) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # What a WSGI app reads: HTTP_* variables, named by the server.
        headers = {
            key[5:].lower().replace("_", "-"): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        path = environ.get("PATH_INFO", "")
        body = _echo(
            framework,
            environ["REQUEST_METHOD"],
            path,
            headers,
            identity=environ.get("HTTP_X_USER_ID"),
            roles=environ.get("HTTP_X_USER_ROLES"),
            remote=environ.get("REMOTE_ADDR"),
            prefix=environ.get("SCRIPT_NAME", ""),
        )
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                *_own_headers(path),
            ],
        )
        return [body]

    return app


class _QuietWerkzeugHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@contextmanager
def _werkzeug() -> Iterator[str]:
    # Behind one proxy the app trusts (the gateway), as ProxyFix is meant to be deployed.
    app = ProxyFix(wsgi_echo("werkzeug"), x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1)
    # Listening once made.
    server = make_server(LOOPBACK, 0, app, threaded=True, request_handler=_QuietWerkzeugHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _wsgiref() -> Iterator[str]:
    server = wsgiref.simple_server.make_server(
        LOOPBACK, 0, wsgi_echo("wsgiref"), handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def listening() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    sock.listen(128)
    return sock


@contextmanager
def _on_socket(run: Callable[[socket.socket], AbstractContextManager[None]]) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, 0))
        sock.listen(128)
        with run(sock):
            yield f"http://{LOOPBACK}:{sock.getsockname()[1]}"
    finally:
        sock.close()


def serve(framework: str) -> AbstractContextManager[str]:
    """Serve ``framework``'s echo app on loopback; the context gives its base URL."""
    if framework == "aiohttp":
        return _on_socket(_aiohttp)
    if framework in ("h11", "httptools"):
        return _on_socket(lambda sock: _uvicorn(sock, framework))
    if framework == "werkzeug":
        return _werkzeug()
    assert framework == "wsgiref", framework
    return _wsgiref()
