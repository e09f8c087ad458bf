"""Header names with a fixed meaning to the gateway, shared by `spork check` and the gateway
(this module imports nothing of spork)."""

from __future__ import annotations

from collections.abc import Iterable

SERVER = "spork"  # the Server header of every answer: never a version, nothing to fingerprint

# Framing and connection headers: the gateway computes them for each hop.
FRAMING = frozenset(
    ("connection", "content-length", "keep-alive", "te", "trailer", "transfer-encoding",
     "upgrade", "proxy-connection")
)  # fmt: skip
# Sent upstream by the gateway on every request, whatever the client sent.
GATEWAY_REQUEST = frozenset(
    ("forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id",
     "traceparent", "host")
)  # fmt: skip
DEFAULT_IDENTITY_HEADERS = {"sub": "X-User-Id", "roles": "X-User-Roles"}


def protected_request(identity_headers: Iterable[str]) -> frozenset[str]:
    """Lower-cased names a route's ``request_headers.set`` may not name: framing, what the
    gateway sends upstream itself, and the identity headers of ``auth.forward_claims``."""
    return FRAMING | GATEWAY_REQUEST | {h.lower() for h in identity_headers}


# What a route's ``response_headers.set`` may not name; ``remove`` may name any header but the
# framing ones.
PROTECTED_RESPONSE = FRAMING | {"x-request-id"}
