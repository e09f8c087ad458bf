"""Generated tokens and headers: verification raises TokenRejected and nothing else, ever."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spork_cli.auth import TokenRejected
from spork_cli.auth.claims import Identity
from spork_cli.auth.explain import explain_checks, inspect
from spork_cli.auth.verify import Verifier, extract_token
from tests.auth.keyring import (
    NOW,
    SECRET,
    auth,
    b64,
    clock,
    ec_key,
    ed_key,
    forge_hmac,
    jwk,
    rsa_key,
    sign,
    write,
)

FUZZ = settings(max_examples=250, deadline=None)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["HS256", "RS256", "none", "k1", "alice", "api", "read write"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
CLAIM_NAMES = ["exp", "nbf", "iat", "iss", "aud", "sub", "jti", "roles", "scope", "scp"]
times = st.floats(min_value=NOW - 1000, max_value=NOW + 1000) | st.integers(
    min_value=int(NOW) - 1000, max_value=int(NOW) + 1000
)
claims = st.dictionaries(
    st.sampled_from(CLAIM_NAMES) | st.text(max_size=5),
    json_values | times,
    max_size=8,
)
headers = st.fixed_dictionaries(
    {
        "alg": st.sampled_from(["HS256", "RS256", "ES256", "EdDSA", "HS512", "none", ""])
        | json_values
    },
    optional={
        "kid": st.sampled_from(["k1", "k2", "k3", "nope"]) | json_values,
        "typ": json_values,
        "crit": json_values,
        "b64": json_values,
    },
)


def encode(value: Any) -> str:
    return b64(json.dumps(value).encode())


segments = st.one_of(
    json_values.map(encode),
    headers.map(encode),
    st.binary(max_size=40).map(b64),
    st.text(max_size=20),
)
structured_tokens = st.tuples(
    headers.map(encode) | segments,
    claims.map(encode) | segments,
    st.binary(max_size=80).map(b64) | st.text(max_size=10),
).map(".".join)
any_tokens = st.text(max_size=300) | structured_tokens


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Verifier:
    directory: Path = tmp_path_factory.mktemp("fuzz")
    document = {"keys": [jwk(rsa_key(), "k1"), jwk(ec_key("ES256"), "k2"), jwk(ed_key(), "k3")]}
    config = auth(
        algorithms=["HS256", "RS256", "ES256", "EdDSA"],
        secret=SECRET,
        jwks_file=write(directory, "jwks.json", json.dumps(document)),
        audience=["api"],
        issuer="me",
        require_exp=False,
    )
    return Verifier(config, directory, clock=clock())


async def outcome(verifier: Verifier, token: str) -> Identity | TokenRejected:
    try:
        return await verifier.verify(token)
    except TokenRejected as exc:
        assert exc.code in {
            "missing", "malformed", "bad_signature", "expired", "not_yet_valid", "wrong_issuer",
            "wrong_audience", "alg_not_allowed", "unknown_kid", "missing_claim", "revoked",
        }  # fmt: skip
        assert SECRET not in exc.reason and "BEGIN" not in exc.reason
        assert len(exc.reason) < 200
        return exc


@FUZZ
@given(token=any_tokens)
async def test_arbitrary_tokens_are_only_ever_rejected(verifier: Verifier, token: str) -> None:
    assert isinstance(await outcome(verifier, token), TokenRejected)


@FUZZ
@given(body=claims, header=headers)
async def test_correctly_signed_arbitrary_claims(
    verifier: Verifier, body: dict[str, Any], header: dict[str, Any]
) -> None:
    # Signed with the real secret, so every claim check is reached with hostile values.
    result = await outcome(verifier, forge_hmac({**header, "alg": "HS256"}, body, SECRET.encode()))
    if isinstance(result, Identity):
        assert all(isinstance(role, str) for role in result.roles)
        assert all(isinstance(scope, str) for scope in result.scopes)


@FUZZ
@given(body=claims)
async def test_arbitrary_claims_signed_by_every_algorithm(
    verifier: Verifier, body: dict[str, Any]
) -> None:
    for alg, key, kid in (
        ("RS256", rsa_key(), "k1"),
        ("ES256", ec_key("ES256"), "k2"),
        ("EdDSA", ed_key(), "k3"),
    ):
        try:
            token = sign(body, alg, key, kid=kid)
        except TypeError:  # pyjwt refuses to encode a non-string iss
            continue
        await outcome(verifier, token)


@settings(max_examples=100, deadline=None)
@given(token=any_tokens)
async def test_inspect_and_explain_never_raise_anything_else(
    verifier: Verifier, token: str
) -> None:
    try:
        inspect(token, now=NOW)
    except TokenRejected:
        pass
    checks = await explain_checks(token, verifier, roles=["admin"], scopes=["read"])
    assert checks and all(isinstance(c.detail, str) for c in checks)


@FUZZ
@given(
    headers=st.dictionaries(
        st.sampled_from(["Authorization", "authorization", "X"]), st.text(max_size=30)
    ),
    cookies=st.dictionaries(st.sampled_from(["session", "other"]), st.text(max_size=10)),
    query=st.dictionaries(st.sampled_from(["token", "other"]), st.text(max_size=10)),
)
def test_extract_token_never_raises(
    headers: dict[str, str], cookies: dict[str, str], query: dict[str, str]
) -> None:
    config = auth(secret=SECRET, cookie="session", query_param="token")
    token = extract_token(headers, cookies, query, config)
    assert token is None or (token and token == token.strip())
