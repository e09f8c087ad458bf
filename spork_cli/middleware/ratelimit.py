"""Rate limiting of a route: a 429 problem with Retry-After over the limit, and the rate-limit
headers (DESIGN section 6) on every response of a limited route."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from aiohttp import web

from spork_cli.errors import StateError
from spork_cli.gateway.forwarding import parse_address
from spork_cli.gateway.keys import IDENTITY, RESPONSE_HEADERS
from spork_cli.middleware import Handler, Middleware
from spork_cli.policies.failure import StoreFailure
from spork_cli.policies.limiter import Limit, acquire, client_key, headers
from spork_cli.problems import HTTPProblem
from spork_cli.state import StateStore, limit_key
from spork_cli.state.memory import MemoryStore
from spork_cli.state.memory_limiter import LimiterFull

if TYPE_CHECKING:
    from spork_cli.config.model import GatewayConfig, Route
    from spork_cli.gateway.forwarding import Forwarding
    from spork_cli.gateway.metrics import GatewayMetrics
    from spork_cli.state.outage import StateOutage


def client_ip(request: web.Request, forwarding: Forwarding) -> str:
    """The client's address: the peer, or behind trusted proxies the first hop of the chain
    they vouch for (`Forwarding.chain`: the nearest untrusted hop of X-Forwarded-For, or of
    ``Forwarded: for=`` when no X-Forwarded-For came, read right to left, so a client cannot
    pick its own address). An IPv4-mapped IPv6 address (``::ffff:1.2.3.4``) is the IPv4
    address, so one client has one key."""
    peer = request.remote or ""
    if forwarding.trusted and forwarding.is_trusted(peer):
        hops = forwarding.chain(request.headers)
        if hops:
            return str(hops[0])
    if peer[:7].lower() == "::ffff:":
        address = parse_address(peer)
        if address is not None:
            return str(address)
    return peer


_tiers: tuple[GatewayConfig, frozenset[str]] | None = None


def limit_tiers(config: GatewayConfig) -> frozenset[str]:
    """The limiter tiers of a config, as in the keys: each limited route's id, and ``:auth``
    after it for a route with an authenticated tier. Asked once per route of a compile, so the
    last answer is kept."""
    global _tiers
    if _tiers is None or _tiers[0] is not config:
        tiers = set()
        for route in config.routes:
            if route.rate_limit is not None:
                tiers.add(route.route_id)
                if route.rate_limit.authenticated is not None:
                    tiers.add(route.route_id + ":auth")
        _tiers = (config, frozenset(tiers))
    return _tiers[1]


def ratelimit_middleware(
    route: Route,
    route_id: str,
    config: GatewayConfig,
    forwarding: Forwarding,
    store: StateStore,
    local: StateStore | None,
    outage: StateOutage,
    metrics: GatewayMetrics | None = None,
) -> Middleware:
    limit_config = route.rate_limit
    assert limit_config is not None
    anonymous = Limit.from_config(limit_config)
    authenticated = Limit.from_config(limit_config, authenticated=True)
    split_tiers = limit_config.authenticated is not None
    exempt = frozenset(limit_config.exempt_roles)
    parts = tuple(limit_config.key)
    failure = StoreFailure(
        limit_config.on_error or config.state.on_error,
        outage,
        local,
        "ratelimit",
        "apply its rate limit",
    )
    prefix = config.state.prefix
    # A memory store shares its limiter room out between the limited routes' tiers, so that
    # keys chosen by the clients of one route cannot leave another's new clients without room.
    for memory in (store, local):
        if isinstance(memory, MemoryStore):
            memory.share_limits(limit_tiers(config))

    async def limited(request: web.Request, handler: Handler) -> web.StreamResponse:
        identity = request.get(IDENTITY)
        if identity is not None and exempt and exempt.intersection(identity.roles):
            return await handler(request)
        limit = authenticated if identity is not None else anonymous
        tier = route_id + (":auth" if identity is not None and split_tiers else "")
        client = client_key(
            parts,
            client_ip(request, forwarding),
            identity.sub if identity is not None else None,
            request.headers,
            route_id,
        )
        key = limit_key(prefix, tier, client)
        try:
            result = await acquire(store, key, limit)
        except LimiterFull as exc:
            # No room for a new client is not an outage: refused whatever on_error says (the
            # open way would let every new client through uncounted once the room is full).
            raise HTTPProblem(
                503,
                "limiter-full",
                "the gateway holds as many rate limit clients as it can; retry later",
                headers={"Retry-After": str(max(math.ceil(exc.retry_after), 1))},
            ) from exc
        except StateError as exc:
            fallback = failure.fallback(exc)
            if fallback is None:
                return await handler(request)
            result = await acquire(fallback, key, limit)
        extra = headers(result, limit)
        if not result.allowed:
            if metrics is not None:
                metrics.count("ratelimit_rejected", route_id)
            raise HTTPProblem(
                429,
                "rate-limited",
                f"too many requests: {limit.rate} per {limit.period:g}s; "
                f"retry in {extra.get('Retry-After', '1')}s",
                headers=extra,
            )
        request[RESPONSE_HEADERS] = extra
        return await handler(request)

    return limited
