"""KeySet: loading keys from config, algorithm pinning, key-type matching and kid lookup."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from spork_cli.auth import KeyLoadError, TokenRejected, UnknownKeyId
from spork_cli.auth.keys import KeySet
from spork_cli.errors import ConfigError
from tests.auth.keyring import (
    SECRET,
    auth,
    ec_key,
    jwk,
    private_pem,
    public_pem,
    rsa_key,
    write,
)


def load(tmp_path: Path, **fields: Any) -> KeySet:
    return KeySet.from_config(auth(**fields), tmp_path)


def load_error(tmp_path: Path, **fields: Any) -> str:
    with pytest.raises(KeyLoadError) as info:
        load(tmp_path, **fields)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- loading ----------------------------------------------------------------------------------


def test_secret_public_key_and_jwks_file_load_together(tmp_path: Path) -> None:
    pem = write(tmp_path, "pub.pem", public_pem(rsa_key()))
    jwks = write(tmp_path, "jwks.json", json.dumps({"keys": [jwk(ec_key("ES256"), "ec1")]}))
    keys = load(
        tmp_path,
        algorithms=["HS256", "RS256", "ES256"],
        secret=SECRET,
        public_key_file=pem,
        jwks_file=jwks,
    )
    assert [k.family for k in keys.keys] == ["HMAC", "RSA", "EC"]
    assert keys.kids == ["ec1"]
    assert "SECRET" not in repr(keys) and SECRET not in repr(keys.keys)


def test_paths_are_relative_to_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    write(tmp_path / "keys", "pub.pem", public_pem(rsa_key()))
    keys = load(tmp_path, algorithms=["RS256"], public_key_file="keys/pub.pem")
    assert keys.keys[0].source == "public_key_file keys/pub.pem"


def test_a_certificate_serves_as_a_public_key(tmp_path: Path) -> None:
    key = rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = write(tmp_path, "cert.pem", cert.public_bytes(Encoding.PEM))
    keys = load(tmp_path, algorithms=["RS256"], public_key_file=pem)
    assert keys.keys[0].family == "RSA"


def test_a_missing_key_file_names_the_file(tmp_path: Path) -> None:
    message = load_error(tmp_path, algorithms=["RS256"], public_key_file="nope.pem")
    assert message.startswith("auth.public_key_file: cannot read nope.pem")


def test_key_load_errors_are_config_errors() -> None:
    assert issubclass(KeyLoadError, ConfigError)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not a key", "not a PEM public key"),
        (private_pem(rsa_key()), "holds a private key"),
        (public_pem(rsa_key(1, bits=1024)), "1024 bits; at least 2048"),
        (public_pem(ec.generate_private_key(ec.SECP256K1())), "secp256k1 is not supported"),
    ],
    ids=["garbage", "private", "weak-rsa", "odd-curve"],
)
def test_unusable_public_keys(tmp_path: Path, content: bytes, expected: str) -> None:
    pem = write(tmp_path, "key.pem", content)
    message = load_error(tmp_path, algorithms=["RS256"], public_key_file=pem)
    assert message.startswith("auth.public_key_file: key.pem: ")
    assert expected in message


def test_a_public_key_no_configured_algorithm_can_use(tmp_path: Path) -> None:
    pem = write(tmp_path, "pub.pem", public_pem(rsa_key()))
    message = load_error(tmp_path, algorithms=["ES256"], public_key_file=pem)
    assert "is an RSA key, but auth.algorithms has none of" in message


@pytest.mark.parametrize(
    ("secret", "algorithms", "expected"),
    [
        ("x" * 31, ["HS256"], "31 bytes; HS256 needs at least 32"),
        ("x" * 40, ["HS256", "HS384"], "40 bytes; HS384 needs at least 48"),
        ("x" * 63, ["HS512"], "63 bytes; HS512 needs at least 64"),
        (public_pem(rsa_key()).decode(), ["HS256"], "looks like a PEM or SSH key"),
        ("ssh-rsa " + "A" * 64, ["HS256"], "looks like a PEM or SSH key"),
    ],
)
def test_unusable_secrets(
    tmp_path: Path, secret: str, algorithms: list[str], expected: str
) -> None:
    message = load_error(tmp_path, algorithms=algorithms, secret=secret)
    assert expected in message
    assert secret not in message


def test_a_secret_is_ignored_without_an_hmac_algorithm(tmp_path: Path) -> None:
    pem = write(tmp_path, "pub.pem", public_pem(rsa_key()))
    keys = load(tmp_path, algorithms=["RS256"], secret="short", public_key_file=pem)
    assert [k.family for k in keys.keys] == ["RSA"]


def test_jwks_file_keys_by_kid(tmp_path: Path) -> None:
    document = {"keys": [jwk(rsa_key(0), "a"), jwk(rsa_key(1), "b"), jwk(ec_key("ES384"), "c")]}
    name = write(tmp_path, "jwks.json", json.dumps(document))
    keys = load(tmp_path, algorithms=["RS256", "ES384"], jwks_file=name)
    assert keys.kids == ["a", "b", "c"]
    assert keys.keys[2].algorithms == {"ES384"}
    assert keys.keys[0].source == "jwks_file jwks.json (kid a)"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("{", "is not JSON"),
        ({"keys": "no"}, "not a JWKS document"),
        ({"keys": []}, "no usable signing key"),
        ({"keys": [{"kty": "RSA"}]}, "key #0: Not a public or private key"),
        ({"keys": [{"kty": "oct"}]}, "key #0: missing member 'k'"),
        ({"keys": [{"kty": "XYZ", "kid": "x"}]}, "key #0 ('x'): kty 'XYZ' is not supported"),
        ({"keys": [jwk(rsa_key(), "a"), jwk(rsa_key(1), "a")]}, "the kid appears twice"),
        ({"keys": [jwk(rsa_key(), "a", alg="ES256")]}, "alg 'ES256' does not fit this RSA"),
        ({"keys": [jwk(ec_key("ES256"), "e", crv="P-999")]}, "crv 'P-999' is not supported"),
        ({"keys": [{"kty": "oct", "k": "c2hvcnQ"}]}, "the HMAC key is 5 bytes"),
        ({"keys": [{**jwk(ec_key("ES256"), "p"), "d": "AAAA"}]}, "holds private key material"),
    ],
    ids=[
        "not-json",
        "keys-not-list",
        "empty",
        "rsa-no-n",
        "oct-no-k",
        "kty",
        "dup-kid",
        "alg-mismatch",
        "curve",
        "short-oct",
        "private",
    ],
)
def test_unusable_jwks_files(tmp_path: Path, document: Any, expected: str) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    name = write(tmp_path, "jwks.json", text)
    message = load_error(tmp_path, algorithms=["RS256", "ES256"], jwks_file=name)
    assert message.startswith("auth.jwks_file: jwks.json")
    assert expected in message


def test_encryption_keys_in_a_jwks_are_passed_over(tmp_path: Path) -> None:
    document = {"keys": [jwk(rsa_key(1), "enc", use="enc"), jwk(rsa_key(), "sig", use="sig")]}
    name = write(tmp_path, "jwks.json", json.dumps(document))
    assert load(tmp_path, algorithms=["RS256"], jwks_file=name).kids == ["sig"]


def test_a_lenient_jwks_skips_what_it_cannot_use() -> None:
    document = {"keys": [{"kty": "XYZ", "kid": "odd"}, jwk(rsa_key(), "good")]}
    keys = KeySet.from_jwks(document, source="url", algorithms=["RS256"], strict=False)
    assert keys.kids == ["good"]
    assert keys.skipped == ("key #0 ('odd'): kty 'XYZ' is not supported",)


# -- choosing a key ---------------------------------------------------------------------------


@pytest.fixture
def mixed(tmp_path: Path) -> KeySet:
    """HS256 secret, an RSA PEM key, and a JWKS with an RSA key 'r1' and an EC key 'e1'."""
    pem = write(tmp_path, "pub.pem", public_pem(rsa_key()))
    document = {"keys": [jwk(rsa_key(1), "r1"), jwk(ec_key("ES256"), "e1")]}
    name = write(tmp_path, "jwks.json", json.dumps(document))
    return load(
        tmp_path,
        algorithms=["HS256", "RS256", "ES256"],
        secret=SECRET,
        public_key_file=pem,
        jwks_file=name,
    )


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_never_accepted(mixed: KeySet, alg: str) -> None:
    with pytest.raises(TokenRejected) as info:
        mixed.keys_for({"alg": alg})
    assert info.value.code == "alg_not_allowed"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ({"alg": "RS512"}, "alg_not_allowed"),
        ({"alg": "HS512"}, "alg_not_allowed"),
        ({}, "malformed"),
        ({"alg": ["RS256"]}, "malformed"),
        ({"alg": "RS256", "kid": 5}, "malformed"),
    ],
)
def test_headers_refused_before_any_key_is_chosen(
    mixed: KeySet, header: dict[str, Any], code: str
) -> None:
    with pytest.raises(TokenRejected) as info:
        mixed.keys_for(header)
    assert info.value.code == code


def test_each_key_verifies_only_its_own_family(mixed: KeySet) -> None:
    assert [k.family for k in mixed.keys_for({"alg": "HS256"})] == ["HMAC"]
    assert [k.source for k in mixed.keys_for({"alg": "RS256"})] == [
        "public_key_file pub.pem",
        "jwks_file jwks.json (kid r1)",
    ]
    assert mixed.key_for({"alg": "ES256"}).kid == "e1"


def test_a_kid_picks_its_key_and_the_key_must_fit_the_alg(mixed: KeySet) -> None:
    assert mixed.key_for({"alg": "ES256", "kid": "e1"}).kid == "e1"
    for alg in ("HS256", "RS256"):
        with pytest.raises(TokenRejected) as info:
            mixed.keys_for({"alg": alg, "kid": "e1"})
        assert info.value.code == "alg_not_allowed"
        assert "EC key" in info.value.reason


def test_keys_without_a_kid_serve_any_kid(mixed: KeySet) -> None:
    assert mixed.key_for({"alg": "HS256", "kid": "whatever"}).source == "auth.secret"


def test_an_unknown_kid(tmp_path: Path) -> None:
    name = write(tmp_path, "jwks.json", json.dumps({"keys": [jwk(rsa_key(), "a")]}))
    keys = load(tmp_path, algorithms=["RS256", "ES256"], jwks_file=name)
    with pytest.raises(UnknownKeyId) as info:
        keys.keys_for({"alg": "RS256", "kid": "b"})
    assert (info.value.code, info.value.kid) == ("unknown_kid", "b")
    with pytest.raises(UnknownKeyId) as info:
        keys.keys_for({"alg": "ES256"})
    assert info.value.reason == "no configured key verifies ES256"


def test_merged_sets_keep_the_pinned_algorithms(mixed: KeySet) -> None:
    extra = KeySet.from_jwks(
        {"keys": [jwk(rsa_key(1), "late")]}, source="url", algorithms=["RS256", "RS512"]
    )
    merged = mixed.merged(extra)
    assert merged.key_for({"alg": "RS256", "kid": "late"}).kid == "late"
    with pytest.raises(TokenRejected):
        merged.keys_for({"alg": "RS512", "kid": "late"})


def test_rsa_public_key_objects_are_what_is_stored(mixed: KeySet) -> None:
    key = mixed.key_for({"alg": "RS256", "kid": "r1"}).key
    assert isinstance(key, rsa.RSAPublicKey)
