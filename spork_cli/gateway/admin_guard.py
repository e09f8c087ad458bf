"""Who the admin listener answers: the ``Host`` it was addressed by, where a state-changing
request comes from and what it carries, and the admin token.

Any web page can make a browser send requests to 127.0.0.1: a form post or a ``no-cors``
``fetch`` arrives even though the page never sees the answer, and a page whose own name is
rebound to 127.0.0.1 (DNS rebinding) reads the answers too. So, in this order:

- ``Host`` must name this listener: ``127.0.0.1``, ``localhost``, ``[::1]``, the bound host
  or the address the connection arrived at, each at the listener's port, or a name in
  ``admin.allowed_hosts``; else 403. A rebinding page can only send its own name.
  ``/health`` and ``/health/ready`` skip this (and the token): probes address the listener
  by whatever name they were given, and those answers hold nothing a page could use.
- A state-changing method (anything but GET, HEAD, OPTIONS) with an ``Origin`` other than
  this listener's own, or a ``Sec-Fetch-Site`` other than ``same-origin`` or ``none``: 403.
- With a token, every other endpoint needs it (401) except the dashboard page and its files
  (constant files that hold no data; the page asks for the token) and, when
  ``admin.metrics_public`` is set, the metrics.
- A state-changing request must say ``Content-Type: application/json`` (415). A browser sends
  that to another origin only after a CORS preflight, which this listener never grants.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from spork_cli.problems import problem_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBES = frozenset({"/health", "/health/ready"})
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SAME_ORIGIN_FETCH = frozenset({"same-origin", "none"})
_ORIGIN = re.compile(r"^(https?)://([^/?#@]+)$", re.ASCII)
DEFAULT_PORTS = {"http": 80, "https": 443}

HostPort = tuple[str, int | None]


def split_host(value: str) -> HostPort | None:
    """A ``Host`` value as (normalised name or address, port or None); None when malformed.

    Addresses are compared in their canonical text (``[0::1]`` is ``::1``), names in lower
    case without a trailing dot.
    """
    value = value.strip()
    if value.startswith("["):
        name, closed, rest = value[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    else:
        name, colon, after = value.partition(":")
        port = after if colon else None
    if not name:
        return None
    if port is not None and not (port.isascii() and port.isdigit() and len(port) <= 5):
        return None
    return _normal(name), int(port) if port is not None else None


def _normal(name: str) -> str:
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name.lower().removesuffix(".")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


@dataclass(frozen=True)
class Guard:
    """The checks above for one admin listener (its settings are static)."""

    token: str | None
    bound_host: str
    allowed_hosts: tuple[HostPort, ...]
    open_paths: frozenset[str]  # canonical resource paths that need no token

    @classmethod
    def of(
        cls,
        token: str | None,
        bound_host: str,
        allowed_hosts: Iterable[str],
        open_paths: Iterable[str],
    ) -> Guard:
        allowed = tuple(h for h in map(split_host, allowed_hosts) if h is not None)
        return cls(token, _normal(bound_host), allowed, frozenset(open_paths))

    def host_allowed(self, request: web.Request) -> bool:
        given = split_host(request.headers.get("Host", ""))
        if given is None:
            return False
        name, port = given
        for allowed_name, allowed_port in self.allowed_hosts:
            if name == allowed_name and allowed_port in (None, port):
                return True
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if not isinstance(sockname, tuple) or len(sockname) < 2:
            return False  # not on TCP: only the configured names are known
        local, listener_port = _normal(str(sockname[0])), sockname[1]
        return (port if port is not None else 80) == listener_port and name in {
            *LOOPBACK,
            self.bound_host,
            local,
        }

    def cross_origin(self, request: web.Request) -> bool:
        """Whether a state-changing request came from a page of another origin."""
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site.lower() not in SAME_ORIGIN_FETCH:
            return True
        origin = request.headers.get("Origin")
        if origin is None:
            return False  # not a browser (curl, the CLI), or one that sent no Origin
        match = _ORIGIN.match(origin.strip())
        own = split_host(request.headers.get("Host", ""))
        if match is None or own is None:
            return True  # `null` (a sandboxed or file: page) and every malformed value
        scheme, authority = match.groups()
        theirs = split_host(authority)
        if theirs is None:
            return True
        default = DEFAULT_PORTS[scheme]
        return (theirs[0], theirs[1] or default) != (own[0], own[1] or default)

    def has_token(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    def middleware(self) -> Middleware:
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            resource = request.match_info.route.resource
            path = resource.canonical if resource is not None else None
            if path in PROBES:
                return await handler(request)
            if not self.host_allowed(request):
                return _refuse(
                    request, 403, "admin-host", "this Host does not name the admin listener"
                )
            unsafe = request.method not in SAFE_METHODS
            if unsafe and self.cross_origin(request):
                return _refuse(
                    request,
                    403,
                    "cross-origin",
                    "the admin API takes changes only from its own origin",
                )
            # An unmatched path goes on to its 404 or 405: no handler runs for it.
            needs_token = path is not None and path not in self.open_paths
            if needs_token and not self.has_token(request):
                return _refuse(request, 401, "admin-token", "the admin API needs its bearer token")
            if unsafe and not (
                "Content-Type" in request.headers and request.content_type == "application/json"
            ):
                return _refuse(
                    request,
                    415,
                    "unsupported-media-type",
                    "the admin API takes changes as application/json",
                )
            return await handler(request)

        return guard


def _refuse(request: web.Request, status: int, slug: str, detail: str) -> web.Response:
    response = problem_response(status, slug, detail)
    if request.method not in SAFE_METHODS and request.can_read_body:
        response.force_close()  # the body is never read: do not leave it in the connection
    return response
