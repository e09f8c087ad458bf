"""JWT auth: verification keys, token verification, minting, inspection and key generation.

    keys.py      KeySet: the configured keys, algorithm pinning, key-type matching, kid lookup
    jwks.py      JwksCache: a JWKS URL fetched with aiohttp, cached, refetched, never blocking
    verify.py    Verifier.verify(token) -> Identity, claim checks, the verified-token LRU
    mint.py      sign tokens the configured gateway accepts
    explain.py   decode without verifying; run every check separately for `spork token verify`
    keygen.py    write fresh keys and the gateway.toml lines that use them

The errors live here, so code that only catches them (the middleware, the CLI) imports
neither pyjwt nor cryptography:

    SporkError
     ├── ConfigError
     │    └── KeyLoadError        a secret, PEM or JWKS file cannot be used; names the file
     └── TokenRejected            a token failed a check: ``code`` and a short ``reason``
          └── UnknownKeyId        no key has the token's ``kid`` (a JWKS refetch may help)
"""

from __future__ import annotations

from typing import Literal

from spork_cli.errors import ConfigError, SporkError

RejectCode = Literal[
    "missing",
    "malformed",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "alg_not_allowed",
    "unknown_kid",
    "missing_claim",
    "revoked",
    "jwks_unavailable",
]


class KeyLoadError(ConfigError):
    """A configured key could not be loaded; the message is one line naming the file."""


class TokenRejected(SporkError):
    """A token was refused. ``reason`` is safe to show a client: it never holds key material."""

    exit_code = 1

    def __init__(self, reason: str, code: RejectCode) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code: RejectCode = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.code!r})"


class UnknownKeyId(TokenRejected):
    """No configured key matches the token's ``kid`` (or, without a kid, its ``alg``)."""

    def __init__(self, kid: str | None, reason: str) -> None:
        super().__init__(reason, "unknown_kid")
        self.kid = kid


__all__ = ["KeyLoadError", "RejectCode", "TokenRejected", "UnknownKeyId"]
