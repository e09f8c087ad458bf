"""Compile a config into a RouteTable: pools, keys, edge policies (deny rules, security headers,
CORS, body schemas) and per-route chains, built in full before any request sees them; and
retire a replaced table once its requests are done."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from aiohttp import ClientTimeout, web

from spork_cli.auth.jwks import JwksCache
from spork_cli.auth.verify import Verifier
from spork_cli.config.model import GatewayConfig
from spork_cli.errors import ConfigError, StateError
from spork_cli.gateway.forwarding import Forwarding
from spork_cli.gateway.header_edits import compile_edits
from spork_cli.gateway.proxy import forward
from spork_cli.gateway.table import CompiledRoute, RouteTable, allowed_methods
from spork_cli.gateway.upstream import ServicePool
from spork_cli.headers import DEFAULT_IDENTITY_HEADERS, PROTECTED_RESPONSE, protected_request
from spork_cli.middleware import Middleware, chain
from spork_cli.middleware.auth import auth_middleware
from spork_cli.middleware.breaker import breaker_middleware
from spork_cli.middleware.cache import RouteCache, invalidating
from spork_cli.middleware.cors import PREFLIGHT, CorsAnswer, CorsPolicy
from spork_cli.middleware.deny import DenyRules, deny_rules
from spork_cli.middleware.ratelimit import ratelimit_middleware
from spork_cli.middleware.security import HeaderSet, Pairs, compile_headers
from spork_cli.middleware.validate import load_validator, validate_middleware
from spork_cli.policies.failure import StoreFailure
from spork_cli.state import StateStore
from spork_cli.state.outage import StateOutage

if TYPE_CHECKING:
    from spork_cli.auth.jwks import JwksCache
    from spork_cli.auth.verify import Verifier
    from spork_cli.gateway.metrics import GatewayMetrics
    from spork_cli.middleware.validate import Validator
    from spork_cli.policies.breaker import BreakerCache
    from spork_cli.state.outage import StateOutage

log = structlog.get_logger("spork.gateway")


@dataclass
class Resources:
    """What compiled tables share and may outlive: the state store and its fallback."""

    store: StateStore | None = None
    local: StateStore | None = None  # the per-process fallback of on_error = "local"
    base_dir: Path = Path(".")
    breakers: BreakerCache | None = None  # one per process: its 250 ms cache spans reloads
    local_breakers: BreakerCache | None = None
    metrics: GatewayMetrics | None = None
    # Every failed store call goes through it: counted, and logged once per outage.
    outage: StateOutage | None = None

    def __post_init__(self) -> None:
        if self.store is not None and self.outage is None:
            self.outage = StateOutage(self.store, self.store.backend)


@dataclass(frozen=True, eq=False)
class Edge:
    """What applies around routing: deny rules, security headers and CORS (preflights, and the
    headers of actual answers). Per-route parts are indexed by ``CompiledRoute.index``."""

    forwarding: Forwarding
    security: HeaderSet  # for requests no route takes
    route_security: tuple[HeaderSet, ...]
    cors: tuple[CorsPolicy | None, ...]
    deny: DenyRules | None = None

    def headers_for(
        self, request: web.Request, route: CompiledRoute | None
    ) -> tuple[Pairs, CorsAnswer | None]:
        """The security headers and the CORS answer that ``request``'s response gets."""
        if route is None:
            return self.security.pick(request, self.forwarding), None
        security = self.security_of(request, route)
        policy = self.cors[route.index]
        if policy is None:
            return security, None
        return security, policy.actual(request.headers.get("Origin"))

    def security_of(self, request: web.Request, route: CompiledRoute) -> Pairs:
        return self.route_security[route.index].pick(request, self.forwarding)

    def preflight(
        self, table: RouteTable, request: web.Request, route: CompiledRoute | None
    ) -> tuple[CompiledRoute, web.Response] | None:
        """The answer to a CORS preflight, from the route that would serve the method it asks
        about (whatever methods that route takes itself); None when no CORS route is there."""
        asked = request.headers.get(PREFLIGHT, "").strip().upper()
        target = table.match(asked, request.raw_path).route if asked else None
        for candidate in (target, route):
            if candidate is not None:
                policy = self.cors[candidate.index]
                if policy is not None:
                    return candidate, policy.preflight(request)
        return None


