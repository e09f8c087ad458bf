"""Minting: claim defaults from the config, the choice of signing key, and refusals."""

from __future__ import annotations

import re
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from spork_cli.auth import KeyLoadError
from spork_cli.auth.mint import build_claims, mint, parse_claim, sign, signing_key
from spork_cli.errors import ConfigError, UsageError
from tests.auth.keyring import NOW, SECRET, auth, ec_key, private_pem, rsa_key, write


def body(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


def test_claim_defaults_come_from_the_config() -> None:
    config = auth(secret=SECRET, issuer="https://issuer", audience=["api", "web"])
    result = build_claims(config, sub="alice", roles=["admin", "ops"], scopes=["a", "b"], now=NOW)
    jti = result.pop("jti")
    assert isinstance(jti, str) and len(jti) >= 16
    assert result == {
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 900,
        "iss": "https://issuer",
        "aud": "api",
        "sub": "alice",
        "roles": ["admin", "ops"],
        "scope": "a b",
    }


def test_explicit_values_and_extra_claims_win() -> None:
    config = auth(secret=SECRET, issuer="i", audience=["api"], roles_claim="groups")
    result = build_claims(
        config,
        roles=["x"],
        ttl=60,
        issuer="other",
        audience=["a", "b"],
        jti="fixed",
        now=NOW,
        claims={"nbf": 5, "tenant": "t1"},
    )
    assert result["exp"] == int(NOW) + 60
    assert (result["iss"], result["aud"], result["jti"]) == ("other", ["a", "b"], "fixed")
    assert (result["groups"], result["nbf"], result["tenant"]) == (["x"], 5, "t1")


def test_no_ttl_means_no_exp_and_no_config_means_bare_claims() -> None:
    result = build_claims(None, ttl=None, now=NOW, scopes=["s"])
    assert "exp" not in result and "iss" not in result and "aud" not in result
    assert result["scope"] == "s"


def test_nested_roles_claims_are_written_nested() -> None:
    config = auth(secret=SECRET, roles_claim="realm_access.roles")
    assert build_claims(config, roles=["r"])["realm_access"] == {"roles": ["r"]}


def test_each_mint_gets_its_own_jti() -> None:
    config = auth(secret=SECRET)
    assert body(mint(config, Path()))["jti"] != body(mint(config, Path()))["jti"]


def test_kid_goes_in_the_header() -> None:
    token = mint(auth(secret=SECRET), Path(), kid="2024-01")
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "2024-01", "typ": "JWT"}


def test_the_first_configured_algorithm_with_a_key_is_used(tmp_path: Path) -> None:
    key = write(tmp_path, "key.pem", private_pem(ec_key("ES384")))
    config = auth(algorithms=["RS256", "ES384", "HS256"], secret=SECRET, private_key_file=key)
    # RS256 comes first, but the private key is an EC key: it cannot sign RS256.
    assert signing_key(config, tmp_path).alg == "ES384"
    assert signing_key(config, tmp_path, alg="HS256").alg == "HS256"
    config = auth(algorithms=["RS256", "HS384"], secret=SECRET)
    assert signing_key(config, tmp_path).alg == "HS384"


def test_an_explicit_secret_or_key_file_overrides_the_config(tmp_path: Path) -> None:
    config = auth(algorithms=["HS512"], secret=SECRET)
    other = "z" * 64
    assert signing_key(config, tmp_path, secret=other).key == other.encode()
    assert signing_key(config, tmp_path, secret=other).alg == "HS512"
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(private_pem(rsa_key()))
    key = signing_key(config, tmp_path, key_file=pem, alg="PS256")
    assert (key.alg, key.source) == ("PS256", str(pem))
    assert signing_key(None, tmp_path, key_file=pem).alg == "RS256"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"secret": "short" * 6}, "30 bytes; HS256 needs at least 32"),
        ({"secret": "x" * 40, "alg": "HS512"}, "40 bytes; HS512 needs at least 64"),
        ({"secret": SECRET, "alg": "RS256"}, "a secret signs HS256, HS384 or HS512"),
        ({"alg": "XS999"}, "unknown algorithm 'XS999'"),
        ({}, "no signing key"),
    ],
)
def test_refusals(tmp_path: Path, kwargs: dict[str, str], expected: str) -> None:
    with pytest.raises(UsageError, match=expected):
        signing_key(None, tmp_path, **kwargs)  # type: ignore[arg-type]


def test_a_secret_that_is_a_pem_is_refused(tmp_path: Path) -> None:
    pem = private_pem(rsa_key()).decode()
    with pytest.raises(UsageError, match="looks like a PEM"):
        signing_key(None, tmp_path, secret=pem)


def test_a_key_that_cannot_sign_the_alg(tmp_path: Path) -> None:
    pem = tmp_path / "ec.pem"
    pem.write_bytes(private_pem(ec_key("ES256")))
    with pytest.raises(UsageError, match="cannot sign RS256; it signs ES256"):
        signing_key(None, tmp_path, key_file=pem, alg="RS256")


def test_key_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError) as info:
        signing_key(None, tmp_path, key_file=tmp_path / "missing.pem")
    assert "cannot read" in str(info.value) and "missing.pem" in str(info.value)
    assert info.value.exit_code == 2
    config = auth(algorithms=["ES256"], private_key_file="gone.pem")
    with pytest.raises(ConfigError, match=re.escape("auth.private_key_file: cannot read gone.pem")):
        signing_key(config, tmp_path)
    garbage = write(tmp_path, "garbage.pem", b"nope")
    config = auth(algorithms=["ES256"], private_key_file=garbage)
    with pytest.raises(ConfigError, match=re.escape("garbage.pem: not a PEM private key")):
        signing_key(config, tmp_path)


def test_encrypted_private_keys_are_refused(tmp_path: Path) -> None:
    encrypted = ec_key("ES256").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    config = auth(algorithms=["ES256"], private_key_file=write(tmp_path, "k.pem", encrypted))
    with pytest.raises(ConfigError, match="encrypted private keys are not supported"):
        signing_key(config, tmp_path)


def test_a_token_is_a_bare_string(tmp_path: Path) -> None:
    token = mint(auth(secret=SECRET), tmp_path, sub="alice")
    assert token.count(".") == 2 and token == token.strip()
    assert sign({"a": 1}, signing_key(auth(secret=SECRET), tmp_path)).count(".") == 2


@pytest.mark.parametrize(
    ("text", "claim"),
    [
        ("tenant=acme", ("tenant", "acme")),
        ("n=3", ("n", 3)),
        ("admin=true", ("admin", True)),
        ('tags=["a","b"]', ("tags", ["a", "b"])),
        ("eq=a=b", ("eq", "a=b")),
        ("empty=", ("empty", "")),
    ],
)
def test_parse_claim(text: str, claim: tuple[str, object]) -> None:
    assert parse_claim(text) == claim


@pytest.mark.parametrize("text", ["novalue", "=x", " =x"])
def test_parse_claim_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_claim(text)
