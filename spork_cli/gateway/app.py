"""Build the gateway's aiohttp app. Its lifecycle (cleanup_ctx) owns every resource."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import structlog
from aiohttp import web
from yarl import URL

from spork_cli.config.model import GatewayConfig
from spork_cli.config.redact import redact_url
from spork_cli.gateway.accesslog import AccessLog
from spork_cli.gateway.canonical import BadPath, canonical_path, canonical_target
from spork_cli.gateway.compile import Resources, close_table, compile_table
from spork_cli.gateway.heartbeat import heartbeat_ctx
from spork_cli.gateway.keys import (
    EDGE_HEADERS,
    ENDPOINT,
    METRICS,
    REQUEST_ID,
    RESPONSE_EDITS,
    RESPONSE_HEADERS,
    TABLE,
    UPSTREAM_SECONDS,
    TableHolder,
)
from spork_cli.gateway.metrics import UNMATCHED, GatewayMetrics, snapshots_ctx
from spork_cli.gateway.reload import reloader_ctx
from spork_cli.gateway.table import CompiledRoute, RouteTable
from spork_cli.headers import SERVER
from spork_cli.middleware.cors import PREFLIGHT
from spork_cli.middleware.request_id import request_id
from spork_cli.policies.breaker import BreakerCache
from spork_cli.problems import (
    CONTENT_TYPE,
    HTTPProblem,
    problem_body,
    problem_response,
    render,
)
from spork_cli.state import StateStore
from spork_cli.state.memory import MemoryStore
from spork_cli.state.open import store_from_config
from spork_cli.state.outage import StateOutage
from spork_cli.state.served import SOCKET_ENV, ServedStore

log = structlog.get_logger("spork.gateway")


CLIENT_CLOSED = 499


async def dispatch(request: web.Request) -> web.StreamResponse:
    """The one catch-all handler: deny rules, match, run the route's chain, log."""
    raw = request.raw_path
    holder = request.app[TABLE]
    table = holder.current
    refused: BadPath | None = None
    # An absolute-form target (`GET http://host/path`) is routed by its path, like any; a
    # fragment there is refused as in origin form.
    target = raw if raw[:1] == "/" else request.rel_url.raw_path_qs + ("#" if "#" in raw else "")
    server = table.config.server
    keep_slashes = server.encoded_slashes == "keep"
    try:
        clean = canonical_target(
            target, merge_slashes=server.merge_slashes, keep_encoded_slashes=keep_slashes
        )
    except BadPath as exc:
        refused = exc
    else:
        if clean is None:
            clean = target
        if clean != raw:
            return await _resolved(request, clean)
    started = time.perf_counter()
    rid = request_id(request.headers.get("X-Request-ID"))
    request[REQUEST_ID] = rid
    edge = table.edge
    match = table.match(request.method, raw)
    if refused is None and keep_slashes and ("%2F" in raw or "%5C" in raw):
        refused = _split_elsewhere(table, request.method, raw, match.route)
    route = match.route if refused is None else None
    response: web.StreamResponse | None = None
    metrics = holder.resources.metrics
    if metrics is not None:
        metrics.in_flight += 1
    table.enter()
    try:
        headers = edge.headers_for(request, route)
        if edge.deny is not None:
            request[EDGE_HEADERS] = (headers[0], None)  # a refused request gets no CORS answer
            edge.deny.check(request)
        request[EDGE_HEADERS] = headers
        if route is not None and route.response_edits is not None:
            request[RESPONSE_EDITS] = route.response_edits
        edge.forwarding.screen(request, route is not None)
        if refused is not None:
            raise HTTPProblem(400, refused.slug, str(refused))
        if request.method == "OPTIONS" and PREFLIGHT in request.headers:
            answered = edge.preflight(table, request, route)
            if answered is not None:
                route, response = answered
                if route.response_edits is not None:
                    request[RESPONSE_EDITS] = route.response_edits
                # The answer carries its own CORS headers; those of actual requests stay off.
                request[EDGE_HEADERS] = (edge.security_of(request, route), None)
        if response is None:
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
    except ConnectionResetError:
        # The client went away before its request was whole (mid-body): nobody is left to
        # answer. Logged and counted as nginx does, 499 "client closed request".
        response = web.Response(status=CLIENT_CLOSED)
        response.force_close()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error", request_id=rid)
        response = problem_response(500, "internal", "the gateway failed on this request", rid)
    finally:
        table.leave()
        if metrics is not None:
            metrics.in_flight -= 1
    elapsed = time.perf_counter() - started
    upstream = request.get(UPSTREAM_SECONDS)
    if metrics is not None:
        metrics.request(
            route.route_id if route else UNMATCHED, request.method, response.status, elapsed
        )
        if upstream is not None and route is not None:
            metrics.observe("upstream_duration_seconds", route.pool.name, upstream)
    if holder.access_log is not None and holder.current.config.logging.access_log:
        _access(holder.access_log, table, request, response, route, elapsed, upstream)
    return response


