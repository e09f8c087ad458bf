"""Key material named in gateway.toml: the HMAC secret, a PEM public key or certificate, and
the keys of a JWKS document, each checked before the gateway trusts it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from spork_cli.auth import KeyLoadError
from spork_cli.auth.algorithms import (
    HMAC_MIN_BYTES,
    Family,
    PublicKey,
    VerificationKey,
    algorithms_for,
    show,
)

MAX_KEY_FILE = 1024 * 1024
_JWK_FAMILY: dict[str, Family] = {"oct": "HMAC", "RSA": "RSA", "EC": "EC", "OKP": "OKP"}


def resolve(base_dir: Path, name: str) -> Path:
    """A path from gateway.toml: relative to the config file's directory."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else base_dir / path


def read_key_file(
    path: Path, what: str, name: str, error: type[KeyLoadError] = KeyLoadError
) -> bytes:
    """The bytes of a key file; ``error`` (one line: ``what``, then ``name``) when unreadable."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise error(f"{what}: cannot read {name}: {exc.strerror or exc}") from exc
    if len(data) > MAX_KEY_FILE:
        raise error(f"{what}: {name} is larger than 1 MiB")
    return data


def secret_key(secret: str, hmac_algs: Iterable[str]) -> VerificationKey:
    data = secret.encode()
    if looks_like_key_file(data):
        # A public key pasted as the secret is exactly what algorithm confusion exploits.
        raise KeyLoadError(
            "auth.secret looks like a PEM or SSH key; an HMAC secret must be random bytes"
        )
    for alg in hmac_algs:
        if len(data) < HMAC_MIN_BYTES[alg]:
            raise KeyLoadError(
                f"auth.secret is {len(data)} bytes; {alg} needs at least {HMAC_MIN_BYTES[alg]}"
            )
    family, algs = algorithms_for(data)
    return VerificationKey(data, family, algs, "auth.secret")


def looks_like_key_file(data: bytes) -> bool:
    stripped = data.strip()
    return b"-----BEGIN " in stripped or stripped.startswith((b"ssh-", b"ecdsa-sha2-"))


def pem_key(base_dir: Path, name: str, configured: Iterable[str]) -> VerificationKey:
    data = read_key_file(resolve(base_dir, name), "auth.public_key_file", name)
    try:
        key = parse_public_pem(data)
        family, algs = algorithms_for(key)
    except ValueError as exc:
        raise KeyLoadError(f"auth.public_key_file: {name}: {exc}") from exc
    if not algs & set(configured):
        raise KeyLoadError(
            f"auth.public_key_file: {name} is an {family} key, but auth.algorithms has none of "
            f"{', '.join(sorted(algs))}"
        )
    return VerificationKey(key, family, algs, f"public_key_file {name}")


def parse_public_pem(data: bytes) -> PublicKey:
    """A public key from PEM (a SubjectPublicKeyInfo, PKCS#1 RSA key, or X.509 certificate)."""
    if b"PRIVATE KEY" in data:
        raise ValueError("holds a private key; the gateway needs only the public key")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError("not a PEM public key") from exc
    if isinstance(
        key,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        return key
    raise ValueError(f"{type(key).__name__} keys are not supported")


def jwk_key(jwk: Any, source: str, seen: set[str]) -> VerificationKey | None:
    """One JWK as a VerificationKey; None for an encryption key; ValueError when unusable."""
    if not isinstance(jwk, dict):
        raise ValueError("not a JSON object")
    if jwk.get("use") == "enc":
        return None
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid is not a string")
    if kid is not None and kid in seen:
        raise ValueError("the kid appears twice")
    kty = jwk.get("kty")
    family = _JWK_FAMILY.get(kty) if isinstance(kty, str) else None
    if family is None:
        raise ValueError(f"kty {show(kty)} is not supported")
    if family != "HMAC" and "d" in jwk:
        raise ValueError("holds private key material ('d'); publish only public keys")
    # The algorithm pyjwt builds the key with comes from kty and crv, never from the JWK's own
    # `alg`, which is checked below against the key's real type.
    parse_alg = _jwk_parse_alg(family, jwk.get("crv"))
    try:
        parsed = jwt.PyJWK(jwk, algorithm=parse_alg)
    except KeyError as exc:
        raise ValueError(f"missing member {exc}") from exc
    except (jwt.PyJWTError, TypeError, ValueError) as exc:
        raise ValueError(str(exc).splitlines()[0] if str(exc) else "unusable key") from exc
    key = parsed.key
    if not isinstance(
        key,
        bytes
        | rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        raise ValueError(f"{type(key).__name__} keys are not supported")
    real_family, algs = algorithms_for(key)
    declared = jwk.get("alg")
    if declared is not None:
        if not isinstance(declared, str) or declared not in algs:
            raise ValueError(f"alg {show(declared)} does not fit this {real_family} key")
        algs = frozenset({declared})
    label = f"{source} (kid {kid})" if kid is not None else source
    return VerificationKey(key, real_family, algs, label, kid)


def _jwk_parse_alg(family: Family, crv: Any) -> str:
    if family == "HMAC":
        return "HS256"
    if family == "RSA":
        return "RS256"
    if family == "OKP":
        return "EdDSA"
    curves = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
    if not isinstance(crv, str) or crv not in curves:
        raise ValueError(f"crv {show(crv)} is not supported")
    return curves[crv]
