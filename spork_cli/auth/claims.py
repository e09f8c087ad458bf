"""Claims: reading them (nested ones too), checking the time, issuer and audience claims
against an injectable clock, and the identity a verified token stands for."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from spork_cli.auth import TokenRejected
from spork_cli.auth.algorithms import show
from spork_cli.config.model import Auth


def claim_value(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name ("realm_access.roles") reads nested objects (Keycloak
    puts roles there). None when absent."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


Mode = Literal["any", "all"]


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


# Upstream, X-User-Roles and X-User-Scopes are comma-joined lists, read by splitting at commas
# and trimming: a value with a comma, or with spaces around it, would read as other values
# there (and control characters become spaces on the way out).
_AMBIGUOUS = re.compile(r"[,\x00-\x1f\x7f]|^\s|\s$")


def check_grants(claims: Mapping[str, Any], auth: Auth, now: float) -> str:
    """Every role and scope is one value in a comma-separated header; else the token is
    refused (`malformed`) rather than granting upstream what the gateway never checked."""
    for kind, values in (("role", roles_of(claims, auth)), ("scope", scopes_of(claims, auth))):
        for value in values:
            if _AMBIGUOUS.search(value) is not None:
                raise TokenRejected(
                    f"the {kind} {show(value)} has a comma, a control character or "
                    f"surrounding spaces, so upstream it would read as other {kind}s",
                    "malformed",
                )
    return "each role and scope is a single value"


ClaimCheck = Callable[[Mapping[str, Any], Auth, float], str]
CLAIM_CHECKS: tuple[tuple[str, ClaimCheck], ...] = (
    ("exp", check_exp),
    ("nbf", check_nbf),
    ("iat", check_iat),
    ("iss", check_iss),
    ("aud", check_aud),
    ("grants", check_grants),
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


def roles_of(claims: Mapping[str, Any], auth: Auth) -> tuple[str, ...]:
    """A list of roles, or a string of them separated by commas or spaces."""
    return _words(_claim(claims, auth.roles_claim), ",")


def scopes_of(claims: Mapping[str, Any], auth: Auth) -> tuple[str, ...]:
    """A list of scopes, or a string of them separated by spaces (RFC 8693 ``scope``); the
    ``scp`` claim when the configured one is absent."""
    scopes = _claim(claims, auth.scopes_claim)
    if scopes is None:
        scopes = claims.get("scp")
    return _words(scopes, "")


def identity_of(claims: Mapping[str, Any], auth: Auth) -> Identity:
    """The Identity of (verified) claims."""
    sub = claims.get("sub")
    jti = claims.get("jti")
    return Identity(
        sub=sub if isinstance(sub, str) else None,
        roles=roles_of(claims, auth),
        scopes=scopes_of(claims, auth),
        claims=MappingProxyType(dict(claims)),
        jti=jti if isinstance(jti, str) else None,
        exp=time_claim(claims, "exp"),
    )


# -- tokens -----------------------------------------------------------------------------------
