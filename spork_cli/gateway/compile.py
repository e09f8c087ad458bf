"""Compile a config into a RouteTable: pools, keys and per-route chains, built in full before
any request sees them; and retire a replaced table once its requests are done."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from aiohttp import ClientTimeout

from spork_cli.config.model import GatewayConfig
from spork_cli.errors import StateError
from spork_cli.gateway.forwarding import Forwarding
from spork_cli.gateway.proxy import forward
from spork_cli.gateway.table import CompiledRoute, RouteTable
from spork_cli.gateway.upstream import ServicePool
from spork_cli.middleware import Middleware, chain
from spork_cli.middleware.errors import HTTPProblem
from spork_cli.state import StateStore

if TYPE_CHECKING:
    from spork_cli.auth.jwks import JwksCache
    from spork_cli.auth.verify import Verifier
    from spork_cli.breaker import BreakerCache

log = structlog.get_logger("spork.gateway")

DEFAULT_IDENTITY_HEADERS = {"sub": "X-User-Id", "roles": "X-User-Roles"}


@dataclass
class Resources:
    """What compiled tables share and may outlive: the state store and its fallback."""

    store: StateStore | None = None
    local: StateStore | None = None  # the per-process fallback of on_error = "local"
    base_dir: Path = Path(".")
    breakers: BreakerCache | None = None  # one per process: its 250 ms cache spans reloads
    local_breakers: BreakerCache | None = None


async def compile_table(
    config: GatewayConfig,
    previous: RouteTable | None = None,
    resources: Resources | None = None,
) -> RouteTable:
    """Everything a config needs to serve, built in full before anyone sees it.

    Pools of services whose config did not change are carried over from ``previous`` (with
    their connections and health state), and so is a JWKS cache whose URL did not change.
    """
    resources = resources or Resources()
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
    claims = config.auth.forward_claims if config.auth is not None else DEFAULT_IDENTITY_HEADERS
    auth = config.auth
    forwarding = Forwarding(
        config.server.trusted_proxies,
        claims,
        auth.roles_claim if auth is not None else "roles",
        auth.scopes_claim if auth is not None else "scope",
    )
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
        compiled.handler = chain(
            _middlewares(compiled, config, verifier, resources), partial(forward, route=compiled)
        )
        routes.append(compiled)
    secret_query = None
    if auth is not None and auth.query_param is not None:
        secret_query = re.compile(rf"([?&]{re.escape(auth.query_param)}=)[^&#]*")
    return RouteTable(
        config=config,
        routes=tuple(routes),
        pools=pools,
        verifier=verifier,
        jwks=jwks,
        secret_query=secret_query,
    )


async def _verifier(
    config: GatewayConfig, previous: RouteTable | None, resources: Resources
) -> tuple[Verifier | None, JwksCache | None]:
    auth = config.auth
    if auth is None:
        return None, None
    from spork_cli.auth.jwks import JwksCache
    from spork_cli.auth.verify import Verifier

    jwks: JwksCache | None = None
    if auth.jwks_url is not None:
        kept = previous.jwks if previous is not None else None
        if kept is not None and kept.url == auth.jwks_url:
            jwks = kept
        else:
            jwks = JwksCache.from_config(auth)
            await jwks.start()
    revoked = partial(_is_revoked, config, resources) if resources.store is not None else None
    return Verifier(auth, resources.base_dir, jwks, revoked=revoked), jwks


async def _is_revoked(config: GatewayConfig, resources: Resources, jti: str) -> bool:
    """Ask the store; when it fails, follow ``state.on_error``."""
    assert resources.store is not None
    try:
        return await resources.store.is_revoked(jti)
    except StateError as exc:
        policy = config.state.on_error
        log.warning("state store failed; revocation check", error=str(exc), policy=policy)
        if policy == "closed":
            raise HTTPProblem(
                503, "state-unavailable", "the gateway cannot check tokens right now"
            ) from exc
        if policy == "local" and resources.local is not None:
            return await resources.local.is_revoked(jti)
        return False


def _methods(methods: Sequence[str]) -> frozenset[str] | None:
    """None means any method; a route that takes GET takes HEAD too (RFC 9110, 9.3.2)."""
    if not methods:
        return None
    allowed = set(methods)
    if "GET" in allowed:
        allowed.add("HEAD")
    return frozenset(allowed)


def _middlewares(
    route: CompiledRoute,
    config: GatewayConfig,
    verifier: Verifier | None,
    resources: Resources,
) -> list[Middleware]:
    """The per-route chain between the dispatcher and the proxy, outermost first: auth, rate
    limit (so the authenticated tier knows who is asking), the cache (a hit costs the service
    nothing, so its breaker does not see it), then the service's breaker."""
    chain: list[Middleware] = []
    if route.config.auth != "none" and verifier is not None and config.auth is not None:
        from spork_cli.middleware.auth import auth_middleware

        chain.append(auth_middleware(route.config, config.auth, verifier))
    if route.config.rate_limit is not None and resources.store is not None:
        from spork_cli.middleware.ratelimit import ratelimit_middleware

        chain.append(
            ratelimit_middleware(
                route.config,
                route.route_id,
                config,
                route.forwarding,
                resources.store,
                resources.local,
            )
        )
    cache = route.config.cache
    if cache is not None and resources.store is not None:
        from spork_cli.middleware.cache import cache_middleware

        chain.append(
            cache_middleware(
                route.config,
                route.route_id,
                config.state.prefix,
                cache.on_error or config.state.on_error,
                resources.store,
                resources.local,
            )
        )
    breaker = route.pool.config.breaker
    if breaker is not None and resources.breakers is not None:
        from spork_cli.middleware.breaker import breaker_middleware

        chain.append(
            breaker_middleware(
                route.pool.name,
                breaker,
                breaker.on_error or config.state.on_error,
                resources.breakers,
                resources.local_breakers,
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
