"""The admin listener: liveness, readiness and service health (JSON)."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from aiohttp import web

from spork_cli.errors import StateError
from spork_cli.gateway.app import TABLE

GATEWAY = web.AppKey("spork.gateway", web.Application)
DEFAULT_REVOKE_TTL = 24 * 3600.0
MAX_REVOKE_TTL = 366 * 24 * 3600.0


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    holder = gateway.get(TABLE)
    if holder is None:
        return _json({"status": "starting"}, status=503)
    last = holder.reloads[-1] if holder.reloads else None
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
            # Not ready: an orchestrator should route traffic elsewhere until it answers.
            body.update(status="state unreachable", state_error=str(exc))
            return _json(body, status=503)
    return _json(body)


async def services(request: web.Request) -> web.Response:
    holder = request.app[GATEWAY].get(TABLE)
    if holder is None:
        return _json({"services": []}, status=503)
    snapshots = [pool.snapshot() for pool in holder.current.pools.values()]
    healthy = all(s["healthy"] for s in snapshots)
    return _json({"healthy": healthy, "services": snapshots})


async def revoke(request: web.Request) -> web.Response:
    """POST {"jti": "...", "ttl": seconds}: deny that token on this gateway's state store.

    With Redis state `spork token revoke` writes to Redis itself; this endpoint is how it
    reaches a gateway whose state lives in its own memory.
    """
    holder = request.app[GATEWAY].get(TABLE)
    if holder is None or holder.resources.store is None:
        return _problem(503, "starting", "the gateway is still starting")
    try:
        body = await request.json(loads=orjson.loads)
        jti = body["jti"]
        ttl = float(body.get("ttl", DEFAULT_REVOKE_TTL))
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return _problem(400, "bad-request", 'expected JSON {"jti": "...", "ttl": seconds}')
    if not isinstance(jti, str) or not jti or not 0 < ttl <= MAX_REVOKE_TTL:
        return _problem(400, "bad-request", "jti must be a non-empty string, ttl in (0, 1 year]")
    config = holder.current.config
    if config.server.workers > 1 and holder.resources.store.backend == "memory":
        # Each worker keeps its own memory state; this process could not reach theirs.
        return _problem(
            409,
            "per-worker-state",
            f"{config.server.workers} workers with memory state: a revocation cannot reach "
            'them all; use [state] backend = "redis"',
        )
    try:
        await holder.resources.store.revoke(jti, ttl)
    except StateError as exc:
        return _problem(503, "state-unavailable", str(exc))
    verifier = holder.current.verifier
    if verifier is not None:
        verifier.forget(jti)
    return _json({"revoked": jti, "ttl": ttl})


async def revocation(request: web.Request) -> web.Response:
    """GET /api/revocations?jti=...: whether this gateway's state store denies that jti."""
    holder = request.app[GATEWAY].get(TABLE)
    if holder is None or holder.resources.store is None:
        return _problem(503, "starting", "the gateway is still starting")
    jti = request.query.get("jti", "")
    if not jti:
        return _problem(400, "bad-request", "pass the jti as ?jti=...")
    try:
        revoked = await holder.resources.store.is_revoked(jti)
    except StateError as exc:
        return _problem(503, "state-unavailable", str(exc))
    return _json({"jti": jti, "revoked": revoked})


async def instances(request: web.Request) -> web.Response:
    """Every gateway whose heartbeat this one's state store holds (with memory state: itself)."""
    holder = request.app[GATEWAY].get(TABLE)
    if holder is None or holder.resources.store is None:
        return _problem(503, "starting", "the gateway is still starting")
    try:
        found = await holder.resources.store.instances()
    except StateError as exc:
        return _problem(503, "state-unavailable", str(exc))
    return _json({"instances": [orjson.loads(v) for v in found.values()]})


async def breakers(request: web.Request) -> web.Response:
    """GET /api/breakers: every service's breaker as stored (services without one omitted)."""
    holder = request.app[GATEWAY].get(TABLE)
    if holder is None or holder.resources.store is None:
        return _problem(503, "starting", "the gateway is still starting")
    from dataclasses import asdict

    from spork_cli.state import breaker_key

    config = holder.current.config
    found = []
    try:
        for service in config.services:
            if service.breaker is None:
                continue
            key = breaker_key(config.state.prefix, service.name)
            state = await holder.resources.store.breaker_read(key)
            row: dict[str, object] = {"service": service.name}
            row.update(asdict(state) if state is not None else {"state": "closed"})
            row.pop("changed", None)
            found.append(row)
    except StateError as exc:
        return _problem(503, "state-unavailable", str(exc))
    return _json({"breakers": found})


