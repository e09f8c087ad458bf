"""Headers on the way through: hop-by-hop removal, X-Forwarded-* and Forwarded (trusting
only configured proxies), request ids and trace context, and verified claims sent upstream
(never taken from a client, in any spelling).

Before routing, ``Forwarding.screen`` refuses what an upstream could read another way than the
gateway does: a ``Host`` that is not an RFC 3986 host (RFC 9112 section 3.2), more than one
``Authorization``, and ``TRACE`` unless ``server.allow_trace``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from spork_cli.auth.claims import Identity, claim_value
from spork_cli.gateway.keys import IDENTITY, REQUEST_ID
from spork_cli.middleware.request_id import traceparent
from spork_cli.problems import HTTPProblem

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


# Headers some upstream frameworks or apps act on (the client's address, a path prefix, the
# URL or the method to use instead of the real ones): only a trusted proxy may send them.
PROXY_ONLY = frozenset(
    h.lower()
    for h in (
        "X-Real-IP",
        "X-Client-IP",
        "True-Client-IP",
        "X-Forwarded-Prefix",
        "X-Forwarded-Port",
        "X-Forwarded-Server",
        "X-Original-URL",
        "X-Rewrite-URL",
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
        # the scheme, as Rack, Django and others read it
        "X-Forwarded-Ssl",
        "X-Forwarded-Scheme",
        "X-Forwarded-Protocol",
        "X-Url-Scheme",
        "Front-End-Https",
        # the client's address or the original target, under other names
        "X-Cluster-Client-IP",
        "Client-IP",
        "X-Forwarded",
        "Forwarded-For",
        "X-Host",
        "X-Forwarded-Uri",
        "X-Envoy-Original-Path",
        "X-Script-Name",
    )
)
# Never forwarded from anyone: CGI servers turn `Proxy` into HTTP_PROXY, which HTTP clients in
# the upstream take for their proxy setting (httpoxy).
NEVER = frozenset(("proxy",))
# Every method but TRACE: the Allow of a 405 for TRACE on a route that takes any method.
ALLOW_BUT_TRACE = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"


class Forwarding:
    """How headers are rewritten on the way; built once per table."""

    def __init__(
        self,
        trusted_proxies: Iterable[str],
        claims: Mapping[str, str],
        roles_claim: str = "roles",
        scopes_claim: str = "scope",
        *,
        underscores: bool = False,
        trace: bool = False,
    ) -> None:
        self.roles_claim = roles_claim
        self.scopes_claim = scopes_claim
        self.trusted = [ipaddress.ip_network(c, strict=False) for c in trusted_proxies]
        # claim -> header: sent upstream for verified tokens, never taken from a client
        self.claims = tuple(claims.items())
        self.underscores = underscores
        self.trace = trace
        identity = frozenset(h.lower() for h in claims.values())
        self.strip_keep_length = (
            identity | HOP_BY_HOP | FORWARDING_HEADERS | NEVER | {"host", "expect"}
        )
        self.strip = self.strip_keep_length | {"content-length"}
        # From a client that is not a trusted proxy, the proxy-only headers go too.
        self.strip_untrusted = self.strip | PROXY_ONLY
        self.strip_keep_length_untrusted = self.strip_keep_length | PROXY_ONLY
        # With underscores allowed, a name that CGI-style servers (WSGI, Rack, PHP) read as one
        # of these still goes: they turn `X_User_Id` and `X-User-Id` into the same variable.
        self.reserved = self.strip_untrusted | {"content-type"}

    def is_trusted(self, peer: str | None) -> bool:
        if not peer or not self.trusted:
            return False
        address = parse_address(peer)
        return address is not None and self.trusts(address)

    def trusts(self, address: Address) -> bool:
        return any(address in net for net in self.trusted)

    def chain(self, incoming: CIMultiDictProxy[str]) -> list[Address]:
        """The hops a trusted peer's forwarding headers vouch for, the client first: read right
        to left (X-Forwarded-For, or ``Forwarded: for=`` when no X-Forwarded-For came), each
        trusted proxy naming the one before it, up to and including the first hop that is not
        a trusted proxy (the client). Call it only for a trusted peer."""
        sent = incoming.getall("X-Forwarded-For", ())
        hops: list[str | None] = (
            [h.strip() for v in sent for h in v.split(",")]
            if sent
            else forwarded_for(incoming.getall("Forwarded", ()))
        )
        kept: list[Address] = []
        for hop in reversed(hops):
            address = parse_address(hop) if hop else None
            if address is None:
                break
            kept.append(address)
            if not self.trusts(address):
                break
        kept.reverse()
        return kept

    def screen(self, request: web.Request, routed: bool) -> None:
        """Refuse, before any route sees it, a request that the gateway and an upstream could
        read two ways: a 400 problem for a bad or missing ``Host`` or a second
        ``Authorization``, a 405 for ``TRACE`` on a route (``routed``) unless allowed.

        A second ``Host``, or none on HTTP/1.1, never gets here: aiohttp's parser refuses
        those (400)."""
        headers = request.headers
        host = headers.get("Host")
        if host is not None and not valid_host(host):
            raise HTTPProblem(400, "bad-host", "the Host header is not a valid host[:port]")
        if len(headers.getall("Authorization", ())) > 1:
            raise HTTPProblem(
                400, "bad-authorization", "the request has more than one Authorization header"
            )
        if routed and not self.trace and request.method == "TRACE":
            raise HTTPProblem(
                405,
                "method-not-allowed",
                "TRACE is not allowed here (server.allow_trace)",
                headers={"Allow": ALLOW_BUT_TRACE},
            )

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
        peer = request.remote or ""
        trusted = bool(self.trusted) and self.is_trusted(peer)
        if trusted:
            drop = self.strip if not keep_length else self.strip_keep_length
        else:
            drop = self.strip_untrusted if not keep_length else self.strip_keep_length_untrusted
        connection = incoming.get("Connection")
        if connection:
            drop = drop | {t.strip().lower() for t in connection.split(",")}
        underscores = self.underscores
        reserved = self.reserved
        items = [
            (k, v)
            for k, v in incoming.items()
            if (name := k.lower()) not in drop
            # nginx's `underscores_in_headers off`: such names go, unless allowed
            and ("_" not in name or (underscores and name.replace("_", "-") not in reserved))
        ]
        scheme = request.scheme
        host = incoming.get("Host", "")
        node = _for_node(peer) if peer else "unknown"
        # RFC 7239 section 4: a value that is not a token is a quoted-string, `"` and `\`
        # escaped. screen() refuses such a Host anyway; this keeps it one parameter regardless.
        element = (
            f"for={node};proto={scheme};host={quoted(host)}"
            if host
            else f"for={node};proto={scheme}"
        )
        if trusted:
            # Both chains are rebuilt from the hops the trusted proxies vouch for (the client
            # and the proxies after it); what a client wrote before its own hop, or a
            # malformed element, goes no further.
            hops = self.chain(incoming)
            prior_xff = ", ".join(str(hop) for hop in hops)
            prior = ", ".join(f"for={_for_node(str(hop))}" for hop in hops)
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
            items += self.claim_headers(identity)
        items.append(("X-Request-ID", request[REQUEST_ID]))
        items.append(("traceparent", traceparent(incoming.get("traceparent"))))
        items.append(("Host", host if preserve_host and host else endpoint.authority))
        return items

    def claim_headers(self, identity: Identity) -> list[tuple[str, str]]:
        """The identity headers (``auth.forward_claims``) a verified token sends upstream:
        what the upstream's answer may depend on besides the path."""
        headers = []
        for claim, header in self.claims:
            # Roles and scopes as verification read them (nested or space-separated).
            if claim == self.roles_claim:
                value: Any = identity.roles
            elif claim == self.scopes_claim:
                value = identity.scopes
            else:
                value = claim_value(identity.claims, claim)
            if value is not None:
                headers.append((header, _header_value(value)))
        return headers


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> Address | None:
    """The address ``text`` names, an IPv4-mapped IPv6 one (``::ffff:1.2.3.4``, as a
    dual-stack socket reports IPv4 peers) as the IPv4 address it is; None when not one."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# One parameter of a Forwarded element (RFC 7239 section 4): a token, `=`, a token or a
# quoted-string; then `;` (next parameter), `,` (next element) or the end.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_FORWARDED_PAIR = re.compile(
    rf"[ \t]*({_TOKEN}+)=(" r'"(?:[^"\\]|\\.)*"' rf"|{_TOKEN}*)[ \t]*([;,]|$)"
)
_ESCAPE = re.compile(r"\\(.)")


def forwarded_for(values: Iterable[str]) -> list[str | None]:
    """The node of each element of ``Forwarded`` field values, in order: its address as text
    (quotes, brackets and port removed), or None for an element without one (no ``for=``,
    ``unknown``, an obfuscated ``_name``). A field value that does not parse stands as one None,
    in its place: the elements after it, which proxies nearer the gateway appended, still
    count, and the walk from the right stops at it."""
    nodes: list[str | None] = []
    for value in values:
        line: list[str | None] = []
        pos, end, node = 0, len(value), None
        while pos < end:
            match = _FORWARDED_PAIR.match(value, pos)
            if match is None:
                line = [None]
                break
            name, raw, sep = match.groups()
            if name.lower() == "for":
                node = _node(_ESCAPE.sub(r"\1", raw[1:-1]) if raw[:1] == '"' else raw)
            if sep != ";":
                line.append(node)
                node = None
            pos = match.end()
        nodes.extend(line)
    return nodes


def _for_node(address: str) -> str:
    """An address as a ``for=`` value: IPv6 bracketed and quoted (RFC 7239 section 6)."""
    return f'"[{address}]"' if ":" in address else address


def _node(text: str) -> str | None:
    """The address of a `for=` node: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]``, ``[::1]:80``."""
    if text[:1] == "[":
        text = text[1 : text.find("]")]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    return text if parse_address(text) is not None else None


# RFC 3986 section 3.2.2: reg-name (which covers IPv4address) or IP-literal, then an optional
# port. Percent-encodings and IPv6 addresses are checked further in valid_host().
_HOST = re.compile(
    r"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*"
    r"|\[(?P<v6>[0-9A-Fa-f:.]+)\]"
    r"|\[[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\])"
    r"(?::[0-9]*)?"
)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@lru_cache(maxsize=512)
def valid_host(host: str) -> bool:
    """Whether ``host`` is a Host field value RFC 9112 section 3.2 allows: ``uri-host [":"
    port]``, empty included (a target without an authority)."""
    match = _HOST.fullmatch(host)
    if match is None:
        return False
    if "%" in host and _BAD_PERCENT.search(host) is not None:
        return False
    v6 = match.group("v6")
    if v6 is not None:
        try:
            ipaddress.IPv6Address(v6)
        except ValueError:
            return False
    return True


_QUOTED = re.compile(r'(["\\])')


def quoted(value: str) -> str:
    """An RFC 9110 quoted-string (section 5.6.4) of ``value``: `"` and backslash escaped."""
    if '"' not in value and "\\" not in value:
        return '"' + value + '"'  # the common case, on every request: nothing to escape
    return '"' + _QUOTED.sub(r"\\\1", value) + '"'


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
