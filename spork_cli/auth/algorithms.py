"""JWS algorithms by key family, and the key type each one needs.

Every key verifies only the algorithms of its own family (`algorithms_for`), which is what
keeps an HS* token from being checked against the bytes of a public key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

Family = Literal["HMAC", "RSA", "EC", "OKP"]
PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
Key: TypeAlias = bytes | PublicKey

# RFC 7518 §3.2: an HMAC key at least as long as the hash output.
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
OKP_ALGORITHMS = frozenset({"EdDSA"})
ALGORITHMS = frozenset({*HMAC_MIN_BYTES, *RSA_ALGORITHMS, *EC_CURVES, *OKP_ALGORITHMS})
RSA_MIN_BITS = 2048


def family_of(alg: str) -> Family | None:
    """The key family that can verify ``alg``, or None for an algorithm spork does not know."""
    if alg in HMAC_MIN_BYTES:
        return "HMAC"
    if alg in RSA_ALGORITHMS:
        return "RSA"
    if alg in EC_CURVES:
        return "EC"
    if alg in OKP_ALGORITHMS:
        return "OKP"
    return None


def algorithms_for(key: Key) -> tuple[Family, frozenset[str]]:
    """The family of ``key`` and the algorithms it may verify; ValueError says why none."""
    if isinstance(key, bytes):
        usable = frozenset(alg for alg, size in HMAC_MIN_BYTES.items() if len(key) >= size)
        if not usable:
            raise ValueError(f"the HMAC key is {len(key)} bytes; at least 32 are needed")
        return "HMAC", usable
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < RSA_MIN_BITS:
            raise ValueError(f"the RSA key has {key.key_size} bits; at least 2048 are needed")
        return "RSA", RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        for alg, curve in EC_CURVES.items():
            if key.curve.name == curve:
                return "EC", frozenset({alg})
        raise ValueError(f"the EC curve {key.curve.name} is not supported")
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "OKP", OKP_ALGORITHMS
    raise ValueError(f"{type(key).__name__} keys are not supported")


@dataclass(frozen=True, eq=False)
class VerificationKey:
    """One key, the algorithms it may verify, and where it came from (for messages)."""

    key: Key = field(repr=False)
    family: Family
    algorithms: frozenset[str]
    source: str
    kid: str | None = None


def show(value: object, limit: int = 40) -> str:
    """A token-supplied value fit for a message: quoted, and cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
