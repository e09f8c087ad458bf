"""The admin API's live state: revocations, running instances, breakers, rate limits and the
response cache; read, and changed where the CLI needs it (`spork breakers open`, `spork
limits reset`, `spork cache purge`, `spork token revoke`)."""

from __future__ import annotations

from dataclasses import asdict

import orjson
import structlog
from aiohttp import web

from spork_cli.gateway.admin_http import json_response, problem, state_of
from spork_cli.gateway.keys import TableHolder
from spork_cli.policies.cache import cache_rows, cached_routes, purge
from spork_cli.policies.limiter import limit_rows, reset_limits
from spork_cli.state import breaker_key

log = structlog.get_logger("spork.admin")

DEFAULT_REVOKE_TTL = 24 * 3600.0
MAX_REVOKE_TTL = 366 * 24 * 3600.0


def add_state_api(app: web.Application) -> None:
    app.router.add_post("/api/revocations", revoke)
    app.router.add_get("/api/revocations", revocation)
    app.router.add_get("/api/instances", instances)
    app.router.add_get("/api/breakers", breakers)
    app.router.add_post("/api/breakers", breaker_action)
    app.router.add_get("/api/limits", limits)
    app.router.add_post("/api/limits", limits)
    app.router.add_get("/api/cache", cache)
    app.router.add_post("/api/cache/purge", cache)


async def revoke(request: web.Request) -> web.Response:
    """POST {"jti": "...", "ttl": seconds}: deny that token on this gateway's state store.

    With Redis state `spork token revoke` writes to Redis itself; this endpoint is how it
    reaches a gateway whose state lives in its own memory.
    """
    holder, store = state_of(request)
    try:
        body = await request.json(loads=orjson.loads)
        jti = body["jti"]
        ttl = float(body.get("ttl", DEFAULT_REVOKE_TTL))
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return problem(400, "bad-request", 'expected JSON {"jti": "...", "ttl": seconds}')
    if not isinstance(jti, str) or not jti or not 0 < ttl <= MAX_REVOKE_TTL:
        return problem(400, "bad-request", "jti must be a non-empty string, ttl in (0, 1 year]")
    await store.revoke(jti, ttl)
    verifier = holder.current.verifier
    if verifier is not None:
        verifier.forget(jti)
    return json_response({"revoked": jti, "ttl": ttl})


async def revocation(request: web.Request) -> web.Response:
    """GET /api/revocations?jti=...: whether this gateway's state store denies that jti."""
    _, store = state_of(request)
    jti = request.query.get("jti", "")
    if not jti:
        return problem(400, "bad-request", "pass the jti as ?jti=...")
    revoked = await store.is_revoked(jti)
    return json_response({"jti": jti, "revoked": revoked})


async def instances(request: web.Request) -> web.Response:
    """Every gateway whose heartbeat this one's state store holds (with memory state: itself)."""
    _, store = state_of(request)
    found = await store.instances()
    return json_response({"instances": [orjson.loads(v) for v in found.values()]})


async def breakers(request: web.Request) -> web.Response:
    """GET /api/breakers: every service's breaker as stored (services without one omitted)."""
    holder, _ = state_of(request)
    found = await breaker_rows(holder)
    return json_response({"breakers": list(found.values())})


async def breaker_rows(holder: TableHolder) -> dict[str, dict[str, object]]:
    """Each service with a breaker -> its breaker as stored (closed when nothing is)."""
    config = holder.current.config
    store = holder.resources.store
    found: dict[str, dict[str, object]] = {}
    for service in config.services:
        if service.breaker is None or store is None:
            continue
        state = await store.breaker_read(breaker_key(config.state.prefix, service.name))
        row: dict[str, object] = {"service": service.name}
        row.update(asdict(state) if state is not None else {"state": "closed"})
        row.pop("changed", None)
        found[service.name] = row
    return found


async def breaker_action(request: web.Request) -> web.Response:
    """POST /api/breakers?service=S&action=open|close|reset|clear."""
    holder, store = state_of(request)
    config = holder.current.config
    service = request.query.get("service", "")
    action = request.query.get("action", "")
    if config.service(service) is None:
        return problem(404, "unknown-service", f"no service named {service!r}")
    key = breaker_key(config.state.prefix, service)
    if action == "open":
        await store.breaker_force(key, "open")
    elif action == "close":
        await store.breaker_force(key, "closed")
    elif action == "clear":
        await store.breaker_force(key, None)
    elif action == "reset":
        await store.breaker_reset(key)
    else:
        return problem(400, "bad-request", "action must be open, close, clear or reset")
    if holder.resources.breakers is not None:
        holder.resources.breakers.invalidate(service)
    return json_response({"service": service, "action": action})


async def limits(request: web.Request) -> web.Response:
    """GET /api/limits?route=&key=: what each client has left. POST: reset (route required)."""
    holder, store = state_of(request)

    route = request.query.get("route") or None
    key = request.query.get("key") or None
    config = holder.current.config
    if request.method == "POST":
        if route is None:
            return problem(400, "bad-request", "name the route to reset: ?route=...")
        deleted = await reset_limits(store, config, route, key)
        return json_response({"route": route, "deleted": deleted})
    return json_response({"limits": await limit_rows(store, config, route, key)})


async def cache(request: web.Request) -> web.Response:
    """GET /api/cache?route=: entries and hit counts per cached route. POST /api/cache/purge
    ?route=&path=&key=: delete entries (every cached route when no route is named)."""
    holder, store = state_of(request)

    query = {name: request.query.get(name) for name in ("route", "path", "key")}
    if "" in query.values():
        # Absent means "every"; an empty value is a mistake, never "purge everything".
        return problem(400, "bad-request", "route, path and key must not be empty when given")
    config = holder.current.config
    if query["route"] is not None and not cached_routes(config, query["route"]):
        return problem(404, "no-such-route", f"no cached route is named {query['route']!r}")
    if request.method == "POST":
        deleted = await purge(store, config, **query)
        return json_response(query | {"deleted": deleted})
    # This instance's answers so far are counted first (they are otherwise added to the
    # store's counters every half second).
    for route in holder.current.routes:
        if route.cache is not None:
            await route.cache.counters.flush()
    return json_response({"cache": await cache_rows(store, config, query["route"])})