def _split_elsewhere(
    table: RouteTable, method: str, raw: str, chosen: CompiledRoute | None
) -> BadPath | None:
    """With ``encoded_slashes = "keep"``: a refusal when the path, read with its encoded
    slashes as separators (as every common upstream framework decodes it), falls under
    another route than the one matched with them kept (`/svc/admin%2Fx` under `/svc/` while
    `/svc/admin` is a route of its own)."""
    path, _, _ = raw.partition("?")
    split = path.replace("%2F", "/").replace("%5C", "/")
    try:
        other = table.match(method, canonical_path(split)).route
    except BadPath as exc:
        return exc
    if other is chosen:
        return None
    return BadPath(
        "ambiguous-path",
        "an encoded slash in this path would lead the upstream to another route",
    )


async def _resolved(request: web.Request, path: str) -> web.StreamResponse:
    """A path not in canonical form is served as its canonical form: the route, the upstream
    and the logs all see that one path."""
    target, _, query = path.partition("?")
    resolved = request.clone(rel_url=URL.build(path=target, query_string=query, encoded=True))
    try:
        return await dispatch(resolved)
    finally:
        # aiohttp prepares the answer with its own request object: the prepare hook reads what
        # finishes the head from there.
        for key in _HEAD_KEYS:
            if key in resolved:
                request[key] = resolved[key]  # type: ignore[misc]


# What dispatch and the route's chain leave on a request for the prepare hook.
_HEAD_KEYS = (EDGE_HEADERS, RESPONSE_EDITS, REQUEST_ID, RESPONSE_HEADERS)


async def edge_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The one place every answer's head is finished, right before it is sent (relayed,
    streamed, cached, the gateway's own problems): ``Server`` without a version, the request
    id, what the route's middlewares add (rate-limit headers), security headers, CORS, and
    last the route's ``response_headers`` edits."""
    headers = response.headers
    headers["Server"] = SERVER
    rid = request.get(REQUEST_ID)
    if rid is None:  # dispatch sets it first thing: aiohttp answered by itself
        _as_problem(request, response)
        return
    headers["X-Request-ID"] = rid
    extra = request.get(RESPONSE_HEADERS)
    if extra:
        headers.update(extra)
    edge = request.get(EDGE_HEADERS)
    if edge is not None:
        security, cors = edge
        security.apply(headers)
        if cors is not None:
            cors.apply(headers)
    edits = request.get(RESPONSE_EDITS)
    if edits is not None:
        edits.apply(headers)


_OWN_ANSWERS = {
    404: ("no-route", "no route matches this request target"),
    417: ("expectation-failed", "only the expectation 100-continue is supported"),
}


