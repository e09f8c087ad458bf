"""Token verification: signature, claims, identity, and a per-process cache of verified tokens.

pyjwt checks the structure and the signature (with ``algorithms`` pinned to the one `alg` the
key set approved); the time and audience claims are checked here, against an injectable clock,
so each failure gets its own code and `spork token verify` can run the checks one by one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from spork_cli.auth import KeyLoadError, TokenRejected, UnknownKeyId
from spork_cli.auth.algorithms import VerificationKey, show
from spork_cli.auth.cache import TokenCache
from spork_cli.auth.claims import Identity, check_claims, identity_of
from spork_cli.auth.jwks import JwksCache
from spork_cli.auth.keys import KeySet
from spork_cli.config.model import Auth

# aiohttp refuses header lines over 8 KiB anyway; a longer token is junk or an attack.
MAX_TOKEN_LENGTH = 8192

# Claims are checked below, not by pyjwt, whose clock cannot be injected. Keys too short for
# their algorithm raise instead of warning on every request (KeySet refuses them up front).
_DECODER = jwt.PyJWT(
    options={
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
        "verify_aud": False,
        "verify_iss": False,
        "enforce_minimum_key_length": True,
    }
)

RevokedCheck = Callable[[str], Awaitable[bool]]


def parse_header(token: str) -> dict[str, Any]:
    """The unverified JOSE header of a compact JWS; TokenRejected(`malformed`) otherwise."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenRejected("the token is too long", "malformed")
    if not token.isascii() or token.count(".") != 2:
        raise TokenRejected("not a JWT (header.payload.signature)", "malformed")
    try:
        return jwt.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
        raise TokenRejected("the token header is not base64url JSON", "malformed") from exc


def extract_token(
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    query: Mapping[str, str],
    auth: Auth,
) -> str | None:
    """The token of a request: `Authorization: Bearer`, then ``auth.cookie``, then
    ``auth.query_param``. None when there is none (another scheme, such as Basic, is no token).
    """
    header = headers.get("Authorization") or headers.get("authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        token = value.strip()
        if scheme.lower() == "bearer" and token:
            return token
    if auth.cookie is not None:
        token = cookies.get(auth.cookie, "").strip()
        if token:
            return token
    if auth.query_param is not None:
        token = query.get(auth.query_param, "").strip()
        if token:
            return token
    return None


class Verifier:
    """Verifies tokens against one `[auth]` config. Build one per compiled config.

    ``jwks`` is required when ``auth.jwks_url`` is set; its lifecycle belongs to the caller and
    it may outlive this verifier (a reload that keeps the URL can keep the cache). ``revoked``
    is asked about the jti of every accepted token, cached or not; its errors propagate, so
    the caller applies its own state-store failure policy.
    """

    def __init__(
        self,
        auth: Auth,
        base_dir: Path,
        jwks: JwksCache | None = None,
        *,
        revoked: RevokedCheck | None = None,
        clock: Callable[[], float] = time.time,
        cache_max_age: float = 300.0,
    ) -> None:
        if auth.jwks_url is not None and jwks is None:
            raise ValueError("auth.jwks_url is set: pass a JwksCache")
        self.auth = auth
        self.keys = KeySet.from_config(auth, base_dir)
        if not self.keys and jwks is None:
            raise KeyLoadError(
                "[auth] has no key: set secret, public_key_file, jwks_file or jwks_url"
            )
        self.jwks = jwks
        self.clock = clock
        self._revoked = revoked
        self.cache = TokenCache(auth.cache_size, cache_max_age)
        self._merged: tuple[KeySet | None, KeySet] = (None, self.keys)

    async def verify(self, token: str) -> Identity:
        """The Identity of a valid token; TokenRejected (and only that) for anything else."""
        if not token:
            raise TokenRejected("no token", "missing")
        now = self.clock()
        identity = self.cache.get(token, now)
        if identity is None:
            header = parse_header(token)
            candidates = await self.keys_for(header)
            _, claims = self.verify_signature(token, header, candidates)
            check_claims(claims, self.auth, now)
            identity = identity_of(claims, self.auth)
            await self._check_revoked(identity)
            self.cache.put(token, identity, now, now + self.auth.revocation_cache_ttl)
            return identity
        if not self.cache.checked(token, now):
            await self._check_revoked(identity)
            self.cache.mark_checked(token, now + self.auth.revocation_cache_ttl)
        return identity

    def forget(self, jti: str) -> None:
        """Drop a revoked token from the cache at once."""
        self.cache.forget(jti)

    async def is_revoked(self, jti: str) -> bool | None:
        """Whether the revocation check says so; None without a revocation check."""
        if self._revoked is None:
            return None
        return await self._revoked(jti)

    async def keys_for(self, header: Mapping[str, Any]) -> tuple[VerificationKey, ...]:
        """Keys for this header from the static set and the JWKS; refetches on an unknown kid."""
        jwks = self.jwks
        if jwks is None:
            return self.keys.keys_for(header)
        fetched = jwks.current()
        if fetched is None:
            try:
                # Static keys serve without waiting on a JWKS that has not arrived yet.
                return self.keys.keys_for(header)
            except UnknownKeyId:
                fetched = await jwks.get()
        try:
            return self._with(fetched).keys_for(header)
        except UnknownKeyId:
            refetched = await jwks.refresh_unknown_kid()
            if refetched is None:
                raise
            return self._with(refetched).keys_for(header)

    def verify_signature(
        self, token: str, header: Mapping[str, Any], candidates: Sequence[VerificationKey]
    ) -> tuple[VerificationKey, dict[str, Any]]:
        """The key that verifies ``token`` and its claims; TokenRejected when none does."""
        alg = self.keys.check_algorithm(header)
        for key in candidates:
            # Redundant with KeySet.keys_for, and cheap: the family check is what stops
            # algorithm confusion, so it is made again right where the key is used.
            if alg not in key.algorithms:
                continue
            try:
                return key, _DECODER.decode(token, key.key, algorithms=[alg])
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidKeyError as exc:
                raise TokenRejected("the key cannot verify this token", "bad_signature") from exc
            except jwt.InvalidAlgorithmError as exc:
                raise TokenRejected(f"alg {show(alg)} is not accepted", "alg_not_allowed") from exc
            except (InvalidSubjectError, InvalidJTIError) as exc:
                raise TokenRejected("sub and jti must be strings", "malformed") from exc
            except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
                raise TokenRejected("the token is not a valid JWT", "malformed") from exc
        raise TokenRejected("the signature does not match", "bad_signature")

    def _with(self, fetched: KeySet) -> KeySet:
        # One merge per fetched set, not per request.
        source, merged = self._merged
        if source is not fetched:
            merged = self.keys.merged(fetched)
            self._merged = (fetched, merged)
        return merged

    async def _check_revoked(self, identity: Identity) -> None:
        if identity.jti is None or self._revoked is None:
            return
        if await self._revoked(identity.jti):
            self.cache.forget(identity.jti)
            raise TokenRejected("the token has been revoked", "revoked")
