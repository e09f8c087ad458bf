"""The dashboard: one page and its script and style, served by the admin listener.

The page carries no data: its script polls the admin API and the metrics of the listener that
served it, so it works offline and the page itself needs no token.
"""

from __future__ import annotations

import html
from importlib import resources

from aiohttp import web

ASSETS = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
# The page talks to this listener only; the browser enforces that no other origin is reached.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

PAGE = web.AppKey("spork.dashboard.page", str)
FILES = web.AppKey("spork.dashboard.files", dict[str, bytes])


def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


async def page(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[PAGE], content_type="text/html", charset="utf-8", headers=HEADERS
    )


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = request.app[FILES].get(name)
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type=ASSETS[name], charset="utf-8", headers=HEADERS)


def add_dashboard(app: web.Application, metrics_path: str) -> None:
    """Serve the page at ``/`` and its files under ``/dashboard/``; the page scrapes
    ``metrics_path`` for rates ("" when metrics are off)."""
    template = _read("index.html").decode()
    app[PAGE] = template.replace("{{metrics_path}}", html.escape(metrics_path, quote=True))
    app[FILES] = {name: _read(name) for name in ASSETS}
    app.router.add_get("/", page)
    app.router.add_get("/dashboard/{name}", asset)
