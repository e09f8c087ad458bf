"""Verifier: every algorithm, wrong keys, tampering, algorithm confusion, claims and identity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from multidict import CIMultiDict

from spork_cli.auth import KeyLoadError, TokenRejected
from spork_cli.auth.claims import Identity, missing
from spork_cli.auth.mint import mint
from spork_cli.auth.verify import Verifier, extract_token
from tests.auth.keyring import (
    NOW,
    OTHER_SECRET,
    SECRET,
    auth,
    claims,
    clock,
    forge_hmac,
    jwk,
    private_key,
    private_pem,
    public_pem,
    rsa_key,
    segment,
    sign,
    write,
)

HMAC = ["HS256", "HS384", "HS512"]
ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
ASYMMETRIC += ["ES256", "ES384", "ES512", "EdDSA"]


def verifier(tmp_path: Path, **fields: Any) -> Verifier:
    return Verifier(auth(**fields), tmp_path, clock=clock())


async def rejected(v: Verifier, token: str) -> TokenRejected:
    with pytest.raises(TokenRejected) as info:
        await v.verify(token)
    return info.value


def setup(tmp_path: Path, alg: str, **fields: Any) -> Verifier:
    """A verifier for ``alg`` whose config can also mint (secret or private_key_file)."""
    if alg in HMAC:
        return verifier(tmp_path, algorithms=[alg], secret=SECRET, **fields)
    key = private_key(alg)
    return verifier(
        tmp_path,
        algorithms=[alg],
        public_key_file=write(tmp_path, "pub.pem", public_pem(key)),
        private_key_file=write(tmp_path, "key.pem", private_pem(key)),
        **fields,
    )


# -- every algorithm --------------------------------------------------------------------------


@pytest.mark.parametrize("alg", HMAC + ASYMMETRIC)
async def test_mint_then_verify_round_trips(tmp_path: Path, alg: str) -> None:
    v = setup(tmp_path, alg, issuer="https://issuer", audience=["api"])
    token = mint(v.auth, tmp_path, sub="alice", roles=["admin"], scopes=["read"], now=NOW)
    assert jwt.get_unverified_header(token)["alg"] == alg
    identity = await v.verify(token)
    assert (identity.sub, identity.roles, identity.scopes) == ("alice", ("admin",), ("read",))
    assert identity.claims["iss"] == "https://issuer"
    assert identity.exp == NOW + 900


@pytest.mark.parametrize("alg", HMAC + ASYMMETRIC)
async def test_a_token_from_another_key_is_a_bad_signature(tmp_path: Path, alg: str) -> None:
    v = setup(tmp_path, alg)
    other: Any = OTHER_SECRET.encode() if alg in HMAC else private_key(alg, 1)
    error = await rejected(v, sign(claims(), alg, other))
    assert error.code == "bad_signature"


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256", "EdDSA"])
async def test_tampered_payload_and_header(tmp_path: Path, alg: str) -> None:
    v = setup(tmp_path, alg)
    token = mint(v.auth, tmp_path, sub="alice", now=NOW)
    header, payload, signature = token.split(".")
    await v.verify(token)

    forged_payload = segment({**claims(), "sub": "mallory"})
    error = await rejected(v, f"{header}.{forged_payload}.{signature}")
    assert error.code == "bad_signature"

    forged_header = segment({"alg": alg, "typ": "JWT", "kid": "x"})
    error = await rejected(v, f"{forged_header}.{payload}.{signature}")
    assert error.code == "bad_signature"

    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert (await rejected(v, f"{header}.{payload}.{flipped}")).code == "bad_signature"


async def test_swapping_alg_within_a_family_breaks_the_signature(tmp_path: Path) -> None:
    key = rsa_key()
    v = verifier(
        tmp_path,
        algorithms=["RS256", "RS512", "PS256"],
        public_key_file=write(tmp_path, "pub.pem", public_pem(key)),
    )
    _, payload, signature = sign(claims(), "RS256", key).split(".")
    for alg in ("RS512", "PS256"):
        forged = f"{segment({'alg': alg, 'typ': 'JWT'})}.{payload}.{signature}"
        assert (await rejected(v, forged)).code == "bad_signature"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", "c2ln"])
async def test_alg_none_is_rejected(tmp_path: Path, alg: str, signature: str) -> None:
    v = setup(tmp_path, "HS256")
    token = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims())}.{signature}"
    assert (await rejected(v, token)).code == "alg_not_allowed"


async def test_an_algorithm_not_configured_is_rejected(tmp_path: Path) -> None:
    v = setup(tmp_path, "HS256")
    error = await rejected(v, sign(claims(), "HS512", SECRET.encode()))
    assert (error.code, error.reason) == ("alg_not_allowed", "alg 'HS512' is not accepted")


# -- algorithm confusion ----------------------------------------------------------------------


async def test_hs256_signed_with_the_public_pem_is_refused_when_only_rs256_is_allowed(
    tmp_path: Path,
) -> None:
    key = rsa_key()
    v = verifier(
        tmp_path, algorithms=["RS256"], public_key_file=write(tmp_path, "p.pem", public_pem(key))
    )
    forged = forge_hmac({"alg": "HS256", "typ": "JWT"}, claims(sub="root"), public_pem(key))
    error = await rejected(v, forged)
    assert error.code == "alg_not_allowed"
    assert "BEGIN" not in error.reason


async def test_hs256_verifies_against_the_secret_never_the_pem(tmp_path: Path) -> None:
    key = rsa_key()
    pem = public_pem(key)
    v = verifier(
        tmp_path,
        algorithms=["HS256", "RS256"],
        secret=SECRET,
        public_key_file=write(tmp_path, "p.pem", pem),
    )
    assert (await v.verify(sign(claims(), "HS256", SECRET.encode()))).sub == "alice"
    assert (await v.verify(sign(claims(sub="bob"), "RS256", key))).sub == "bob"
    for material in (pem, pem.strip(), pem.replace(b"\n", b"")):
        forged = forge_hmac({"alg": "HS256", "typ": "JWT"}, claims(sub="root"), material)
        error = await rejected(v, forged)
        assert error.code == "bad_signature"


async def test_hs256_without_a_secret_finds_no_key(tmp_path: Path) -> None:
    key = rsa_key()
    pem = public_pem(key)
    v = verifier(
        tmp_path, algorithms=["HS256", "RS256"], public_key_file=write(tmp_path, "p.pem", pem)
    )
    error = await rejected(v, forge_hmac({"alg": "HS256"}, claims(), pem))
    assert (error.code, error.reason) == ("unknown_kid", "no configured key verifies HS256")


async def test_hs256_naming_the_kid_of_an_rsa_jwk_is_refused(tmp_path: Path) -> None:
    key = rsa_key()
    document = {"keys": [jwk(key, "rsa1")]}
    name = write(tmp_path, "jwks.json", json.dumps(document))
    v = verifier(tmp_path, algorithms=["HS256", "RS256"], secret=SECRET, jwks_file=name)
    for material in (public_pem(key), json.dumps(document["keys"][0]).encode()):
        forged = forge_hmac({"alg": "HS256", "kid": "rsa1"}, claims(), material)
        assert (await rejected(v, forged)).code == "alg_not_allowed"


# -- time claims ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leeway", "fields", "code"),
    [
        (0, {"exp": NOW + 1}, None),
        (0, {"exp": NOW}, "expired"),
        (30, {"exp": NOW - 29}, None),
        (30, {"exp": NOW - 30}, "expired"),
        (0, {"nbf": NOW}, None),
        (0, {"nbf": NOW + 1}, "not_yet_valid"),
        (30, {"nbf": NOW + 30}, None),
        (30, {"nbf": NOW + 31}, "not_yet_valid"),
        (0, {"iat": NOW + 1}, "not_yet_valid"),
        (30, {"iat": NOW + 30}, None),
        (30, {"iat": NOW + 31}, "not_yet_valid"),
        (0, {"iat": NOW - 86400 * 365}, None),
        (0, {"exp": "tomorrow"}, "malformed"),
        (0, {"exp": True}, "malformed"),
        (0, {"nbf": [1]}, "malformed"),
        (0, {"exp": 10**400}, "malformed"),
    ],
)
@pytest.mark.observes("auth.leeway")
async def test_time_claims_and_leeway(
    tmp_path: Path, leeway: float, fields: dict[str, Any], code: str | None
) -> None:
    v = setup(tmp_path, "HS256", leeway=f"{leeway}s")
    token = forge_hmac({"alg": "HS256"}, claims(**fields), SECRET.encode())
    if code is None:
        await v.verify(token)
    else:
        assert (await rejected(v, token)).code == code


@pytest.mark.parametrize(
    "payload",
    [b'{"sub": "a", "exp": NaN}', b'{"exp": Infinity}', b"not json", b"[1, 2]"],
)
async def test_signed_but_unreadable_payloads_are_malformed(tmp_path: Path, payload: bytes) -> None:
    token = forge_hmac({"alg": "HS256"}, payload, SECRET.encode())
    assert (await rejected(setup(tmp_path, "HS256"), token)).code == "malformed"


@pytest.mark.observes("auth.require_exp")
async def test_exp_is_required_unless_configured_otherwise(tmp_path: Path) -> None:
    token = sign(claims(exp=None), "HS256", SECRET.encode())
    error = await rejected(setup(tmp_path, "HS256"), token)
    assert (error.code, error.reason) == ("missing_claim", "the token has no exp")
    identity = await setup(tmp_path, "HS256", require_exp=False).verify(token)
    assert identity.exp is None


async def test_expired_reason_is_human(tmp_path: Path) -> None:
    error = await rejected(
        setup(tmp_path, "HS256"), sign(claims(exp=NOW - 180), "HS256", SECRET.encode())
    )
    assert error.reason == "the token expired 3m ago"


# -- issuer and audience ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"iss": "https://issuer"}, None),
        ({"iss": "https://evil"}, "wrong_issuer"),
        ({"iss": 7}, "wrong_issuer"),
        ({"iss": None}, "missing_claim"),
    ],
)
async def test_issuer(tmp_path: Path, fields: dict[str, Any], code: str | None) -> None:
    v = setup(tmp_path, "HS256", issuer="https://issuer")
    token = forge_hmac({"alg": "HS256"}, claims(**fields), SECRET.encode())
    if code is None:
        await v.verify(token)
    else:
        assert (await rejected(v, token)).code == code


@pytest.mark.parametrize(
    ("aud", "code"),
    [
        ("b", None),
        (["x", "a"], None),
        ("c", "wrong_audience"),
        (["x", "y"], "wrong_audience"),
        (None, "missing_claim"),
        ([], "missing_claim"),
        ([1], "malformed"),
    ],
)
async def test_audience_any_of_the_list(tmp_path: Path, aud: Any, code: str | None) -> None:
    v = setup(tmp_path, "HS256", audience=["a", "b"])
    token = sign(claims(aud=aud), "HS256", SECRET.encode())
    if code is None:
        await v.verify(token)
    else:
        assert (await rejected(v, token)).code == code


async def test_a_token_for_an_audience_is_refused_where_none_is_configured(
    tmp_path: Path,
) -> None:
    v = setup(tmp_path, "HS256")
    assert (await rejected(v, sign(claims(aud="x"), "HS256", SECRET.encode()))).code == (
        "wrong_audience"
    )


# -- rotation in a JWKS file ------------------------------------------------------------------


@pytest.mark.observes("auth.jwks_file")
async def test_kid_selects_the_key_of_a_rotating_jwks_file(tmp_path: Path) -> None:
    old, new = rsa_key(0), rsa_key(1)
    name = write(tmp_path, "jwks.json", json.dumps({"keys": [jwk(old, "k1"), jwk(new, "k2")]}))
    v = verifier(tmp_path, algorithms=["RS256"], jwks_file=name)
    assert (await v.verify(sign(claims(sub="old"), "RS256", old, kid="k1"))).sub == "old"
    assert (await v.verify(sign(claims(sub="new"), "RS256", new, kid="k2"))).sub == "new"
    # No kid: each key of the family is tried.
    assert (await v.verify(sign(claims(sub="bare"), "RS256", new))).sub == "bare"
    assert (await rejected(v, sign(claims(), "RS256", old, kid="k2"))).code == "bad_signature"
    error = await rejected(v, sign(claims(), "RS256", old, kid="k3"))
    assert (error.code, error.reason) == ("unknown_kid", "no key has kid 'k3'")


# -- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "a.b",
        "a.b.c.d.e",
        "!!.!!.!!",
        "é.é.é",
        f"{segment([1])}.{segment({})}.",
        f"{segment({'alg': 'HS256', 'crit': ['exp']})}.{segment({})}.",
        "x" * 9000,
    ],
)
async def test_malformed_tokens(tmp_path: Path, token: str) -> None:
    assert (await rejected(setup(tmp_path, "HS256"), token)).code == "malformed"


async def test_no_token_is_missing(tmp_path: Path) -> None:
    assert (await rejected(setup(tmp_path, "HS256"), "")).code == "missing"


async def test_sub_must_be_a_string(tmp_path: Path) -> None:
    v = setup(tmp_path, "HS256")
    assert (await rejected(v, sign(claims(sub=5), "HS256", SECRET.encode()))).code == "malformed"


def test_a_config_without_keys_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="has no key"):
        Verifier(auth(algorithms=["RS256"]), tmp_path)
    with pytest.raises(ValueError, match="pass a JwksCache"):
        Verifier(auth(algorithms=["RS256"], jwks_url="http://127.0.0.1:1/jwks"), tmp_path)


# -- identity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "roles", "scopes"),
    [
        ({"roles": ["a", "b"], "scope": "read write"}, ("a", "b"), ("read", "write")),
        ({"roles": "a, b c", "scope": ["read", 5, ""]}, ("a", "b", "c"), ("read",)),
        ({"roles": 5, "scp": ["x", "y"]}, (), ("x", "y")),
        ({"scp": "x y"}, (), ("x", "y")),
        ({"roles": {"no": 1}}, (), ()),
    ],
)
async def test_roles_and_scopes(
    tmp_path: Path, extra: dict[str, Any], roles: tuple[str, ...], scopes: tuple[str, ...]
) -> None:
    identity = await setup(tmp_path, "HS256").verify(
        sign(claims(**extra), "HS256", SECRET.encode())
    )
    assert (identity.roles, identity.scopes) == (roles, scopes)


@pytest.mark.observes("auth.scopes_claim")
async def test_configured_claim_names_and_nested_roles(tmp_path: Path) -> None:
    v = setup(tmp_path, "HS256", roles_claim="realm_access.roles", scopes_claim="perms")
    body = claims(realm_access={"roles": ["admin"]}, perms=["a:b"], jti="j1")
    identity = await v.verify(sign(body, "HS256", SECRET.encode()))
    assert (identity.roles, identity.scopes, identity.jti) == (("admin",), ("a:b",), "j1")


async def test_identity_is_read_only(tmp_path: Path) -> None:
    identity = await setup(tmp_path, "HS256").verify(sign(claims(), "HS256", SECRET.encode()))
    assert isinstance(identity, Identity)
    with pytest.raises(TypeError):
        identity.claims["sub"] = "mallory"  # type: ignore[index]


@pytest.mark.parametrize(
    ("required", "held", "mode", "lacking"),
    [
        (["a", "b"], ["a"], "any", []),
        (["a", "b"], [], "any", ["a", "b"]),
        (["a", "b"], ["a"], "all", ["b"]),
        (["a", "b"], ["b", "a"], "all", []),
        ([], [], "all", []),
        ([], [], "any", []),
    ],
)
def test_missing_roles_or_scopes(
    required: list[str], held: list[str], mode: Any, lacking: list[str]
) -> None:
    assert missing(required, held, mode) == lacking


# -- where the token comes from ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "cookies", "query", "expected"),
    [
        ({"Authorization": "Bearer abc"}, {}, {}, "abc"),
        ({"Authorization": "bearer  abc "}, {}, {}, "abc"),
        ({"Authorization": "BEARER abc"}, {"session": "c"}, {}, "abc"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, {"session": "c"}, {}, "c"),
        ({"Authorization": "Bearer "}, {}, {"token": "q"}, "q"),
        ({}, {"session": "c"}, {"token": "q"}, "c"),
        ({}, {"session": ""}, {"token": "q"}, "q"),
        ({}, {}, {}, None),
        ({"authorization": "Bearer lower"}, {}, {}, "lower"),
    ],
)
def test_extract_token(
    headers: dict[str, str], cookies: dict[str, str], query: dict[str, str], expected: str | None
) -> None:
    config = auth(secret=SECRET, cookie="session", query_param="token")
    assert extract_token(CIMultiDict(headers), cookies, query, config) == expected


def test_cookie_and_query_are_read_only_when_configured() -> None:
    config = auth(secret=SECRET)
    assert extract_token({}, {"session": "c"}, {"token": "q"}, config) is None
