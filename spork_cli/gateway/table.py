"""Compile a GatewayConfig into an immutable RouteTable, and match requests against it.

Matching is on the canonical path (see `spork_cli.gateway.canonical`: the form the upstream is
sent too), on segment boundaries: the prefix ``/api``
matches ``/api`` and ``/api/x`` but not ``/apix``; ``/api/`` matches ``/api/x`` only. The
longest matching prefix that allows the method wins; among routes with the same prefix, the
first in the file. A path that some route matches but no route allows the method of gets 405.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from aiohttp import ClientTimeout, web

    from spork_cli.auth.jwks import JwksCache
    from spork_cli.auth.verify import Verifier
    from spork_cli.config.model import GatewayConfig, Route, Service
    from spork_cli.gateway.balancer import EndpointState
    from spork_cli.gateway.forwarding import Forwarding
    from spork_cli.gateway.header_edits import HeaderEdits
    from spork_cli.gateway.upstream import ServicePool
    from spork_cli.middleware.cache import RouteCache

# Conditions of the client's that the cache replaces with its own (see UPSTREAM_CONDITIONS).
CONDITIONAL = frozenset(("if-none-match", "if-modified-since"))

Handler = Callable[["web.Request"], Any]


@dataclass(eq=False)
class CompiledRoute:
    """A route ready to serve: its config, its service pool and its pre-built chain."""

    index: int
    config: Route
    route_id: str
    prefix: str
    methods: frozenset[str] | None
    pool: ServicePool
    forwarding: Forwarding
    max_body: int
    client_timeout: ClientTimeout
    request_timeout: float
    idle_timeout: float  # the service (or route) timeout: longest silence from the upstream
    handler: Handler = field(repr=False, default=None)  # type: ignore[assignment]
    # [routes.request_headers] / [routes.response_headers]; None when the table is empty.
    request_edits: HeaderEdits | None = None
    response_edits: HeaderEdits | None = None
    # The route's response cache (also reached by other routes' unsafe requests).
    cache: RouteCache | None = None

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    def upstream_headers(
        self, request: web.Request, endpoint: EndpointState, keep_length: bool = False
    ) -> list[tuple[str, str]]:
        """The headers of the request to ``endpoint``: `Forwarding.upstream_headers`, then the
        route's ``request_headers`` edits."""
        headers = self.forwarding.upstream_headers(
            request, endpoint, self.pool.config.preserve_host, keep_length=keep_length
        )
        if self.cache is not None:
            # Here, not at the top: `spork routes` reads this module without aiohttp.
            from spork_cli.gateway.keys import UPSTREAM_CONDITIONS

            conditions = request.get(UPSTREAM_CONDITIONS)
            if conditions is not None:
                headers = [(k, v) for k, v in headers if k.lower() not in CONDITIONAL]
                headers += conditions
        edits = self.request_edits
        return headers if edits is None else edits.request_items(headers)


@dataclass(frozen=True)
class Match:
    route: CompiledRoute | None
    allowed: frozenset[str] = frozenset()  # for 405: what the path would accept


