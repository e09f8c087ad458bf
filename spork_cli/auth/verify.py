"""Token verification: signature, claims, identity, and a per-process cache of verified tokens.

pyjwt checks the structure and the signature (with ``algorithms`` pinned to the one `alg` the
key set approved); the time and audience claims are checked here, against an injectable clock,
so each failure gets its own code and `spork token verify` can run the checks one by one.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from spork_cli.auth import KeyLoadError, TokenRejected, UnknownKeyId
from spork_cli.auth.claims import claim_value
from spork_cli.auth.jwks import JwksCache
from spork_cli.auth.keys import KeySet, VerificationKey, show
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

Mode = Literal["any", "all"]
RevokedCheck = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for. Shared between requests through the cache: read-only."""

    sub: str | None
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    claims: Mapping[str, Any]
    jti: str | None
    exp: float | None


def missing(required: Sequence[str], held: Iterable[str], mode: Mode) -> list[str]:
    """What of ``required`` is missing from ``held``: [] when satisfied.

    With ``any``, one held value suffices, and when none is held all of ``required`` is missing.
    """
    have = set(held)
    if mode == "any":
        return [] if not required or have.intersection(required) else list(required)
    return [value for value in required if value not in have]


# -- claims -----------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """``"45s"``, ``"3m 20s"``, ``"14m"``, ``"1h 59m"``, ``"2h"``, ``"3d"``: at most two units."""
    total = round(abs(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for i, (name, size) in enumerate(units):
        if total >= size or size == 1:
            major, rest = divmod(total, size)
            # Past ten of a unit the next one is noise ("14m", not "14m 3s").
            if major >= 10 or size == 1:
                return f"{major}{name}"
            minor_name, minor_size = units[i + 1]
            minor = rest // minor_size
            return f"{major}{name} {minor}{minor_name}" if minor else f"{major}{name}"
    raise AssertionError("unreachable")


def time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim as seconds; None when absent; `malformed` when not a finite number."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(f"{name} is not a number of seconds", "malformed")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise TokenRejected(f"{name} is not a finite number", "malformed")
    return seconds


def check_exp(claims: Mapping[str, Any], auth: Auth, now: float) -> str:
    exp = time_claim(claims, "exp")
    if exp is None:
        if auth.require_exp:
            raise TokenRejected("the token has no exp", "missing_claim")
        return "no exp, and auth.require_exp is off"
    if exp <= now - auth.leeway:
        raise TokenRejected(f"the token expired {human_duration(now - exp)} ago", "expired")
    if exp <= now:
        return f"expired {human_duration(now - exp)} ago, within the leeway"
    return f"expires in {human_duration(exp - now)}"


def check_nbf(claims: Mapping[str, Any], auth: Auth, now: float) -> str:
    nbf = time_claim(claims, "nbf")
    if nbf is None:
        return "no nbf"
    if nbf > now + auth.leeway:
        raise TokenRejected(
            f"the token is not valid for another {human_duration(nbf - now)}", "not_yet_valid"
        )
    if nbf > now:
        return f"valid in {human_duration(nbf - now)}, within the leeway"
    return f"valid since {human_duration(now - nbf)} ago"


def check_iat(claims: Mapping[str, Any], auth: Auth, now: float) -> str:
    iat = time_claim(claims, "iat")
    if iat is None:
        return "no iat"
    if iat > now + auth.leeway:
        raise TokenRejected(
            f"the token was issued {human_duration(iat - now)} in the future", "not_yet_valid"
        )
    if iat > now:
        return f"issued {human_duration(iat - now)} in the future, within the leeway"
    return f"issued {human_duration(now - iat)} ago"


def check_iss(claims: Mapping[str, Any], auth: Auth, now: float) -> str:
    iss = claims.get("iss")
    if auth.issuer is None:
        return "any issuer is accepted (auth.issuer is not set)"
    if iss is None:
        raise TokenRejected(f"the token has no iss; expected {auth.issuer!r}", "missing_claim")
    if iss != auth.issuer:
        raise TokenRejected(
            f"issuer {show(iss)} is not the expected {auth.issuer!r}", "wrong_issuer"
        )
    return f"issuer {auth.issuer!r}"


def check_aud(claims: Mapping[str, Any], auth: Auth, now: float) -> str:
    aud = claims.get("aud")
    if aud is None or aud == [] or aud == "":
        if auth.audience:
            raise TokenRejected(
                f"the token has no aud; expected one of {', '.join(map(repr, auth.audience))}",
                "missing_claim",
            )
        return "no aud"
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TokenRejected("aud is neither a string nor a list of strings", "malformed")
    if not auth.audience:
        # RFC 7519 §4.1.3: a recipient not named in a present aud must reject the token.
        raise TokenRejected(
            "the token names an audience, but auth.audience is not set", "wrong_audience"
        )
    match = next((v for v in values if v in auth.audience), None)
    if match is None:
        raise TokenRejected(f"audience {show(aud)} is not accepted", "wrong_audience")
    return f"audience {match!r}"


ClaimCheck = Callable[[Mapping[str, Any], Auth, float], str]
CLAIM_CHECKS: tuple[tuple[str, ClaimCheck], ...] = (
    ("exp", check_exp),
    ("nbf", check_nbf),
    ("iat", check_iat),
    ("iss", check_iss),
    ("aud", check_aud),
)


def check_claims(claims: Mapping[str, Any], auth: Auth, now: float) -> None:
    """Every claim check in order; the first failure raises TokenRejected."""
    for _, check in CLAIM_CHECKS:
        check(claims, auth, now)


_claim = claim_value


def _words(value: Any, separators: str) -> tuple[str, ...]:
    # Values of other types grant nothing rather than rejecting the token: a route that needs
    # no roles still works, and one that does answers 403.
    if isinstance(value, str):
        for sep in separators:
            value = value.replace(sep, " ")
        return tuple(value.split())
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str) and v)
    return ()


