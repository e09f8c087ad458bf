"""CORS answered at the gateway, from ``[cors]`` or a route's own ``[routes.cors]``.

Origins are allowed by exact match, by ``*``, or by a regex that must match the whole origin
(``fullmatch``: ``https://app\\.example\\.com`` does not let ``https://app.example.com.evil.net``
in). With ``allow_credentials`` the origin is echoed, never ``*``, as browsers demand.

A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered by the gateway with
204 and ``Access-Control-Max-Age``; it never reaches the upstream, and it is answered for the
route that would serve the method asked about, even when that route does not take OPTIONS.
``allow_headers = ["*"]`` echoes the headers the preflight asks for (a literal ``*`` would not
cover ``Authorization``, nor anything on a request with credentials).

A refused origin gets no CORS headers at all. Its preflight is still answered 204 (as Kong and
Traefik do): without ``Access-Control-Allow-Origin`` the browser stops there, and the answer
does not tell anyone which origins would pass. Whenever the answer depends on the origin,
responses carry ``Vary: Origin`` (refused and origin-less requests too), so no cache hands one
origin's answer to another.

On a route with CORS the gateway alone speaks CORS: the upstream's ``Access-Control-*``
response headers are replaced by the gateway's, or removed for a refused origin. The dispatcher
decides the answer before the route's chain runs, so preflights never meet auth or rate limits,
and the route's errors (401, 429, 502...) carry the headers too, for scripts to read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from multidict import CIMultiDict

    from spork_cli.config.model import Cors

Pairs = tuple[tuple[str, str], ...]

PREFLIGHT = "Access-Control-Request-Method"
ALLOW_ORIGIN = "Access-Control-Allow-Origin"
# Response headers a CORS route's answer carries only when the gateway puts them there.
OWNED = (
    ALLOW_ORIGIN,
    "Access-Control-Allow-Credentials",
    "Access-Control-Expose-Headers",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Max-Age",
)


@dataclass(frozen=True, slots=True)
class CorsAnswer:
    """The CORS headers of one actual (not preflight) response."""

    headers: Pairs
    vary: bool

    def apply(self, headers: CIMultiDict[str]) -> None:
        for name in OWNED:
            headers.popall(name, None)
        headers.extend(self.headers)
        if self.vary:
            add_vary(headers, "Origin")


def add_vary(headers: CIMultiDict[str], name: str) -> None:
    present = headers.getall("Vary", ())
    if not present:
        headers["Vary"] = name
        return
    tokens = {token.strip().lower() for value in present for token in value.split(",")}
    if name.lower() in tokens or "*" in tokens:
        return
    headers["Vary"] = ", ".join((*present, name))


class CorsPolicy:
    """One ``[cors]`` table, compiled: what each origin is told."""

    def __init__(self, config: Cors) -> None:
        any_origin = "*" in config.allow_origins
        self.credentials = config.allow_credentials
        self.origins = frozenset(o for o in config.allow_origins if o != "*")
        self.patterns = tuple(re.compile(p) for p in config.allow_origin_regex)
        self.any_origin = any_origin
        # `*` is one answer for everyone; an echoed origin makes the answer depend on it.
        self.wildcard = any_origin and not self.credentials
        self.vary = not self.wildcard
        common: list[tuple[str, str]] = []
        if self.credentials:
            common.append(("Access-Control-Allow-Credentials", "true"))
        self.actual_common = (
            (*common, ("Access-Control-Expose-Headers", ", ".join(config.expose_headers)))
            if config.expose_headers
            else tuple(common)
        )
        self.echo_headers = "*" in config.allow_headers
        listed = ", ".join(h for h in config.allow_headers if h != "*")
        preflight = list(common)
        if config.allow_methods:
            preflight.append(("Access-Control-Allow-Methods", ", ".join(config.allow_methods)))
        if listed and not self.echo_headers:
            preflight.append(("Access-Control-Allow-Headers", listed))
        preflight.append(("Access-Control-Max-Age", str(int(config.max_age))))
        self.preflight_common = tuple(preflight)
        self.refused = CorsAnswer((), self.vary)
        self.everyone = CorsAnswer(((ALLOW_ORIGIN, "*"), *self.actual_common), False)

    def allows(self, origin: str | None) -> bool:
        if origin is None:
            return False
        if self.any_origin or origin in self.origins:
            return True
        return any(p.fullmatch(origin) for p in self.patterns)

    def actual(self, origin: str | None) -> CorsAnswer:
        if self.wildcard:
            return self.everyone
        if not self.allows(origin):
            return self.refused
        assert origin is not None
        return CorsAnswer(((ALLOW_ORIGIN, origin), *self.actual_common), True)

    def preflight(self, request: web.Request) -> web.Response:
        """204 for every preflight; CORS headers only for an allowed origin."""
        origin = request.headers.get("Origin")
        response = web.Response(status=204)
        headers = response.headers
        if self.vary:
            headers["Vary"] = "Origin"
        if not self.allows(origin):
            return response
        assert origin is not None
        headers[ALLOW_ORIGIN] = "*" if self.wildcard else origin
        headers.extend(self.preflight_common)
        if self.echo_headers:
            asked = request.headers.get("Access-Control-Request-Headers")
            if asked:
                headers["Access-Control-Allow-Headers"] = asked
            add_vary(headers, "Access-Control-Request-Headers")
        return response
