"""Key material and token helpers shared by the auth tests (not a test module itself).

Keys are generated once per process: RSA generation is the slow part of this suite.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from spork_cli.config.model import Auth

NOW = 1_700_000_000.0
SECRET = "s" * 32 + "e" * 32  # 64 bytes: enough for HS512
OTHER_SECRET = "o" * 64

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}


@functools.cache
def rsa_key(n: int = 0, bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key(alg: str, n: int = 0) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVES[alg])


@functools.cache
def ed_key(n: int = 0) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def private_key(alg: str, n: int = 0) -> PrivateKey:
    """A private key that signs ``alg``; ``n`` picks a different key of the same kind."""
    if alg.startswith(("RS", "PS")):
        return rsa_key(n)
    if alg.startswith("ES"):
        return ec_key(alg, n)
    return ed_key(n)


def private_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write(directory: Path, name: str, data: bytes | str) -> str:
    """Write a file into ``directory``; its name, as gateway.toml would give it."""
    path = directory / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return name


def auth(**fields: Any) -> Auth:
    return Auth.model_validate(fields)


def jwk(key: PrivateKey, kid: str | None = None, **extra: Any) -> dict[str, Any]:
    """The public JWK of ``key``."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        data["kid"] = kid
    data.update(extra)
    return data


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def forge_hmac(header: dict[str, Any], claims: dict[str, Any] | bytes, key: bytes) -> str:
    """An HS256 token MAC'd with any bytes at all (pyjwt refuses PEM keys; an attacker won't).

    ``claims`` as bytes is the raw payload, which need not be JSON.
    """
    payload = b64(claims) if isinstance(claims, bytes) else segment(claims)
    signing_input = f"{segment(header)}.{payload}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def claims(**extra: Any) -> dict[str, Any]:
    """Claims valid at NOW for ten minutes."""
    base: dict[str, Any] = {"sub": "alice", "iat": int(NOW), "nbf": int(NOW)}
    base["exp"] = int(NOW) + 600
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def sign(body: dict[str, Any], alg: str, key: Any, kid: str | None = None) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(body, key, algorithm=alg, headers=headers)


def clock(at: float = NOW) -> Clock:
    return Clock(at)


class Clock:
    """A settable clock, called like time.time."""

    def __init__(self, at: float) -> None:
        self.now = at

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
