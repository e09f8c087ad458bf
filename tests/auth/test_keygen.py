"""keygen: files, their modes, and config lines that really configure a working gateway."""

from __future__ import annotations

import base64
import os
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from spork_cli.auth.keygen import keygen
from spork_cli.auth.mint import mint
from spork_cli.auth.verify import Verifier
from spork_cli.config.model import Auth
from spork_cli.errors import UsageError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def strict_umask() -> Iterator[None]:
    # Modes must be what keygen says whatever the umask: test with one that removes a lot.
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_asymmetric_keys_work_as_written(
    tmp_path: Path, alg: str, strict_umask: None
) -> None:
    result = keygen(alg, tmp_path / "keys", config_dir=tmp_path)
    assert result.private_key == tmp_path / "keys" / f"{alg.lower()}-private.pem"
    assert result.public_key == tmp_path / "keys" / f"{alg.lower()}-public.pem"
    assert result.files == (result.private_key, result.public_key)
    assert mode(result.private_key) == 0o600
    assert mode(result.public_key) == 0o644
    assert result.private_key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert result.public_key.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert result.secret is None
    assert result.config_lines == (
        "[auth]",
        f'algorithms = ["{alg}"]',
        f'public_key_file = "keys/{alg.lower()}-public.pem"',
        f'private_key_file = "keys/{alg.lower()}-private.pem"',
    )
    config = Auth.model_validate(tomllib.loads("\n".join(result.config_lines))["auth"])
    token = mint(config, tmp_path, sub="alice")
    assert (await Verifier(config, tmp_path).verify(token)).sub == "alice"


async def test_hmac_secret(tmp_path: Path, strict_umask: None) -> None:
    result = keygen("HS256", tmp_path, config_dir=tmp_path)
    assert result.files == (tmp_path / "hs256.secret",) and result.secret_file == result.files[0]
    assert mode(result.files[0]) == 0o600
    assert result.secret is not None and result.secret not in repr(result)
    assert result.files[0].read_text() == result.secret + "\n"
    assert len(base64.urlsafe_b64decode(result.secret + "==")) == 64
    assert result.config_lines[:3] == (
        "[auth]",
        'algorithms = ["HS256"]',
        'secret = "${SPORK_JWT_SECRET}"',
    )
    assert result.config_lines[3] == '# export SPORK_JWT_SECRET="$(cat hs256.secret)"'
    data = tomllib.loads("\n".join(result.config_lines))["auth"]
    config = Auth.model_validate({**data, "secret": result.secret, "algorithms": ["HS512"]})
    token = mint(config, tmp_path, sub="alice")
    assert (await Verifier(config, tmp_path).verify(token)).sub == "alice"


def test_paths_without_a_config_dir_are_as_given(tmp_path: Path) -> None:
    result = keygen("ES256", tmp_path)
    assert (
        result.config_lines[2]
        == f'public_key_file = "{(tmp_path / "es256-public.pem").as_posix()}"'
    )


def test_existing_keys_are_not_replaced_unless_asked(tmp_path: Path) -> None:
    first = keygen("EdDSA", tmp_path)
    assert first.private_key is not None
    before = first.private_key.read_bytes()
    with pytest.raises(UsageError, match="already exists; refusing to replace a key"):
        keygen("EdDSA", tmp_path)
    assert first.private_key.read_bytes() == before
    first.private_key.chmod(0o644)
    second = keygen("EdDSA", tmp_path, overwrite=True)
    assert second.private_key is not None
    assert second.private_key.read_bytes() != before
    assert mode(second.private_key) == 0o600


def test_other_algorithms_of_the_families(tmp_path: Path) -> None:
    assert keygen("ES512", tmp_path).public_key is not None
    assert keygen("HS512", tmp_path).secret is not None


@pytest.mark.parametrize(
    ("alg", "bits", "expected"),
    [("XS256", 2048, "unknown algorithm"), ("RS256", 1024, "at least 2048 bits")],
)
def test_refusals(tmp_path: Path, alg: str, bits: int, expected: str) -> None:
    with pytest.raises(UsageError, match=expected):
        keygen(alg, tmp_path, rsa_bits=bits)
    assert list(tmp_path.iterdir()) == []
