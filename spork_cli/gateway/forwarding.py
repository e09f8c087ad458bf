"""Headers on the way through: hop-by-hop removal, X-Forwarded-* and Forwarded (trusting
only configured proxies), request ids and trace context, and verified claims sent upstream
(never taken from a client)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from spork_cli.auth.claims import claim_value
from spork_cli.middleware import IDENTITY, REQUEST_ID
from spork_cli.middleware.errors import HTTPProblem
from spork_cli.middleware.request_id import traceparent

if TYPE_CHECKING:
    from spork_cli.gateway.balancer import EndpointState

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
# Set by the gateway on every upstream request, replacing any client-sent value.
FORWARDING_HEADERS = frozenset(
    ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-request-id")
) | {"traceparent"}


# Request body encodings the aiohttp listener decodes before the gateway reads the body.
INFLATED = frozenset(("gzip", "deflate", "br", "zstd"))


class Forwarding:
    """How headers are rewritten on the way; built once per table."""

    def __init__(
        self,
        trusted_proxies: Iterable[str],
        claims: Mapping[str, str],
        roles_claim: str = "roles",
        scopes_claim: str = "scope",
    ) -> None:
        self.roles_claim = roles_claim
        self.scopes_claim = scopes_claim
        self.trusted = [ipaddress.ip_network(c, strict=False) for c in trusted_proxies]
        # claim -> header: sent upstream for verified tokens, never taken from a client
        self.claims = tuple(claims.items())
        identity = frozenset(h.lower() for h in claims.values())
        self.strip_keep_length = identity | HOP_BY_HOP | FORWARDING_HEADERS | {"host", "expect"}
        self.strip = self.strip_keep_length | {"content-length"}

    def is_trusted(self, peer: str | None) -> bool:
        if not peer or not self.trusted:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self.trusted)

    def upstream_headers(
        self,
        request: web.Request,
        endpoint: EndpointState,
        preserve_host: bool,
        keep_length: bool = False,
    ) -> list[tuple[str, str]]:
        """The request headers for the upstream, Host included; Content-Length only when
        ``keep_length`` (a streamed body of known size), else the client sets its own."""
        incoming = request.headers
        drop = self.strip if not keep_length else self.strip_keep_length
        connection = incoming.get("Connection")
        if connection:
            drop = drop | {t.strip().lower() for t in connection.split(",")}
        if incoming.get("Content-Encoding", "").strip().lower() in INFLATED:
            # The listener hands over the body inflated: what goes upstream is plain bytes, of
            # a length nobody knows before the end.
            drop = drop | {"content-encoding", "content-length"}
        items = [(k, v) for k, v in incoming.items() if k.lower() not in drop]
        peer = request.remote or ""
        trusted = bool(self.trusted) and self.is_trusted(peer)
        scheme = request.scheme
        host = incoming.get("Host", "")
        node = f'"[{peer}]"' if ":" in peer else peer
        element = (
            f'for={node};proto={scheme};host="{host}"' if host else f"for={node};proto={scheme}"
        )
        if trusted:
            prior_xff = ", ".join(incoming.getall("X-Forwarded-For", ()))
            prior = ", ".join(incoming.getall("Forwarded", ()))
            items += [
                ("X-Forwarded-For", f"{prior_xff}, {peer}" if prior_xff else peer),
                ("X-Forwarded-Proto", incoming.get("X-Forwarded-Proto", scheme)),
                ("X-Forwarded-Host", incoming.get("X-Forwarded-Host", host)),
                ("Forwarded", f"{prior}, {element}" if prior else element),
            ]
        else:
            items += [
                ("X-Forwarded-For", peer),
                ("X-Forwarded-Proto", scheme),
                ("X-Forwarded-Host", host),
                ("Forwarded", element),
            ]
        identity = request.get(IDENTITY)
        if identity is not None:
            for claim, header in self.claims:
                # Roles and scopes as verification read them (nested or space-separated).
                if claim == self.roles_claim:
                    value: Any = identity.roles
                elif claim == self.scopes_claim:
                    value = identity.scopes
                else:
                    value = claim_value(identity.claims, claim)
                if value is not None:
                    items.append((header, _header_value(value)))
        items.append(("X-Request-ID", request[REQUEST_ID]))
        items.append(("traceparent", traceparent(incoming.get("traceparent"))))
        items.append(("Host", host if preserve_host and host else endpoint.authority))
        return items


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _header_value(value: object) -> str:
    """A claim as a header value: lists comma-joined; control characters (which could
    smuggle headers, and which HTTP forbids in values) become spaces."""
    if isinstance(value, list | tuple):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if not text.isascii():
        # A lone surrogate (JSON allows "\ud800") has no UTF-8 form: it becomes U+FFFD.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return _CONTROL.sub(" ", text)


def require_utf8(headers: Iterable[tuple[str, str]]) -> None:
    """A 400 problem for a header value that is not UTF-8 text (bytes aiohttp kept as
    surrogate escapes): aiohttp's client, which carries streamed bodies, TLS and WebSocket
    upgrades, would send it empty without a word. The plain-HTTP path sends the bytes."""
    for name, value in headers:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise HTTPProblem(
                    400,
                    "bad-header",
                    f"the {name} header is not UTF-8 text and cannot be passed on here",
                ) from None


def response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    drop = HOP_BY_HOP
    connection = upstream.get("Connection")
    if connection:
        drop = drop | {t.strip().lower() for t in connection.split(",")}
    return CIMultiDict([(k, v) for k, v in upstream.items() if k.lower() not in drop])
