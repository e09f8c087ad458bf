"""Looking inside tokens: decode without verifying, and run every check one by one.

``inspect`` is for reading a token, never for trusting it: anyone can write any claims into an
unsigned payload. ``explain_checks`` reaches the same verdict as ``Verifier.verify`` through the
same functions, but keeps going after a failure so a person sees everything that is wrong.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import jwt

from spork_cli.auth import TokenRejected
from spork_cli.auth.claims import (
    CLAIM_CHECKS,
    Mode,
    human_duration,
    identity_of,
    missing,
    time_claim,
)
from spork_cli.auth.verify import Verifier, parse_header

NOT_VERIFIED = "decoded WITHOUT verifying the signature: anyone could have written these claims"


class Check(NamedTuple):
    """One check: ``ok`` is None when it could not be made (an earlier step failed, or there
    is nothing to check it against)."""

    check: str
    ok: bool | None
    detail: str


def accepted(checks: Sequence[Check]) -> bool:
    """Whether a token with these results is accepted: no check failed."""
    return all(c.ok is not False for c in checks)


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a token, signature unchecked; TokenRejected(`malformed`) when unreadable."""
    parse_header(token)
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
        raise TokenRejected("the token payload is not base64url JSON", "malformed") from exc
    return claims


def describe_time(claim: str, timestamp: float, now: float) -> str:
    """``"expires in 14m"``, ``"expired 3m ago"``, ``"issued 2h ago"``, ``"valid in 5m"``..."""
    delta = timestamp - now
    span = human_duration(delta)
    if claim == "exp":
        return f"expires in {span}" if delta > 0 else f"expired {span} ago"
    if claim == "iat":
        return f"issued {span} ago" if delta <= 0 else f"issued {span} in the future"
    if claim == "nbf":
        return f"valid since {span} ago" if delta <= 0 else f"valid in {span}"
    return f"in {span}" if delta > 0 else f"{span} ago"


def _utc(timestamp: float) -> str | None:
    try:
        moment = datetime.fromtimestamp(timestamp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat().replace("+00:00", "Z")


def inspect(token: str, *, now: float | None = None) -> dict[str, Any]:
    """Header, claims and human times of ``token``, without verification (and saying so)."""
    token = token.strip()
    header = parse_header(token)
    claims = unverified_claims(token)
    moment = time.time() if now is None else now
    times: dict[str, dict[str, Any]] = {}
    for name in ("iat", "nbf", "exp"):
        try:
            value = time_claim(claims, name)
        except TokenRejected as exc:
            times[name] = {"timestamp": claims[name], "utc": None, "human": exc.reason}
            continue
        if value is not None:
            times[name] = {
                "timestamp": claims[name],
                "utc": _utc(value),
                "human": describe_time(name, value, moment),
            }
    return {
        "verified": False,
        "notice": NOT_VERIFIED,
        "header": header,
        "claims": claims,
        "times": times,
    }


async def explain_checks(
    token: str,
    verifier: Verifier,
    *,
    roles: Sequence[str] = (),
    roles_mode: Mode = "any",
    scopes: Sequence[str] = (),
    scopes_mode: Mode = "all",
    revoked: bool | None = None,
) -> list[Check]:
    """Every check of ``token`` in order: format, algorithm, key, signature, exp, nbf, iat,
    iss, aud, grants (each role and scope one value), revoked, roles, scopes.

    Claim checks still run when the signature fails (on the unverified claims, and marked so).
    ``revoked`` is the caller's answer when it asked the state store itself; when None, the
    verifier's revocation check is asked, if it has one.
    """
    token = token.strip()
    if not token:
        return [Check("format", False, "no token")]
    try:
        header = parse_header(token)
        claims: Mapping[str, Any] = unverified_claims(token)
    except TokenRejected as exc:
        return [Check("format", False, exc.reason)]
    checks = [Check("format", True, f"a JWT, header {_header_summary(header)}")]

    signed = False
    try:
        alg = verifier.keys.check_algorithm(header)
    except TokenRejected as exc:
        checks.append(Check("algorithm", False, exc.reason))
        checks.append(Check("key", None, "not looked up: the algorithm is refused"))
        checks.append(Check("signature", None, "not checked: the algorithm is refused"))
    else:
        allowed = ", ".join(sorted(verifier.keys.algorithms))
        checks.append(Check("algorithm", True, f"{alg} is accepted ({allowed})"))
        try:
            candidates = await verifier.keys_for(header)
        except TokenRejected as exc:
            checks.append(Check("key", False, exc.reason))
            checks.append(Check("signature", None, "not checked: no key"))
        else:
            checks.append(Check("key", True, ", ".join(k.source for k in candidates)))
            try:
                key, claims = verifier.verify_signature(token, header, candidates)
            except TokenRejected as exc:
                checks.append(Check("signature", False, exc.reason))
            else:
                signed = True
                checks.append(Check("signature", True, f"verified with {key.source}"))

    now = verifier.clock()
    for name, check in CLAIM_CHECKS:
        try:
            detail, ok = check(claims, verifier.auth, now), True
        except TokenRejected as exc:
            detail, ok = exc.reason, False
        checks.append(Check(name, ok, detail if signed else f"{detail} (unverified)"))

    try:
        identity = identity_of(claims, verifier.auth)
    except TokenRejected as exc:
        checks.append(Check("revoked", None, f"not checked: {exc.reason}"))
        return checks
    if identity.jti is None:
        checks.append(Check("revoked", True, "no jti: this token cannot be revoked"))
    else:
        if revoked is None:
            revoked = await verifier.is_revoked(identity.jti)
        if revoked is None:
            checks.append(Check("revoked", None, "not checked: no revocation store"))
        elif revoked:
            checks.append(Check("revoked", False, f"jti {identity.jti!r} is revoked"))
        else:
            checks.append(Check("revoked", True, f"jti {identity.jti!r} is not revoked"))
    checks.append(_grant_check("roles", roles, identity.roles, roles_mode))
    checks.append(_grant_check("scopes", scopes, identity.scopes, scopes_mode))
    return checks


def _header_summary(header: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in header.items() if k in ("alg", "kid", "typ"))


def _grant_check(name: str, required: Sequence[str], held: Sequence[str], mode: Mode) -> Check:
    has = ", ".join(held) if held else "none"
    if not required:
        return Check(name, True, f"none required (the token has: {has})")
    lacking = missing(required, held, mode)
    if not lacking:
        return Check(name, True, f"{mode} of {', '.join(required)} required; the token has: {has}")
    if mode == "any":
        return Check(name, False, f"needs one of {', '.join(required)}; the token has: {has}")
    return Check(name, False, f"missing {', '.join(lacking)}; the token has: {has}")
