"""Verification keys from gateway.toml, and the choice of key for a token's header.

`KeySet.keys_for(header)` is where algorithm pinning and key-type matching happen: the token's
`alg` must be configured (`none` never is), and every key verifies only the algorithms of its
own family. HMAC keys come only from `auth.secret` or `oct` JWKs, so an HS* token is never
checked against the bytes of a public key (the classic algorithm-confusion attack).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from spork_cli.auth import KeyLoadError, TokenRejected, UnknownKeyId
from spork_cli.config.model import Auth

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
MAX_KEY_FILE = 1024 * 1024
# Without a kid every key of the family is tried; the cap keeps a flood of kid-less tokens
# from costing one signature check per key in a large JWKS.
MAX_CANDIDATES = 8
_JWK_FAMILY: dict[str, Family] = {"oct": "HMAC", "RSA": "RSA", "EC": "EC", "OKP": "OKP"}


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


class KeySet:
    """The keys a gateway verifies with, and the algorithms it accepts. Immutable."""

    def __init__(
        self,
        keys: Iterable[VerificationKey],
        algorithms: Iterable[str],
        skipped: Iterable[str] = (),
    ) -> None:
        self.keys = tuple(keys)
        self.algorithms = frozenset(algorithms)
        # Why keys of a fetched JWKS were left out, for the log.
        self.skipped = tuple(skipped)
        self._by_kid: dict[str, VerificationKey] = {}
        for key in self.keys:
            if key.kid is not None:
                self._by_kid.setdefault(key.kid, key)
        self._anonymous = {
            alg: tuple(k for k in self.keys if k.kid is None and alg in k.algorithms)
            for alg in self.algorithms
        }
        self._any = {
            alg: tuple(k for k in self.keys if alg in k.algorithms)[:MAX_CANDIDATES]
            for alg in self.algorithms
        }

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return (
            f"KeySet({len(self.keys)} keys, kids={self.kids}, algorithms={sorted(self.algorithms)})"
        )

    @property
    def kids(self) -> list[str]:
        return list(self._by_kid)

    @classmethod
    def from_config(cls, auth: Auth, base_dir: Path) -> KeySet:
        """The secret, `public_key_file` and `jwks_file` of ``auth`` (a `jwks_url` is JwksCache's).

        Raises KeyLoadError, naming the file, for anything that cannot be used.
        """
        keys: list[VerificationKey] = []
        hmac_algs = [alg for alg in auth.algorithms if alg in HMAC_MIN_BYTES]
        if auth.secret is not None and hmac_algs:
            keys.append(_secret_key(auth.secret.get_secret_value(), hmac_algs))
        if auth.public_key_file is not None:
            keys.append(_pem_key(base_dir, auth.public_key_file, auth.algorithms))
        if auth.jwks_file is not None:
            name = auth.jwks_file
            data = read_key_file(resolve(base_dir, name), "auth.jwks_file", name)
            try:
                document = json.loads(data)
            except (ValueError, RecursionError) as exc:
                raise KeyLoadError(f"auth.jwks_file: {name} is not JSON ({exc})") from exc
            keys += cls.from_jwks(
                document,
                source=f"jwks_file {name}",
                algorithms=auth.algorithms,
                context=f"auth.jwks_file: {name}",
            ).keys
        return cls(keys, auth.algorithms)

    @classmethod
    def from_jwks(
        cls,
        document: Any,
        *,
        source: str,
        algorithms: Iterable[str],
        strict: bool = True,
        context: str | None = None,
    ) -> KeySet:
        """Keys of a JWKS document. Strict (a file): any unusable key is a KeyLoadError.

        Lenient (a URL, whose owner may publish keys spork has no use for): unusable keys are
        skipped and listed in ``skipped``; only a document with no usable key is an error.
        ``source`` labels the keys; errors start with ``context`` (default: ``source``).
        """
        where = context or source
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise KeyLoadError(f"{where}: not a JWKS document (an object with a 'keys' list)")
        keys: list[VerificationKey] = []
        skipped: list[str] = []
        seen: set[str] = set()
        for index, jwk in enumerate(document["keys"]):
            try:
                key = _jwk_key(jwk, source, seen)
            except ValueError as exc:
                label = f"key #{index}"
                if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str):
                    label += f" ({show(jwk['kid'])})"
                if strict:
                    raise KeyLoadError(f"{where}: {label}: {exc}") from exc
                skipped.append(f"{label}: {exc}")
                continue
            if key is not None:
                keys.append(key)
                if key.kid is not None:
                    seen.add(key.kid)
        if not keys:
            raise KeyLoadError(f"{where}: no usable signing key")
        return cls(keys, algorithms, skipped)

    def merged(self, other: KeySet) -> KeySet:
        """These keys, then ``other``'s; the accepted algorithms stay this set's."""
        return KeySet(self.keys + other.keys, self.algorithms)

    def check_algorithm(self, header: Mapping[str, Any]) -> str:
        """The header's `alg` when it is configured; TokenRejected otherwise."""
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise TokenRejected("the token header has no alg", "malformed")
        if alg.lower() == "none":
            raise TokenRejected("unsigned tokens (alg none) are never accepted", "alg_not_allowed")
        if alg not in self.algorithms:
            raise TokenRejected(f"alg {show(alg)} is not accepted", "alg_not_allowed")
        return alg

    def keys_for(self, header: Mapping[str, Any]) -> tuple[VerificationKey, ...]:
        """The keys to try, in order, for a token with this (unverified) header.

        A `kid` names one key, which must be of the `alg`'s family. Keys without a kid (the
        secret, a PEM file) serve any kid. Without a kid, every key of the family is tried.
        Raises TokenRejected (`malformed`, `alg_not_allowed`) or UnknownKeyId.
        """
        alg = self.check_algorithm(header)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("the token's kid is not a string", "malformed")
        if kid is not None:
            named = self._by_kid.get(kid)
            if named is not None:
                if alg not in named.algorithms:
                    raise TokenRejected(
                        f"key {show(kid)} is an {named.family} key and cannot verify {alg}",
                        "alg_not_allowed",
                    )
                return (named,)
        fitting = self._any[alg] if kid is None else self._anonymous[alg]
        if fitting:
            return fitting
        if kid is None:
            raise UnknownKeyId(None, f"no configured key verifies {alg}")
        raise UnknownKeyId(kid, f"no key has kid {show(kid)}")

    def key_for(self, header: Mapping[str, Any]) -> VerificationKey:
        """The first key ``keys_for`` would try."""
        return self.keys_for(header)[0]


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


def _secret_key(secret: str, hmac_algs: Iterable[str]) -> VerificationKey:
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


def _pem_key(base_dir: Path, name: str, configured: Iterable[str]) -> VerificationKey:
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


def _jwk_key(jwk: Any, source: str, seen: set[str]) -> VerificationKey | None:
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
