"""Fresh signing keys on disk, and the gateway.toml lines that use them.

Private keys and secrets are created with mode 0600 from the first byte (never written and then
narrowed), public keys 0644. Existing files are not replaced unless asked.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from spork_cli.auth.algorithms import ALGORITHMS, RSA_MIN_BITS, family_of
from spork_cli.errors import UsageError

SECRET_BYTES = 64
SECRET_ENV = "SPORK_JWT_SECRET"
_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}


@dataclass(frozen=True)
class GeneratedKeys:
    """What keygen wrote. ``secret`` is set for HS* only (also written to ``secret_file``)."""

    alg: str
    files: tuple[Path, ...]
    config_lines: tuple[str, ...]
    private_key: Path | None = None
    public_key: Path | None = None
    secret_file: Path | None = None
    secret: str | None = field(default=None, repr=False)


def keygen(
    alg: str,
    directory: Path,
    *,
    config_dir: Path | None = None,
    rsa_bits: int = RSA_MIN_BITS,
    overwrite: bool = False,
) -> GeneratedKeys:
    """Write a key for ``alg`` into ``directory`` (created when missing).

    HS*: a 64-byte random secret (url-safe text) in ``<alg>.secret``; the config reads it from
    ``$SPORK_JWT_SECRET``. Others: ``<alg>-private.pem`` (PKCS#8) and ``<alg>-public.pem``.
    Paths in ``config_lines`` are relative to ``config_dir`` when given. Raises UsageError for
    an unknown algorithm, a weak RSA size, or a file that exists without ``overwrite``.
    """
    if alg not in ALGORITHMS:
        raise UsageError(f"unknown algorithm {alg!r}; one of {', '.join(sorted(ALGORITHMS))}")
    if family_of(alg) == "RSA" and rsa_bits < RSA_MIN_BITS:
        raise UsageError(f"RSA keys need at least {RSA_MIN_BITS} bits, not {rsa_bits}")
    stem = alg.lower()
    if family_of(alg) == "HMAC":
        path = directory / f"{stem}.secret"
        _refuse_existing([path], overwrite)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        directory.mkdir(parents=True, exist_ok=True)
        _write(path, (secret + "\n").encode(), 0o600, overwrite)
        lines = (
            "[auth]",
            f"algorithms = [{json.dumps(alg)}]",
            f'secret = "${{{SECRET_ENV}}}"',
            f'# export {SECRET_ENV}="$(cat {_shown(path, config_dir)})"',
        )
        return GeneratedKeys(alg, (path,), lines, secret_file=path, secret=secret)

    private_path = directory / f"{stem}-private.pem"
    public_path = directory / f"{stem}-public.pem"
    _refuse_existing([private_path, public_path], overwrite)
    key = _generate(alg, rsa_bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    directory.mkdir(parents=True, exist_ok=True)
    _write(private_path, private_pem, 0o600, overwrite)
    _write(public_path, public_pem, 0o644, overwrite)
    lines = (
        "[auth]",
        f"algorithms = [{json.dumps(alg)}]",
        f"public_key_file = {json.dumps(_shown(public_path, config_dir))}",
        f"private_key_file = {json.dumps(_shown(private_path, config_dir))}",
    )
    return GeneratedKeys(
        alg,
        (private_path, public_path),
        lines,
        private_key=private_path,
        public_key=public_path,
    )


def _generate(
    alg: str, rsa_bits: int
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    if family_of(alg) == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if family_of(alg) == "EC":
        return ec.generate_private_key(_CURVES[alg])
    return ed25519.Ed25519PrivateKey.generate()


def _shown(path: Path, config_dir: Path | None) -> str:
    if config_dir is None:
        return path.as_posix()
    return Path(os.path.relpath(path.absolute(), config_dir.absolute())).as_posix()


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    if overwrite:
        return
    for path in paths:
        if path.exists():
            raise UsageError(f"{path} already exists; refusing to replace a key")


def _write(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError as exc:
        raise UsageError(f"{path} already exists; refusing to replace a key") from exc
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "wb") as handle:
        # The umask may have narrowed the mode, and a replaced file keeps its old one.
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
