"""The admin listener: health, the admin API, metrics and the dashboard.

Who it answers (Host, origin, content type, token) is decided in ``admin_guard``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from spork_cli.config.redact import Redactor, redact_url
from spork_cli.errors import StateError
from spork_cli.gateway.admin_guard import Guard
from spork_cli.gateway.admin_http import json_response, state_errors
from spork_cli.gateway.admin_state import add_state_api, breaker_rows
from spork_cli.gateway.dashboard import add_dashboard
from spork_cli.gateway.keys import GATEWAY_TABLE, WORKERS, TableHolder
from spork_cli.gateway.listening import listening
from spork_cli.gateway.metrics import metrics_handler
from spork_cli.gateway.table import route_rows
from spork_cli.headers import SERVER

if TYPE_CHECKING:
    from spork_cli.gateway.upstream import ServicePool

log = structlog.get_logger("spork.admin")


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    holder = request.app[GATEWAY_TABLE]
    workers = request.app.get(WORKERS)
    if workers is not None:
        serving = listening()
        if serving < workers:
            starting = {"status": "starting", "workers": workers, "workers_listening": serving}
            return json_response(starting, status=503)
    last = holder.reloads[-1] if holder.reloads else None
    if last is not None and last.get("errors"):
        # This endpoint is open even with a token: error messages may quote a secret.
        last = (await _redactor(holder)).scrub(last)
    body: dict[str, object] = {
        "status": "ready",
        "routes": len(holder.current.routes),
        "services": len(holder.current.pools),
        "last_reload": last,
    }
    store = holder.resources.store
    if store is not None and store.backend != "memory":
        try:
            await store.ping()
        except StateError as exc:
            if holder.current.config.state.on_error != "closed":
                # Requests are still served as `on_error` says (open, or local state): taking
                # every instance out of its load balancer at once would be the real outage.
                body.update(status="degraded", state_error=str(exc))
                return json_response(body)
            # Every request that needs state is refused: route traffic elsewhere until it answers.
            body.update(status="state unreachable", state_error=str(exc))
            return json_response(body, status=503)
    return json_response(body)


async def services(request: web.Request) -> web.Response:
    holder = request.app[GATEWAY_TABLE]
    snapshots = [_pool_row(pool) for pool in holder.current.pools.values()]
    healthy = all(s["healthy"] for s in snapshots)
    return json_response({"healthy": healthy, "services": snapshots})


def _pool_row(pool: ServicePool) -> dict[str, Any]:
    """A service pool as `/health/services` and `/api/services` show it (URLs redacted)."""
    row: dict[str, Any] = pool.snapshot()
    now = time.monotonic()
    for shown, endpoint in zip(row["endpoints"], pool.endpoints, strict=True):
        shown["url"] = redact_url(shown["url"])
        shown["ejected_for"] = round(max(0.0, endpoint.ejected_until - now), 3)
        shown["failures"] = endpoint.failures
        shown["last_check"] = endpoint.last_check
    return row


async def api_routes(request: web.Request) -> web.Response:
    """GET /api/routes: the compiled route table, in the order of the file."""
    table = request.app[GATEWAY_TABLE].current
    rows = route_rows(table)
    for row, route in zip(rows, table.routes, strict=True):
        row["name"] = route.config.name
        row["roles"] = list(route.config.roles)
        row["scopes"] = list(route.config.scopes)
        row["endpoints"] = [redact_url(url) for url in row["endpoints"]]
    return json_response({"routes": rows})


async def api_services(request: web.Request) -> web.Response:
    """GET /api/services: every service's endpoints and health, and its breaker if any."""
    holder = request.app[GATEWAY_TABLE]
    try:
        states = await breaker_rows(holder)
    except StateError as exc:
        # Health is this process's own knowledge; only the breakers live in the store.
        states = {
            s.name: {"service": s.name, "state": "unknown", "error": redact_url(str(exc))}
            for s in holder.current.config.services
            if s.breaker is not None
        }
    rows = []
    for name, pool in holder.current.pools.items():
        row = _pool_row(pool)
        check = pool.config.health
        row["health_check"] = (
            None if check is None else {"path": check.path, "interval": check.interval}
        )
        row["breaker"] = states.get(name)
        rows.append(row)
    return json_response({"healthy": all(r["healthy"] for r in rows), "services": rows})


async def api_config(request: web.Request) -> web.Response:
    """GET /api/config: the config being served, every secret redacted."""
    holder = request.app[GATEWAY_TABLE]
    redactor = await _redactor(holder)
    file = str(holder.config_file) if holder.config_file is not None else None
    return json_response({"file": file, "config": redactor.config_data()})


async def api_reloads(request: web.Request) -> web.Response:
    """GET /api/reloads: recent reload results, newest first, errors with their place."""
    holder = request.app[GATEWAY_TABLE]
    redactor = await _redactor(holder)
    return json_response({"reloads": redactor.scrub(list(reversed(holder.reloads)))})


async def _redactor(holder: TableHolder) -> Redactor:
    text = None
    if holder.config_file is not None:
        try:
            text = await asyncio.to_thread(holder.config_file.read_text, "utf-8", "replace")
        except OSError:
            pass  # then only what the config itself marks as secret is known
    return Redactor(holder.current.config, text)


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER


def build_admin_app(
    holder: TableHolder, token: str | None = None, *, workers: int | None = None
) -> web.Application:
    """The admin app looking into the gateway whose table switch is ``holder`` (a started
    gateway's ``app[TABLE]``), guarded by ``token`` when given; ``workers``: the supervisor
    of that many, ready once they all listen."""
    # Read once: both sections are static, so a reload changes neither the listener's routes
    # nor who it answers.
    settings = holder.current.config.admin
    metrics = holder.current.config.metrics
    open_paths = {"/", "/dashboard/{name}"}  # constant files; the page asks for the token
    if settings.metrics_public:
        open_paths.add(metrics.path)
    guard = Guard.of(token, settings.host, settings.allowed_hosts, open_paths)
    app = web.Application(middlewares=[guard.middleware(), state_errors])
    app.on_response_prepare.append(_server_header)
    app[GATEWAY_TABLE] = holder
    if workers is not None:
        app[WORKERS] = workers
    app.router.add_get("/health", health)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/health/services", services)
    add_state_api(app)
    app.router.add_get("/api/routes", api_routes)
    app.router.add_get("/api/services", api_services)
    app.router.add_get("/api/config", api_config)
    app.router.add_get("/api/reloads", api_reloads)
    metrics_path = ""
    if metrics.enabled:
        taken = {r.canonical for r in app.router.resources()} | {"/"}
        if metrics.path in taken or metrics.path.startswith("/dashboard/"):
            log.warning(
                "metrics path is taken by the admin listener; not served", path=metrics.path
            )
        else:
            app.router.add_get(metrics.path, metrics_handler(holder))
            metrics_path = metrics.path
    add_dashboard(app, metrics_path)
    return app