@dataclass(eq=False)
class RouteTable:
    """Immutable once built; a reload builds a new table and swaps one reference."""

    config: GatewayConfig
    routes: tuple[CompiledRoute, ...]
    pools: Mapping[str, ServicePool]
    verifier: Verifier | None = None
    jwks: JwksCache | None = None
    secret_query: re.Pattern[str] | None = None  # a token-carrying query parameter

    def redact(self, raw_path: str) -> str:
        """``raw_path`` with the token query parameter's value hidden, for logs."""
        assert self.secret_query is not None
        return self.secret_query.sub(r"\1[redacted]", raw_path)

    by_prefix: dict[str, tuple[CompiledRoute, ...]] = field(default_factory=dict)
    in_flight: int = 0
    _drained: asyncio.Event | None = None

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._drained is not None:
            self._drained.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until no request that matched on this table is still running."""
        if self.in_flight == 0:
            return True
        self._drained = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._drained.wait()
        except TimeoutError:
            return False
        return True

    def __post_init__(self) -> None:
        grouped: dict[str, list[CompiledRoute]] = {}
        for route in self.routes:
            grouped.setdefault(route.prefix, []).append(route)
        self.by_prefix = {prefix: tuple(routes) for prefix, routes in grouped.items()}

    def match(self, method: str, raw_path: str) -> Match:
        """The route for ``method`` on the canonical ``raw_path`` (its query ignored): the
        longest prefix on a segment boundary, then file order; else the methods the path
        would accept (for a 405)."""
        route, allowed = _lookup(self.by_prefix, method, raw_path)
        return Match(route, allowed)


class _Methods(Protocol):
    @property
    def methods(self) -> frozenset[str] | None: ...


Routed = TypeVar("Routed", bound=_Methods)


def _lookup(
    by_prefix: Mapping[str, Sequence[Routed]], method: str, raw_path: str
) -> tuple[Routed | None, frozenset[str]]:
    """`RouteTable.match` over any routes indexed by prefix (compiled, or read from a config)."""
    path = raw_path.split("?", 1)[0]
    allowed: set[str] = set()
    seen_path = False
    for candidate in _candidates(path):
        routes = by_prefix.get(candidate)
        if routes is None:
            continue
        seen_path = True
        for route in routes:
            if route.methods is None or method in route.methods:
                return route, frozenset()
            allowed |= route.methods
    if seen_path and "GET" in allowed:
        allowed.add("HEAD")
    return None, frozenset(allowed)


@dataclass(frozen=True, slots=True)
class _ConfigRoute:
    config: Route
    methods: frozenset[str] | None


def config_match(config: GatewayConfig, method: str, path: str) -> Route | None:
    """The route of ``config`` the compiled table would choose for ``method`` on ``path``
    (canonical form), without compiling it (`spork token verify --route` stays light)."""
    by_prefix: dict[str, list[_ConfigRoute]] = {}
    for route in config.routes:
        by_prefix.setdefault(route.path, []).append(
            _ConfigRoute(route, allowed_methods(route.methods))
        )
    found, _ = _lookup(by_prefix, method, path)
    return found.config if found is not None else None


def _candidates(path: str) -> list[str]:
    """Prefixes of ``path`` on segment boundaries, longest first."""
    out = [path]
    end = len(path)
    while end > 0:
        slash = path.rfind("/", 0, end)
        if slash < 0:
            break
        if slash + 1 < len(path) and path[: slash + 1] != path:
            out.append(path[: slash + 1])
        if slash > 0:
            out.append(path[:slash])
        end = slash
    if "/" not in out:
        out.append("/")
    return out


def strip(route: CompiledRoute, raw_path: str) -> str:
    """The raw path (query included) to send upstream."""
    if not route.config.strip_prefix:
        return raw_path
    rest = raw_path[len(route.prefix) :]
    if not rest or rest[0] == "?":
        return "/" + rest
    return rest if rest[0] == "/" else "/" + rest


def allowed_methods(methods: Sequence[str]) -> frozenset[str] | None:
    """None means any method; a route that takes GET takes HEAD too (RFC 9110, 9.3.2)."""
    if not methods:
        return None
    allowed = set(methods)
    if "GET" in allowed:
        allowed.add("HEAD")
    return frozenset(allowed)


def route_rows(table: RouteTable) -> list[dict[str, Any]]:
    """The compiled table as plain rows, for the admin API."""
    return [
        _row(route.config, route.route_id, route.prefix, route.methods, route.pool.config)
        for route in table.routes
    ]


def config_rows(config: GatewayConfig) -> list[dict[str, Any]]:
    """The rows ``route_rows`` gives for the table compiled from ``config``, from the parts of
    compilation they show (no pools, keys or chains are built): `spork routes` stays light."""
    rows = []
    for route in config.routes:
        service = config.service(route.service)
        assert service is not None, "a valid config routes only to its services"
        rows.append(
            _row(route, route.route_id, route.path, allowed_methods(route.methods), service)
        )
    return rows


def _row(
    cfg: Route, route_id: str, prefix: str, methods: frozenset[str] | None, service: Service
) -> dict[str, Any]:
    features = [
        name
        for name, on in (
            ("rate_limit", cfg.rate_limit is not None),
            ("cache", cfg.cache is not None),
            ("body_schema", cfg.body_schema is not None),
            ("cors", cfg.cors is not None),
            ("breaker", service.breaker is not None),
        )
        if on
    ]
    return {
        "route": route_id,
        "path": prefix,
        "methods": sorted(methods) if methods else ["*"],
        "service": cfg.service,
        "endpoints": [e.url for e in service.endpoints],
        "strip_prefix": cfg.strip_prefix,
        "auth": cfg.auth,
        "features": features,
    }