def _as_problem(request: web.Request, response: web.StreamResponse) -> None:
    """An answer aiohttp made before dispatch ran (a target its router cannot place, such as
    CONNECT's host:port or an absolute form without a path; an unknown Expect) becomes a
    problem like every other, with a request id and the security headers, and is logged and
    counted as unmatched. No handler ran, so its duration is counted as 0."""
    if not isinstance(response, web.HTTPException):
        return
    rid = request_id(request.headers.get("X-Request-ID"))
    status = response.status
    slug, detail = _OWN_ANSWERS.get(status, ("bad-request", "the request was refused"))
    body = problem_body(status, slug, detail, rid)
    response.body = body
    response.headers["Content-Type"] = CONTENT_TYPE
    response.headers["Content-Length"] = str(len(body))
    response.headers["X-Request-ID"] = rid
    request[REQUEST_ID] = rid
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.request(UNMATCHED, request.method, status, 0.0)
    holder = request.app.get(TABLE)
    if holder is not None:
        table = holder.current
        response.headers.update(table.edge.security.plain)
        if holder.access_log is not None and table.config.logging.access_log:
            _access(holder.access_log, table, request, response, None, 0.0, None)


def _access(
    log: AccessLog,
    table: RouteTable,
    request: web.Request,
    response: web.StreamResponse,
    route: CompiledRoute | None,
    seconds: float,
    upstream: float | None,
) -> None:
    log.write(
        {
            "method": request.method,
            "path": table.redact(request.raw_path) if table.secret_query else request.raw_path,
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
    snapshots: bool = True,
) -> web.Application:
    """The gateway app; ``aiohttp_client(build_app(cfg))`` serves it without a socket of ours.
    ``snapshots=False`` (the supervisor of --workers N): its workers write the metrics."""
    # Request bodies go upstream as sent, compressed or not, as nginx and Envoy pass them: the
    # listener inflating them would do it on the event loop, for any path, unbounded.
    app = web.Application(
        client_max_size=REPLAYABLE_LIMIT,
        handler_args={"max_field_size": 16384, "auto_decompress": False},
    )
    # Any target, control characters included (a decoded %0A is still a path to route).
    app.router.add_route("*", "/{tail:(?s:.*)}", dispatch)
    app.on_response_prepare.append(edge_headers)
    if config.metrics.enabled:
        # Buckets are read once: a reload that changes them needs a restart.
        app[METRICS] = GatewayMetrics(config.metrics.buckets)

    async def tables(app: web.Application) -> AsyncIterator[None]:

        base_dir = config_file.resolve().parent if config_file is not None else Path.cwd()
        served = os.environ.get(SOCKET_ENV) if config.state.backend == "memory" else None
        # A worker of `--workers N` on memory state uses its supervisor's store.
        store: StateStore = (
            ServedStore(config.state, served) if served else store_from_config(config.state)
        )
        await store.start()
        local = MemoryStore(config.state) if config.state.backend != "memory" else None

        prefix = config.state.prefix
        metrics = app.get(METRICS)
        on_state = metrics.breaker if metrics is not None else None
        outage = StateOutage(
            store,
            redact_url(config.state.url or config.state.backend),
            partial(metrics.count, "state_errors") if metrics is not None else None,
        )
        resources = Resources(
            store,
            local,
            base_dir,
            BreakerCache(store, prefix, on_state=on_state),
            BreakerCache(local, prefix, on_state=on_state) if local is not None else None,
            metrics,
            outage,
        )
        try:
            table = await compile_table(config, None, resources)
        except BaseException:
            await outage.close()
            await store.close()
            raise
        app[TABLE] = TableHolder(table, resources, config_file, access_log, watch, prepare)
        yield
        current = app[TABLE].current
        await close_table(current, current.config.server.timeouts.shutdown)
        await outage.close()
        await store.close()
        if access_log is not None:
            access_log.flush()

    app.cleanup_ctx.append(tables)

    app.cleanup_ctx.append(heartbeat_ctx)
    if snapshots:
        app.cleanup_ctx.append(snapshots_ctx)
    if config_file is not None:
        app.cleanup_ctx.append(reloader_ctx)
    return app


REPLAYABLE_LIMIT = 1024 * 1024