@dataclass(eq=False)
class GatewayTable(RouteTable):
    """A RouteTable and the edge policies compiled with it, swapped in as one."""

    edge: Edge = field(default=None, repr=False)  # type: ignore[assignment]


async def compile_table(
    config: GatewayConfig,
    previous: RouteTable | None = None,
    resources: Resources | None = None,
) -> GatewayTable:
    """Everything a config needs to serve, built in full before anyone sees it.

    Pools of services whose config did not change are carried over from ``previous`` (with
    their connections and health state), and so is a JWKS cache whose URL did not change.
    """
    resources = resources or Resources()
    auth = config.auth
    forwarding = Forwarding(
        config.server.trusted_proxies,
        auth.forward_claims if auth is not None else DEFAULT_IDENTITY_HEADERS,
        auth.roles_claim if auth is not None else "roles",
        auth.scopes_claim if auth is not None else "scope",
        underscores=config.server.underscores_in_headers,
        trace=config.server.allow_trace,
    )
    # Before any pool opens: what can fail on a bad file fails with nothing to close.
    edge, validators = _edge(config, forwarding, resources.base_dir)
    old = dict(previous.pools) if previous is not None else {}
    pools: dict[str, ServicePool] = {}
    jwks = None
    try:
        for service in config.services:
            carried = old.get(service.name)
            if carried is not None and carried.config == service:
                pools[service.name] = carried
            else:
                pool = ServicePool(service)
                await pool.start()
                pools[service.name] = pool
        verifier, jwks = await _verifier(config, previous, resources)
    except BaseException:
        await _close_new(pools, old)
        if jwks is not None and (previous is None or previous.jwks is not jwks):
            await jwks.close()
        raise
    routes: list[CompiledRoute] = []
    identity = (auth.forward_claims if auth is not None else DEFAULT_IDENTITY_HEADERS).values()
    protected = protected_request(identity)
    for index, route in enumerate(config.routes):
        pool = pools[route.service]
        compiled = CompiledRoute(
            index=index,
            config=route,
            route_id=route.route_id,
            prefix=route.path,
            methods=allowed_methods(route.methods),
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
            request_edits=compile_edits(route.request_headers, protected),
            response_edits=compile_edits(route.response_headers, PROTECTED_RESPONSE),
        )
        validator = validators[route.body_schema] if route.body_schema else None
        compiled.handler = chain(
            _middlewares(compiled, config, verifier, resources, validator),
            partial(forward, route=compiled),
        )
        routes.append(compiled)
    secret_query = None
    if auth is not None and auth.query_param is not None:
        secret_query = re.compile(rf"([?&]{re.escape(auth.query_param)}=)[^&#]*")
    return GatewayTable(
        config=config,
        routes=tuple(routes),
        pools=pools,
        verifier=verifier,
        jwks=jwks,
        secret_query=secret_query,
        edge=edge,
    )


def _edge(
    config: GatewayConfig, forwarding: Forwarding, base_dir: Path
) -> tuple[Edge, dict[str, Validator]]:
    """The edge policies, and the compiled validator of each ``body_schema`` file."""
    try:
        security = compile_headers(config.security_headers)
        everywhere = CorsPolicy(config.cors) if config.cors is not None else None
        deny = deny_rules(config.deny)
    except re.error as exc:
        raise ConfigError(f"invalid regular expression: {exc}") from exc
    route_security: list[HeaderSet] = []
    route_cors: list[CorsPolicy | None] = []
    validators: dict[str, Validator] = {}
    for route in config.routes:
        own = route.security_headers
        route_security.append(security if own is None else compile_headers(own))
        try:
            route_cors.append(everywhere if route.cors is None else CorsPolicy(route.cors))
        except re.error as exc:
            raise ConfigError(f"route {route.route_id}: invalid origin regex: {exc}") from exc
        if route.body_schema is not None and route.body_schema not in validators:
            validators[route.body_schema] = load_validator(base_dir, route.body_schema)
    edge = Edge(forwarding, security, tuple(route_security), tuple(route_cors), deny)
    return edge, validators