async def breaker_action(request: web.Request) -> web.Response:
    """POST /api/breakers?service=S&action=open|close|reset|clear."""
    holder = request.app[GATEWAY].get(TABLE)
    if holder is None or holder.resources.store is None:
        return _problem(503, "starting", "the gateway is still starting")
    from spork_cli.state import breaker_key

    config = holder.current.config
    service = request.query.get("service", "")
    action = request.query.get("action", "")
    if config.service(service) is None:
        return _problem(404, "unknown-service", f"no service named {service!r}")
    key = breaker_key(config.state.prefix, service)
    store = holder.resources.store
    try:
        if action == "open":
            await store.breaker_force(key, "open")
        elif action == "close":
            await store.breaker_force(key, "closed")
        elif action == "clear":
            await store.breaker_force(key, None)
        elif action == "reset":
            await store.breaker_reset(key)
        else:
            return _problem(400, "bad-request", "action must be open, close, clear or reset")
    except StateError as exc:
        return _problem(503, "state-unavailable", str(exc))
    if holder.resources.breakers is not None:
        holder.resources.breakers.invalidate(service)
    return _json({"service": service, "action": action})


async def limits(request: web.Request) -> web.Response:
    """GET /api/limits?route=&key=: what each client has left. POST: reset (route required)."""
    holder = request.app[GATEWAY].get(TABLE)
    if holder is None or holder.resources.store is None:
        return _problem(503, "starting", "the gateway is still starting")
    from spork_cli.limiter import limit_rows, reset_limits

    route = request.query.get("route") or None
    key = request.query.get("key") or None
    config = holder.current.config
    try:
        if request.method == "POST":
            if route is None:
                return _problem(400, "bad-request", "name the route to reset: ?route=...")
            deleted = await reset_limits(holder.resources.store, config, route, key)
            return _json({"route": route, "deleted": deleted})
        return _json({"limits": await limit_rows(holder.resources.store, config, route, key)})
    except StateError as exc:
        return _problem(503, "state-unavailable", str(exc))


async def cache(request: web.Request) -> web.Response:
    """GET /api/cache?route=: entries and hit counts per cached route. POST /api/cache/purge
    ?route=&path=&key=: delete entries (every cached route when no route is named)."""
    holder = request.app[GATEWAY].get(TABLE)
    if holder is None or holder.resources.store is None:
        return _problem(503, "starting", "the gateway is still starting")
    from spork_cli.cache import cache_rows, cached_routes, purge

    query = {name: request.query.get(name) for name in ("route", "path", "key")}
    if "" in query.values():
        # Absent means "every"; an empty value is a mistake, never "purge everything".
        return _problem(400, "bad-request", "route, path and key must not be empty when given")
    config = holder.current.config
    if query["route"] is not None and not cached_routes(config, query["route"]):
        return _problem(404, "no-such-route", f"no cached route is named {query['route']!r}")
    try:
        if request.method == "POST":
            deleted = await purge(holder.resources.store, config, **query)
            return _json(query | {"deleted": deleted})
        return _json({"cache": await cache_rows(holder.resources.store, config, query["route"])})
    except StateError as exc:
        return _problem(503, "state-unavailable", str(exc))


def _problem(status: int, slug: str, detail: str) -> web.Response:
    from spork_cli.middleware.errors import problem_response

    return problem_response(status, slug, detail)


def _token_guard(token: str | None) -> Any:
    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        # Liveness and readiness stay open for orchestrators; the API needs the token.
        if token is not None and request.path.startswith("/api/"):
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _problem(401, "admin-token", "the admin API needs its bearer token")
        response: web.StreamResponse = await handler(request)
        return response

    return guard


def build_admin_app(gateway: web.Application, token: str | None = None) -> web.Application:
    app = web.Application(middlewares=[_token_guard(token)])
    app[GATEWAY] = gateway
    app.router.add_get("/health", health)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/health/services", services)
    app.router.add_post("/api/revocations", revoke)
    app.router.add_get("/api/instances", instances)
    app.router.add_get("/api/breakers", breakers)
    app.router.add_get("/api/limits", limits)
    app.router.add_post("/api/limits", limits)
    app.router.add_post("/api/breakers", breaker_action)
    app.router.add_get("/api/cache", cache)
    app.router.add_post("/api/cache/purge", cache)
    app.router.add_get("/api/revocations", revocation)
    return app
