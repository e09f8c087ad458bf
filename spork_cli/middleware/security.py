"""Security headers on every response, compiled once per config into header tuples.

Presets: ``default`` sends ``X-Content-Type-Options: nosniff``, ``X-Frame-Options:
SAMEORIGIN``, ``Referrer-Policy: strict-origin-when-cross-origin`` and HSTS; ``strict`` also a
deny-all ``Content-Security-Policy``, ``X-Frame-Options: DENY``, ``Referrer-Policy:
no-referrer``, a ``Permissions-Policy`` that turns off device APIs, and HSTS with
``includeSubDomains``; ``off`` sends only what is set explicitly. The other keys override the
preset; an empty string (in a key or in ``extra``) drops the preset's header. A route's
``[routes.security_headers]`` replaces the global table as a whole.

The gateway's value wins: a header it is configured to send replaces the upstream's, as Kong's
and Traefik's header plugins do, so the policy in gateway.toml is what clients get. Headers it
does not send pass through untouched.

HSTS (``Strict-Transport-Security``, from ``hsts_max_age`` or set whole in ``extra``) goes only
on requests that arrived over HTTPS: TLS at this listener, or ``X-Forwarded-Proto: https`` from
a proxy in ``server.trusted_proxies``. Over plain HTTP browsers ignore it anyway, and a client
must not be able to turn it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from spork_cli.config.model import SecurityHeaders
    from spork_cli.gateway.forwarding import Forwarding

Pairs = tuple[tuple[str, str], ...]

HSTS = "Strict-Transport-Security"
PRESETS: dict[str, dict[str, str]] = {
    "default": {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "SAMEORIGIN",
        "Referrer-Policy": "strict-origin-when-cross-origin",
    },
    "strict": {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        # An API answer needs no scripts, frames or forms: nothing is allowed.
        "Content-Security-Policy": (
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        ),
        "Permissions-Policy": (
            "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
            "microphone=(), payment=(), usb=()"
        ),
    },
    "off": {},
}
SUBDOMAINS = {"default": False, "strict": True, "off": False}
OVERRIDES = (
    ("content_security_policy", "Content-Security-Policy"),
    ("frame_options", "X-Frame-Options"),
    ("referrer_policy", "Referrer-Policy"),
    ("permissions_policy", "Permissions-Policy"),
)


@dataclass(frozen=True, slots=True)
class HeaderSet:
    """The compiled headers of one ``[security_headers]`` table."""

    plain: Pairs
    secure: Pairs  # ``plain`` and HSTS, for requests that came over HTTPS

    def pick(self, request: web.Request, forwarding: Forwarding) -> Pairs:
        if self.secure is self.plain or not arrived_over_https(request, forwarding):
            return self.plain
        return self.secure


def compile_headers(config: SecurityHeaders) -> HeaderSet:
    # Keyed by lower-cased name: `extra` may override a preset header in any spelling.
    chosen = {name.lower(): (name, value) for name, value in PRESETS[config.preset].items()}
    hsts: str | None = None
    if config.preset != "off" or "hsts_max_age" in config.model_fields_set:
        hsts = f"max-age={int(config.hsts_max_age)}"
        if SUBDOMAINS[config.preset]:
            hsts += "; includeSubDomains"
    for key, name in OVERRIDES:
        value = getattr(config, key)
        if value is not None:
            chosen[name.lower()] = (name, value)
    for name, value in config.extra.items():
        if name.lower() == HSTS.lower():
            hsts = value
        else:
            chosen[name.lower()] = (name, value)
    plain = tuple(pair for pair in chosen.values() if pair[1])
    if not hsts:
        return HeaderSet(plain, plain)
    return HeaderSet(plain, (*plain, (HSTS, hsts)))


def arrived_over_https(request: web.Request, forwarding: Forwarding) -> bool:
    """TLS at this listener, or a trusted proxy saying the client used HTTPS."""
    if request.secure:
        return True
    if not forwarding.trusted:
        return False
    proto = request.headers.get("X-Forwarded-Proto")
    if proto is None:
        return False
    # A proxy that appends leaves the client's own value in front: believe only the last one,
    # which the trusted peer wrote.
    last = proto.rsplit(",", 1)[-1].strip().lower()
    return last == "https" and forwarding.is_trusted(request.remote)