def identity_of(claims: Mapping[str, Any], auth: Auth) -> Identity:
    """The Identity of (verified) claims."""
    scopes = _claim(claims, auth.scopes_claim)
    if scopes is None:
        scopes = claims.get("scp")
    sub = claims.get("sub")
    jti = claims.get("jti")
    return Identity(
        sub=sub if isinstance(sub, str) else None,
        roles=_words(_claim(claims, auth.roles_claim), ","),
        scopes=_words(scopes, ""),
        claims=MappingProxyType(dict(claims)),
        jti=jti if isinstance(jti, str) else None,
        exp=time_claim(claims, "exp"),
    )


# -- tokens -----------------------------------------------------------------------------------


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


@dataclass(slots=True)
class _Entry:
    identity: Identity
    until: float


class TokenCache:
    """A bounded LRU of verified tokens. An entry is never served at or past its token's exp,
    nor past ``max_age`` (so a key dropped from a JWKS stops verifying within that time).
    """

    def __init__(self, size: int, max_age: float = 300.0) -> None:
        self.size = size
        self.max_age = max_age
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> Identity | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if now >= entry.until:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return entry.identity

    def put(self, token: str, identity: Identity, now: float) -> None:
        if self.size <= 0:
            return
        until = now + self.max_age
        if identity.exp is not None:
            until = min(until, identity.exp)
        self._entries[token] = _Entry(identity, until)
        self._entries.move_to_end(token)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, jti: str) -> int:
        """Drop every entry of the token with this jti; how many there were."""
        # A scan, not an index: revocations are rare and the cache is bounded.
        doomed = [token for token, e in self._entries.items() if e.identity.jti == jti]
        for token in doomed:
            del self._entries[token]
        return len(doomed)

    def clear(self) -> None:
        self._entries.clear()


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
            self.cache.put(token, identity, now)
            return identity
        await self._check_revoked(identity)
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
