"""Generated Authorization headers, tokens and claims through the gateway: whatever a client
sends, the answer is 200, 401 or 403 (never a 500, never a traceback)."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.authgw.conftest import (
    ROUTES,
    SECRET,
    Client,
    auth_section,
    b64url,
    claims,
    gateway_config,
    hmac_forge,
    sign,
)
from tests.support import Upstream

ALLOWED = {200, 401, 403}
FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,
    # One gateway serves every example: it is what is being fuzzed, and cheap to reuse.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

PATHS = st.sampled_from([route["path"] for route in ROUTES])
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
# Strings inside claims leave out control characters: that they give a 500 when forwarded is
# a known defect with its own test (test_control_characters_in_a_forwarded_claim_never_give_500).
CLAIM_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | CLAIM_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(CLAIM_TEXT, inner, max_size=3),
    max_leaves=8,
)
ALGS = st.sampled_from(
    ["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA", "none", "None", "", "hs256"]
)
CLAIM_NAMES = st.sampled_from(
    ["sub", "iss", "aud", "exp", "nbf", "iat", "jti", "roles", "scope", "scp", "x"]
)


def b64json(value: Any) -> str:
    return b64url(json.dumps(value).encode())


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A valid token with a few characters changed, cut or added."""
    token = sign(claims(roles=["admin"], scope="read write"))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(token)))
        edit = draw(st.sampled_from(["replace", "delete", "insert"]))
        char = draw(st.sampled_from("AZaz09-_.=+/ "))
        if edit == "replace":
            token = token[:at] + char + token[at + 1 :]
        elif edit == "delete":
            token = token[:at] + token[at + 1 :]
        else:
            token = token[:at] + char + token[at:]
    return token


@st.composite
def forged(draw: st.DrawFn) -> str:
    """Three segments with generated header and payload JSON and a random signature."""
    header: dict[str, Any] = {"alg": draw(ALGS | JSON)}
    for name in draw(st.sets(st.sampled_from(["kid", "typ", "crit", "jku", "b64", "x5c"]))):
        header[name] = draw(JSON)
    payload = draw(st.dictionaries(CLAIM_NAMES, JSON, max_size=6) | JSON)
    head = draw(st.sampled_from([b64json(header), b64url(draw(st.binary(max_size=40)))]))
    body = draw(st.sampled_from([b64json(payload), b64url(draw(st.binary(max_size=40)))]))
    signature = b64url(draw(st.binary(max_size=80)))
    return f"{head}.{body}.{signature}"


@st.composite
def signed(draw: st.DrawFn) -> str:
    """Correctly signed with the gateway's secret; claims generated, some of them valid."""
    payload: dict[str, Any] = claims(roles=["admin", "ops"], scope="read write")
    for name in draw(st.sets(CLAIM_NAMES, max_size=4)):
        if draw(st.booleans()):
            payload.pop(name, None)
        else:
            payload[name] = draw(JSON)
    alg = draw(st.sampled_from(["HS256", "HS384"]))
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if draw(st.booleans()):
        header["kid"] = draw(JSON)
    return hmac_forge(header, payload, SECRET, alg)


TOKENS = st.one_of(
    mutated(),
    forged(),
    signed(),
    st.text(PRINTABLE, max_size=120),
    st.just(sign(claims())),
)


@pytest.fixture
async def fuzz_gateway(gateway: Any, upstream: Upstream) -> Client:
    auth = auth_section(cookie="session", query_param="access_token")
    client: Client = await gateway(gateway_config(upstream.url, auth=auth))
    return client


async def check(response: Any) -> None:
    raw = await response.read()
    event(f"status {response.status}")
    assert response.status in ALLOWED, raw
    assert b"Traceback" not in raw
    if response.status != 200:
        body = orjson.loads(raw)
        assert body["status"] == response.status
        assert SECRET.encode() not in raw


@FUZZ
@given(
    path=PATHS,
    value=st.one_of(
        st.text(PRINTABLE, max_size=200),
        st.builds(
            lambda scheme, gap, token: f"{scheme}{gap}{token}",
            st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "Bearer,"]),
            st.sampled_from([" ", "  ", "\t", ""]),
            TOKENS,
        ),
    ),
)
async def test_authorization_header_values_never_give_500(
    fuzz_gateway: Client, path: str, value: str
) -> None:
    await check(await fuzz_gateway.get(path, headers={"Authorization": value}))


@FUZZ
@given(path=PATHS, token=TOKENS, carrier=st.sampled_from(["header", "cookie", "query"]))
async def test_token_strings_never_give_500(
    fuzz_gateway: Client, path: str, token: str, carrier: str
) -> None:
    if carrier == "header":
        response = await fuzz_gateway.get(path, headers={"Authorization": f"Bearer {token}"})
    elif carrier == "cookie":
        response = await fuzz_gateway.get(path, headers={"Cookie": f"session={token}"})
    else:
        response = await fuzz_gateway.get(path, params={"access_token": token})
    await check(response)


@FUZZ
@given(path=PATHS, query=st.text(max_size=60))
async def test_any_query_token_never_gives_500(fuzz_gateway: Client, path: str, query: str) -> None:
    await check(await fuzz_gateway.get(path, params={"access_token": query}))


@FUZZ
@given(path=PATHS, token=signed())
async def test_signed_tokens_with_generated_claims_never_give_500(
    fuzz_gateway: Client, path: str, token: str
) -> None:
    await check(await fuzz_gateway.get(path, headers={"Authorization": f"Bearer {token}"}))


def test_b64json_round_trips() -> None:
    # The helper must produce what a JWT decoder expects, or the forged tokens test nothing.
    value = {"alg": "HS256", "kid": "é"}
    text = b64json(value)
    assert json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))) == value
