"""Minting tokens the configured gateway accepts: claims with sensible defaults, then a signature.

``mint(...)`` returns the bare compact token, so ``TOKEN=$(spork token mint --sub alice)``
works; ``build_claims`` and ``sign`` are its two halves for callers that show the claims too.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from spork_cli.auth import KeyLoadError
from spork_cli.auth.algorithms import (
    ALGORITHMS,
    EC_CURVES,
    HMAC_MIN_BYTES,
    RSA_ALGORITHMS,
    RSA_MIN_BITS,
    family_of,
)
from spork_cli.auth.key_files import looks_like_key_file, read_key_file, resolve
from spork_cli.config.model import Auth
from spork_cli.errors import UsageError

PrivateKey: TypeAlias = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
DEFAULT_TTL = 900.0

_ENCODER = jwt.PyJWT(options={"enforce_minimum_key_length": True})


class _ExplicitKeyError(KeyLoadError):
    """A key file named on the command line: a usage problem, not a config one (exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class SigningKey:
    """A key to sign with, the algorithm it signs, and where it came from."""

    alg: str
    key: bytes | PrivateKey = field(repr=False)
    kid: str | None = None
    source: str = ""


def signing_key(
    auth: Auth | None,
    base_dir: Path,
    *,
    alg: str | None = None,
    key_file: Path | None = None,
    secret: str | None = None,
    kid: str | None = None,
) -> SigningKey:
    """The key to sign with: ``secret``, else ``key_file``, else what ``auth`` configures
    (`secret` for HS*, `private_key_file` for the others).

    Without ``alg``, the first configured algorithm the key can sign is used, else the key's
    natural one (RS256, the curve's ES*, EdDSA, HS256). An ``alg`` outside the configured list
    is allowed: a token the gateway refuses is a useful test. Raises UsageError when no key fits.
    """
    if alg is not None and alg not in ALGORITHMS:
        raise UsageError(f"unknown algorithm {alg!r}; one of {', '.join(sorted(ALGORITHMS))}")
    configured: list[str] = list(auth.algorithms) if auth is not None else []
    if secret is not None:
        return _hmac_key(secret.encode(), alg, configured, kid, "--secret")
    if key_file is not None:
        data = read_key_file(key_file, "key file", str(key_file), _ExplicitKeyError)
        return _private_key(data, str(key_file), alg, configured, kid, _ExplicitKeyError)
    if auth is None:
        raise UsageError("no signing key: pass a secret or a key file, or configure [auth]")
    wanted = [alg] if alg is not None else configured
    for name in wanted:
        if family_of(name) == "HMAC" and auth.secret is not None:
            value = auth.secret.get_secret_value().encode()
            return _hmac_key(value, name, configured, kid, "auth.secret")
        if family_of(name) != "HMAC" and auth.private_key_file is not None:
            name = auth.private_key_file
            data = read_key_file(resolve(base_dir, name), "auth.private_key_file", name)
            label = f"auth.private_key_file: {name}"
            return _private_key(data, label, alg, configured, kid, KeyLoadError)
    need = f"{alg} needs" if alg is not None else "minting needs"
    raise UsageError(
        f"no signing key: {need} auth.secret (HS*) or auth.private_key_file (others), "
        "or an explicit secret or key file"
    )


def _hmac_key(
    data: bytes, alg: str | None, configured: Sequence[str], kid: str | None, source: str
) -> SigningKey:
    if alg is None:
        alg = next((a for a in configured if family_of(a) == "HMAC"), "HS256")
    if family_of(alg) != "HMAC":
        raise UsageError(f"a secret signs HS256, HS384 or HS512, not {alg}")
    if looks_like_key_file(data):
        raise UsageError(f"{source} looks like a PEM or SSH key, not an HMAC secret")
    if len(data) < HMAC_MIN_BYTES[alg]:
        raise UsageError(
            f"{source} is {len(data)} bytes; {alg} needs at least {HMAC_MIN_BYTES[alg]}"
        )
    return SigningKey(alg, data, kid, source)


def _private_key(
    data: bytes,
    label: str,
    alg: str | None,
    configured: Sequence[str],
    kid: str | None,
    error: type[KeyLoadError],
) -> SigningKey:
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise error(f"{label}: encrypted private keys are not supported") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise error(f"{label}: not a PEM private key") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < RSA_MIN_BITS:
            raise error(f"{label}: the RSA key has {key.key_size} bits; at least 2048 are needed")
        fits = set(RSA_ALGORITHMS)
        natural = "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        fits = {a for a, curve in EC_CURVES.items() if curve == key.curve.name}
        if not fits:
            raise error(f"{label}: the EC curve {key.curve.name} is not supported")
        natural = next(iter(fits))
    elif isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        fits = {"EdDSA"}
        natural = "EdDSA"
    else:
        raise error(f"{label}: {type(key).__name__} keys are not supported")
    if alg is None:
        alg = next((a for a in configured if a in fits), natural)
    elif alg not in fits:
        raise UsageError(f"{label} cannot sign {alg}; it signs {', '.join(sorted(fits))}")
    return SigningKey(alg, key, kid, label)


def build_claims(
    auth: Auth | None,
    *,
    sub: str | None = None,
    roles: Sequence[str] = (),
    scopes: Sequence[str] = (),
    claims: Mapping[str, Any] | None = None,
    ttl: float | None = DEFAULT_TTL,
    issuer: str | None = None,
    audience: str | Sequence[str] | None = None,
    now: float | None = None,
    jti: str | None = None,
) -> dict[str, Any]:
    """The claims of a new token. Defaults: iat = nbf = now, exp = now + ttl (none when ``ttl``
    is None), a random jti, and iss and aud from ``auth`` (its first audience). Roles and
    scopes go under ``auth.roles_claim`` / ``auth.scopes_claim``; ``claims`` override all.
    """
    issued = int(time.time() if now is None else now)
    result: dict[str, Any] = {"iat": issued, "nbf": issued}
    if ttl is not None:
        result["exp"] = int(issued + ttl)
    result["jti"] = jti if jti is not None else secrets.token_urlsafe(16)
    iss = issuer if issuer is not None else (auth.issuer if auth is not None else None)
    if iss is not None:
        result["iss"] = iss
    if audience is None and auth is not None and auth.audience:
        audience = auth.audience[0]
    if audience is not None:
        result["aud"] = audience if isinstance(audience, str) else list(audience)
    if sub is not None:
        result["sub"] = sub
    if roles:
        _put(result, auth.roles_claim if auth is not None else "roles", list(roles))
    if scopes:
        _put(result, auth.scopes_claim if auth is not None else "scope", " ".join(scopes))
    result.update(claims or {})
    return result


def _put(claims: dict[str, Any], name: str, value: Any) -> None:
    # A dotted claim name ("realm_access.roles") is written nested, as verification reads it.
    *parents, leaf = name.split(".")
    target = claims
    for part in parents:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[leaf] = value


def sign(claims: Mapping[str, Any], key: SigningKey) -> str:
    """The compact JWS of ``claims``, with `kid` in the header when the key has one."""
    headers = {"kid": key.kid} if key.kid is not None else None
    try:
        return _ENCODER.encode(dict(claims), key.key, algorithm=key.alg, headers=headers)
    except (jwt.PyJWTError, TypeError, ValueError) as exc:
        raise UsageError(f"cannot sign with {key.source or key.alg}: {exc}") from exc


def mint(
    auth: Auth | None,
    base_dir: Path,
    *,
    sub: str | None = None,
    roles: Sequence[str] = (),
    scopes: Sequence[str] = (),
    claims: Mapping[str, Any] | None = None,
    ttl: float | None = DEFAULT_TTL,
    issuer: str | None = None,
    audience: str | Sequence[str] | None = None,
    alg: str | None = None,
    kid: str | None = None,
    key_file: Path | None = None,
    secret: str | None = None,
    now: float | None = None,
    jti: str | None = None,
) -> str:
    """A signed token: ``build_claims`` then ``sign`` with ``signing_key``."""
    key = signing_key(auth, base_dir, alg=alg, key_file=key_file, secret=secret, kid=kid)
    body = build_claims(
        auth,
        sub=sub,
        roles=roles,
        scopes=scopes,
        claims=claims,
        ttl=ttl,
        issuer=issuer,
        audience=audience,
        now=now,
        jti=jti,
    )
    return sign(body, key)


def parse_claim(text: str) -> tuple[str, Any]:
    """``"k=v"`` as a claim: v as JSON when it parses (``n=3``, ``admin=true``), else a string."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UsageError(f"a claim is NAME=VALUE, not {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name, value