async def _verifier(
    config: GatewayConfig, previous: RouteTable | None, resources: Resources
) -> tuple[Verifier | None, JwksCache | None]:
    auth = config.auth
    if auth is None:
        return None, None

    jwks: JwksCache | None = None
    if auth.jwks_url is not None:
        kept = previous.jwks if previous is not None else None
        # Kept across a reload only while it fetches and filters as the new config says.
        if (
            kept is not None
            and kept.url == auth.jwks_url
            and kept.ttl == auth.jwks_cache_ttl
            and kept.algorithms == frozenset(auth.algorithms)
        ):
            jwks = kept
        else:
            jwks = JwksCache.from_config(auth)
            await jwks.start()
    revoked = None
    if resources.store is not None:
        assert resources.outage is not None
        failure = StoreFailure(
            config.state.on_error, resources.outage, resources.local, "revocation", "check tokens"
        )
        revoked = partial(_is_revoked, resources.store, failure)
    return Verifier(auth, resources.base_dir, jwks, revoked=revoked), jwks


async def _is_revoked(store: StateStore, failure: StoreFailure[StateStore], jti: str) -> bool:
    """Ask the store; when it fails, follow ``state.on_error`` (open: not revoked)."""
    try:
        return await store.is_revoked(jti)
    except StateError as exc:
        fallback = failure.fallback(exc)
        return False if fallback is None else await fallback.is_revoked(jti)


def _middlewares(
    route: CompiledRoute,
    config: GatewayConfig,
    verifier: Verifier | None,
    resources: Resources,
    validator: Validator | None = None,
) -> list[Middleware]:
    """The per-route chain between the dispatcher and the proxy, outermost first: auth, rate
    limit (so the authenticated tier knows who is asking), the cache (a hit costs the service
    nothing, so its breaker does not see it), body validation (an invalid body is the client's
    fault, not the service's, so the breaker does not count it), then the service's breaker. A
    route without a feature gets no link for it. Deny rules, security headers and CORS come
    before the chain, in the dispatcher (see ``Edge``)."""
    chain: list[Middleware] = []
    if route.config.auth != "none" and verifier is not None and config.auth is not None:
        chain.append(auth_middleware(route.config, config.auth, verifier))
    outage = resources.outage
    if route.config.rate_limit is not None and resources.store is not None:
        assert outage is not None
        chain.append(
            ratelimit_middleware(
                route.config,
                route.route_id,
                config,
                route.forwarding,
                resources.store,
                resources.local,
                outage,
                resources.metrics,
            )
        )
    cache = route.config.cache
    if cache is not None and resources.store is not None:
        assert outage is not None
        route.cache = RouteCache(
            route.config,
            route.route_id,
            config.state.prefix,
            cache.on_error or config.state.on_error,
            resources.store,
            resources.local,
            outage,
            route.forwarding,
            config.auth.cookie if config.auth is not None else None,
            resources.metrics,
        )
        chain.append(route.cache)
    elif resources.store is not None and any(r.cache is not None for r in config.routes):
        # A successful unsafe request here invalidates what a cached route holds for it.

        chain.append(invalidating)
    if validator is not None:
        chain.append(validate_middleware(validator, route.max_body))
    breaker = route.pool.config.breaker
    if breaker is not None and resources.breakers is not None:
        assert outage is not None
        chain.append(
            breaker_middleware(
                route.pool.name,
                breaker,
                breaker.on_error or config.state.on_error,
                resources.breakers,
                resources.local_breakers,
                outage,
            )
        )
    return chain


async def _close_new(pools: Mapping[str, ServicePool], old: Mapping[str, ServicePool]) -> None:
    for name, pool in pools.items():
        if old.get(name) is not pool:
            await pool.close(0)


async def retire(previous: RouteTable, current: RouteTable, drain: float) -> None:
    """Close what ``current`` no longer uses, after the requests on ``previous`` finish."""
    if not await previous.drained(drain):
        log.warning("closing pools with requests still in flight", requests=previous.in_flight)
    keep = {id(p) for p in current.pools.values()}
    gone = [p for p in previous.pools.values() if id(p) not in keep]
    if gone:
        await asyncio.gather(*(p.close(drain) for p in gone))
    if previous.jwks is not None and previous.jwks is not current.jwks:
        await previous.jwks.close()


async def close_table(table: RouteTable, drain: float) -> None:
    await asyncio.gather(*(pool.close(drain) for pool in table.pools.values()))
    if table.jwks is not None:
        await table.jwks.close()
