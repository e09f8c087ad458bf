"""Build the gateway's aiohttp app. Its lifecycle (cleanup_ctx) owns every resource."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import structlog
from aiohttp import ClientTimeout, web

from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.accesslog import AccessLog
from spork_cli.gateway.proxy import Forwarding, forward
from spork_cli.gateway.table import CompiledRoute, RouteTable
from spork_cli.gateway.upstream import ServicePool
from spork_cli.middleware import ENDPOINT, REQUEST_ID, UPSTREAM_SECONDS, Middleware, chain
from spork_cli.middleware.errors import HTTPProblem, problem_response, render
from spork_cli.middleware.request_id import request_id

log = structlog.get_logger("spork.gateway")

DEFAULT_IDENTITY_HEADERS = ("X-User-Id", "X-User-Roles")
SERVER = "spork"  # never a version: nothing to fingerprint


@dataclass(eq=False)
class TableHolder:
    """The one reference a reload swaps; requests read ``current`` once each."""

    current: RouteTable
    config_file: Path | None = None
    access_log: AccessLog | None = None
    watch: bool = False
    # Applied to every config read from the file (command-line overrides of static settings).
    prepare: Callable[[GatewayConfig], GatewayConfig] | None = None
    reloads: list[dict[str, object]] = field(default_factory=list)


TABLE = web.AppKey("spork.table", TableHolder)


async def compile_table(config: GatewayConfig, previous: RouteTable | None = None) -> RouteTable:
    """Everything a config needs to serve, built in full before anyone sees it.

    Pools of services whose config did not change are carried over from ``previous`` (with
    their connections and health state); the others are new.
    """
    old = dict(previous.pools) if previous is not None else {}
    pools: dict[str, ServicePool] = {}
    try:
        for service in config.services:
            carried = old.get(service.name)
            if carried is not None and carried.config == service:
                pools[service.name] = carried
            else:
                pool = ServicePool(service)
                await pool.start()
                pools[service.name] = pool
    except BaseException:
        await _close_new(pools, old)
        raise
    identity = (
        tuple(config.auth.forward_claims.values())
        if config.auth is not None
        else DEFAULT_IDENTITY_HEADERS
    )
    forwarding = Forwarding(config.server.trusted_proxies, identity)
    routes: list[CompiledRoute] = []
    for index, route in enumerate(config.routes):
        pool = pools[route.service]
        compiled = CompiledRoute(
            index=index,
            config=route,
            route_id=route.route_id,
            prefix=route.path,
            methods=_methods(route.methods),
            pool=pool,
            forwarding=forwarding,
            max_body=route.max_body if route.max_body is not None else config.server.max_body,
            request_timeout=config.server.timeouts.request,
            idle_timeout=route.timeout or pool.config.timeout,
            client_timeout=ClientTimeout(
                total=None,
                sock_connect=pool.config.connect_timeout,
                sock_read=route.timeout or pool.config.timeout,
            ),
        )
        compiled.handler = chain(_middlewares(compiled), partial(forward, route=compiled))
        routes.append(compiled)
    return RouteTable(config=config, routes=tuple(routes), pools=pools)


def _methods(methods: Sequence[str]) -> frozenset[str] | None:
    """None means any method; a route that takes GET takes HEAD too (RFC 9110, 9.3.2)."""
    if not methods:
        return None
    allowed = set(methods)
    if "GET" in allowed:
        allowed.add("HEAD")
    return frozenset(allowed)


def _middlewares(route: CompiledRoute) -> list[Middleware]:
    """The per-route chain between the dispatcher and the proxy."""
    return []


async def _close_new(pools: Mapping[str, ServicePool], old: Mapping[str, ServicePool]) -> None:
    for name, pool in pools.items():
        if old.get(name) is not pool:
            await pool.close(0)


async def retire(previous: RouteTable, current: RouteTable, drain: float) -> None:
    """Close the pools ``current`` no longer uses, after their requests finish."""
    if not await previous.drained(drain):
        log.warning("closing pools with requests still in flight", requests=previous.in_flight)
    keep = {id(p) for p in current.pools.values()}
    gone = [p for p in previous.pools.values() if id(p) not in keep]
    if gone:
        await asyncio.gather(*(p.close(drain) for p in gone))


async def dispatch(request: web.Request) -> web.StreamResponse:
    """The one catch-all handler: match, run the route's chain, log."""
    started = time.perf_counter()
    rid = request_id(request.headers.get("X-Request-ID"))
    request[REQUEST_ID] = rid
    table = request.app[TABLE].current
    match = table.match(request.method, request.raw_path)
    route = match.route
    response: web.StreamResponse | None = None
    table.enter()
    try:
        if route is None:
            if match.allowed:
                allow = ", ".join(sorted(match.allowed))
                raise HTTPProblem(
                    405,
                    "method-not-allowed",
                    f"{request.method} is not allowed here; allowed: {allow}",
                    headers={"Allow": allow},
                )
            raise HTTPProblem(404, "no-route", "no route matches this path")
        response = await route.handler(request)
    except HTTPProblem as problem:
        response = render(problem, request)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("unhandled error", request_id=rid)
        response = problem_response(500, "internal", "the gateway failed on this request", rid)
    finally:
        table.leave()
    if not response.prepared:
        response.headers["X-Request-ID"] = rid
        response.headers["Server"] = SERVER
    holder = request.app[TABLE]
    if holder.access_log is not None and holder.current.config.logging.access_log:
        _access(holder.access_log, request, response, route, time.perf_counter() - started)
    return response


def _access(
    log: AccessLog,
    request: web.Request,
    response: web.StreamResponse,
    route: CompiledRoute | None,
    seconds: float,
) -> None:
    upstream = request.get(UPSTREAM_SECONDS)
    log.write(
        {
            "method": request.method,
            "path": request.raw_path,
            "route": route.route_id if route else None,
            "service": route.pool.name if route else None,
            "endpoint": request.get(ENDPOINT),
            "status": response.status,
            "duration_ms": round(seconds * 1000, 3),
            "upstream_ms": round(upstream * 1000, 3) if upstream is not None else None,
            "bytes": response.body_length if response.prepared else response.content_length,
            "client": request.remote,
            "request_id": request[REQUEST_ID],
        }
    )


def build_app(
    config: GatewayConfig,
    config_file: Path | None = None,
    *,
    watch: bool = False,
    access_log: AccessLog | None = None,
    prepare: Callable[[GatewayConfig], GatewayConfig] | None = None,
) -> web.Application:
    """The gateway app; ``aiohttp_client(build_app(cfg))`` serves it without a socket of ours."""
    app = web.Application(client_max_size=REPLAYABLE_LIMIT, handler_args={"max_field_size": 16384})
    app.router.add_route("*", "/{tail:.*}", dispatch)

    async def tables(app: web.Application) -> AsyncIterator[None]:
        table = await compile_table(config)
        app[TABLE] = TableHolder(table, config_file, access_log, watch, prepare)
        yield
        current = app[TABLE].current
        drain = current.config.server.timeouts.shutdown
        await asyncio.gather(*(pool.close(drain) for pool in current.pools.values()))
        if access_log is not None:
            access_log.flush()

    app.cleanup_ctx.append(tables)
    if config_file is not None:
        from spork_cli.gateway.reload import reloader_ctx

        app.cleanup_ctx.append(reloader_ctx)
    return app


REPLAYABLE_LIMIT = 1024 * 1024
