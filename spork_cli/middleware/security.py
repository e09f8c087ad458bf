"""Security headers on every response, compiled once per config into header pairs.

Presets: ``default`` sends ``X-Content-Type-Options: nosniff``, ``X-Frame-Options:
SAMEORIGIN``, ``Referrer-Policy: strict-origin-when-cross-origin`` and HSTS; ``strict`` also a
deny-all ``Content-Security-Policy``, ``X-Frame-Options: DENY``, ``Referrer-Policy:
no-referrer``, a ``Permissions-Policy`` that turns off device APIs, and HSTS with
``includeSubDomains``; ``off`` sends only what is set explicitly. The other keys override the
preset; an empty string (in a key or in ``extra``) drops the preset's header. A route's
``[routes.security_headers]`` replaces the global table as a whole.

A preset's header is a default, like nginx's ``add_header`` beside an upstream that sets its
own or Traefik's headers middleware: it is added only when the upstream did not send that
header, so an upstream's ``X-Frame-Options: DENY`` is never weakened to ``SAMEORIGIN``. A
header set explicitly (a per-header key, ``extra``, or ``hsts_max_age`` when written in the
file) is policy: it replaces the upstream's value, so what gateway.toml says is what clients
get. Headers the gateway does not send pass through untouched.

HSTS (``Strict-Transport-Security``, from ``hsts_max_age`` or set whole in ``extra``) goes only
on requests that arrived over HTTPS: TLS at this listener, or ``X-Forwarded-Proto: https`` from
a proxy in ``server.trusted_proxies``. Over plain HTTP browsers ignore it anyway, and a client
must not be able to turn it on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from multidict import CIMultiDict

    from spork_cli.config.model import SecurityHeaders
    from spork_cli.gateway.forwarding import Forwarding


@dataclass(frozen=True, slots=True)
class Pairs:
    """The security headers of one answer: ``keep`` (a preset's) only where the answer has no
    header of that name, ``force`` (set explicitly) replacing whatever it has. Iterating gives
    every pair, which is what an answer the gateway makes itself (a problem) gets."""

    keep: tuple[tuple[str, str], ...] = ()
    force: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.keep or self.force)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        yield from self.keep
        yield from self.force

    def apply(self, headers: CIMultiDict[str]) -> None:
        for name, value in self.keep:
            headers.setdefault(name, value)
        if self.force:
            headers.update(self.force)


NO_PAIRS = Pairs()

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
    # Keyed by lower-cased name: `extra` may override a preset header in any spelling. The
    # flag says whether the value was set explicitly (and so replaces the upstream's).
    chosen = {name.lower(): (name, value, False) for name, value in PRESETS[config.preset].items()}
    hsts: tuple[str, bool] | None = None
    explicit_age = "hsts_max_age" in config.model_fields_set
    if config.preset != "off" or explicit_age:
        age = f"max-age={int(config.hsts_max_age)}"
        hsts = (age + "; includeSubDomains" if SUBDOMAINS[config.preset] else age, explicit_age)
    for key, name in OVERRIDES:
        value = getattr(config, key)
        if value is not None:
            chosen[name.lower()] = (name, value, True)
    for name, value in config.extra.items():
        if name.lower() == HSTS.lower():
            hsts = (value, True)
        else:
            chosen[name.lower()] = (name, value, True)
    kept = tuple((n, v) for n, v, explicit in chosen.values() if v and not explicit)
    forced = tuple((n, v) for n, v, explicit in chosen.values() if v and explicit)
    plain = Pairs(kept, forced)
    if hsts is None or not hsts[0]:
        return HeaderSet(plain, plain)
    value, explicit = hsts
    if explicit:
        return HeaderSet(plain, Pairs(kept, (*forced, (HSTS, value))))
    return HeaderSet(plain, Pairs((*kept, (HSTS, value)), forced))


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
