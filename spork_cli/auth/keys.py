"""The set of verification keys a gateway holds, and the choice of key for a token's header.

`KeySet.keys_for(header)` is where algorithm pinning and key-type matching happen: the token's
`alg` must be configured (`none` never is), and every key verifies only the algorithms of its
own family. HMAC keys come only from `auth.secret` or `oct` JWKs, so an HS* token is never
checked against the bytes of a public key (the classic algorithm-confusion attack).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from spork_cli.auth import KeyLoadError, TokenRejected, UnknownKeyId
from spork_cli.auth.algorithms import HMAC_MIN_BYTES, VerificationKey, show
from spork_cli.auth.key_files import jwk_key, pem_key, read_key_file, resolve, secret_key
from spork_cli.config.model import Auth

# Without a kid every key of the family is tried; the cap keeps a flood of kid-less tokens
# from costing one signature check per key in a large JWKS.
MAX_CANDIDATES = 8


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
            keys.append(secret_key(auth.secret.get_secret_value(), hmac_algs))
        if auth.public_key_file is not None:
            keys.append(pem_key(base_dir, auth.public_key_file, auth.algorithms))
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
                key = jwk_key(jwk, source, seen)
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
