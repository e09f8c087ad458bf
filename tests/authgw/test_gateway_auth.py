"""JWT auth at the gateway, in process against a real echo upstream: auth modes, every reject
class, roles and scopes, forwarded and spoofed identity headers, cookie and query tokens,
algorithm confusion, asymmetric algorithms, the verified-token cache and revocation."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.accesslog import AccessLog
from spork_cli.gateway.app import build_app
from spork_cli.gateway.keys import TABLE
from tests.authgw.conftest import (
    AUDIENCE,
    ISSUER,
    OTHER_SECRET,
    SECRET,
    Client,
    auth_section,
    bearer,
    claims,
    compact,
    echoed,
    gateway_config,
    hmac_forge,
    private_key,
    problem,
    public_pem,
    sign,
    unverified,
    verifier_of,
)
from tests.support import Upstream, eventually

Gateway = Callable[[GatewayConfig], Awaitable[Client]]
AdminApi = Callable[..., Awaitable[Client]]
CHALLENGE = re.compile(r'^Bearer realm="spork", error="invalid_token", error_description="[^"]+"$')


@pytest.fixture
async def hs(gateway: Gateway, upstream: Upstream) -> Client:
    """A gateway with ROUTES, HS256 with SECRET."""
    return await gateway(gateway_config(upstream.url, auth=auth_section()))


def assert_no_secrets(raw: bytes, *secrets: bytes) -> None:
    assert b"-----BEGIN" not in raw
    for secret in (SECRET.encode(), *secrets):
        assert secret not in raw


# --- auth modes --------------------------------------------------------------------------------


@pytest.mark.observes("routes.auth")
async def test_required_route_without_token_is_401_token_required(hs: Client) -> None:
    response = await hs.get("/private")
    body = await problem(response, 401)
    assert body["type"] == "urn:spork:problem:token-required"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="spork"'


async def test_required_route_with_another_scheme_is_401_token_required(hs: Client) -> None:
    response = await hs.get("/private", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    body = await problem(response, 401)
    assert body["type"] == "urn:spork:problem:token-required"


@pytest.mark.observes("routes.auth")
async def test_optional_route_without_token_passes_anonymously(
    hs: Client, upstream: Upstream
) -> None:
    echo = await echoed(await hs.get("/maybe/x"))
    assert echo["raw_path"] == "/maybe/x"
    assert "x-user-id" not in echo["headers"]
    assert "x-user-roles" not in echo["headers"]


async def test_optional_route_with_valid_token_forwards_identity(hs: Client) -> None:
    token = sign(claims(sub="carol", roles=["dev"]))
    echo = await echoed(await hs.get("/maybe", headers=bearer(token)))
    assert echo["headers"]["x-user-id"] == "carol"
    assert echo["headers"]["x-user-roles"] == "dev"


async def test_optional_route_with_invalid_token_is_401(hs: Client, upstream: Upstream) -> None:
    token = sign(claims(), OTHER_SECRET)
    response = await hs.get("/maybe", headers=bearer(token))
    body = await problem(response, 401)
    assert body["type"] == "urn:spork:problem:invalid-token"
    assert body["reason"] == "bad_signature"
    assert upstream.requests == []


async def test_none_route_passes_without_and_with_an_invalid_token(hs: Client) -> None:
    await echoed(await hs.get("/open"))
    echo = await echoed(await hs.get("/open", headers=bearer("not-a-token")))
    # The token is ignored, not verified: nothing is forwarded as identity.
    assert "x-user-id" not in echo["headers"]


async def test_required_route_with_valid_token_passes(hs: Client) -> None:
    echo = await echoed(await hs.get("/private/a?b=1", headers=bearer(sign(claims()))))
    assert echo["raw_path"] == "/private/a?b=1"
    assert echo["headers"]["x-user-id"] == "alice"


# --- every reject class ------------------------------------------------------------------------


def _expired() -> str:
    return sign(claims(iat=int(time.time()) - 600, nbf=int(time.time()) - 600,
                       exp=int(time.time()) - 120))  # fmt: skip


def _tampered_payload() -> str:
    head, _, signature = sign(claims()).split(".")
    forged = compact({}, claims(roles=["admin"])).split(".")[1]
    return f"{head}.{forged}.{signature}"


def _tampered_header() -> str:
    _, body, signature = sign(claims()).split(".")
    head = compact({"alg": "HS256", "typ": "JWT", "kid": "other"}, {}).split(".")[0]
    return f"{head}.{body}.{signature}"


REJECTS: dict[str, tuple[Callable[[], str], str]] = {
    "expired": (_expired, "expired"),
    "not-yet-valid": (lambda: sign(claims(nbf=int(time.time()) + 3600)), "not_yet_valid"),
    "bad-signature": (lambda: sign(claims(), OTHER_SECRET), "bad_signature"),
    "tampered-payload": (_tampered_payload, "bad_signature"),
    "tampered-header": (_tampered_header, "bad_signature"),
    "wrong-audience": (lambda: sign(claims(aud="someone-else")), "wrong_audience"),
    "wrong-issuer": (lambda: sign(claims(iss="https://evil.test")), "wrong_issuer"),
    "no-exp": (lambda: sign(claims(exp=None)), "missing_claim"),
    "alg-hs512-not-listed": (lambda: sign(claims(), SECRET, "HS512"), "alg_not_allowed"),
    "alg-none": (lambda: compact({"alg": "none", "typ": "JWT"}, claims()), "alg_not_allowed"),
    "alg-None": (lambda: compact({"alg": "None"}, claims()), "alg_not_allowed"),
    "alg-none-with-signature": (
        lambda: compact({"alg": "none"}, claims(), b"\x00" * 32),
        "alg_not_allowed",
    ),
    "malformed-word": (lambda: "not-a-jwt", "malformed"),
    "malformed-three-parts": (lambda: "a.b.c", "malformed"),
    "malformed-two-parts": (lambda: ".".join(sign(claims()).split(".")[:2]), "malformed"),
    "malformed-non-json-header": (lambda: "bm90IGpzb24.e30.c2ln", "malformed"),
}


@pytest.mark.parametrize("case", list(REJECTS))
async def test_rejected_token_is_401_with_reason_and_challenge(
    hs: Client, upstream: Upstream, case: str
) -> None:
    make, reason = REJECTS[case]
    response = await hs.get("/private", headers=bearer(make()))
    raw = await response.read()
    body = await problem(response, 401)
    assert body["type"] == "urn:spork:problem:invalid-token"
    assert body["reason"] == reason
    challenge = response.headers["WWW-Authenticate"]
    assert CHALLENGE.match(challenge), challenge
    description = challenge.split('error_description="', 1)[1].rstrip('"')
    assert description in body["detail"]
    assert_no_secrets(raw, OTHER_SECRET.encode())
    assert upstream.requests == []


async def test_rejection_on_an_asymmetric_route_shows_no_key_material(
    gateway: Gateway, upstream: Upstream, tmp_path: Path
) -> None:
    key = private_key("RS256")
    pem = tmp_path / "public.pem"
    pem.write_bytes(public_pem(key))
    auth = auth_section(algorithms=["RS256"], secret=None, public_key_file=str(pem))
    client = await gateway(gateway_config(upstream.url, auth=auth))
    token = sign(claims(), private_key("RS256", 1), "RS256")
    response = await client.get("/private", headers=bearer(token))
    raw = await response.read()
    body = await problem(response, 401)
    assert body["reason"] == "bad_signature"
    middle = b"".join(public_pem(key).splitlines()[1:-1])
    assert_no_secrets(raw, middle[:40], str(pem).encode())
    assert str(pem) not in response.headers["WWW-Authenticate"]


# --- roles and scopes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "grant", "missing", "detail"),
    [
        ("/roles-any", {"roles": ["guest"]}, ["admin", "ops"], "roles admin, ops (any one)"),
        ("/roles-any", {}, ["admin", "ops"], "roles admin, ops (any one)"),
        ("/roles-all", {"roles": ["admin"]}, ["ops"], "role ops"),
        ("/roles-all", {"roles": ["ops", "guest"]}, ["admin"], "role admin"),
    ],
)
@pytest.mark.observes("routes.roles", "routes.roles_mode")
async def test_missing_role_is_403_naming_it(
    hs: Client, path: str, grant: dict[str, Any], missing: list[str], detail: str
) -> None:
    response = await hs.get(path, headers=bearer(sign(claims(**grant))))
    body = await problem(response, 403)
    assert body["type"] == "urn:spork:problem:missing-role"
    assert body["missing_roles"] == missing
    assert body["detail"].endswith(detail)


@pytest.mark.parametrize(
    ("path", "scope", "missing"),
    [
        ("/scopes-all", "read", ["write"]),
        ("/scopes-all", "write admin", ["read"]),
        ("/scopes-all", None, ["read", "write"]),
        ("/scopes-any", "admin", ["read", "write"]),
    ],
)
@pytest.mark.observes("routes.scopes", "routes.scopes_mode")
async def test_missing_scope_is_403_naming_it(
    hs: Client, path: str, scope: str | None, missing: list[str]
) -> None:
    response = await hs.get(path, headers=bearer(sign(claims(scope=scope))))
    body = await problem(response, 403)
    assert body["type"] == "urn:spork:problem:insufficient-scope"
    assert body["missing_scopes"] == missing
    assert body["detail"].endswith(" ".join(missing))
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert " ".join(missing) in challenge


@pytest.mark.parametrize(
    ("path", "grant"),
    [
        ("/roles-any", {"roles": ["ops"]}),
        ("/roles-any", {"roles": ["guest", "admin"]}),
        ("/roles-all", {"roles": ["ops", "admin", "guest"]}),
        ("/scopes-all", {"scope": "write read"}),
        ("/scopes-all", {"scp": ["read", "write"]}),
        ("/scopes-any", {"scope": "write"}),
    ],
)
@pytest.mark.observes("routes.roles", "routes.roles_mode", "routes.scopes", "routes.scopes_mode")
async def test_enough_roles_or_scopes_pass(hs: Client, path: str, grant: dict[str, Any]) -> None:
    await echoed(await hs.get(path, headers=bearer(sign(claims(**grant)))))


async def test_route_with_roles_and_no_token_is_401_not_403(hs: Client) -> None:
    body = await problem(await hs.get("/roles-all"), 401)
    assert body["type"] == "urn:spork:problem:token-required"


# --- forwarded and spoofed identity ------------------------------------------------------------


async def test_forwarded_claims_reach_upstream(hs: Client) -> None:
    token = sign(claims(sub="alice", roles=["admin", "ops"]))
    echo = await echoed(await hs.get("/private", headers=bearer(token)))
    assert echo["headers"]["x-user-id"] == "alice"
    assert echo["headers"]["x-user-roles"] == "admin,ops"


SPOOF = {"X-User-Id": "mallory", "X-User-Roles": "admin", "x-user-id": "root"}


@pytest.mark.parametrize(
    ("path", "token"),
    [
        ("/open", None),
        ("/open", "valid"),
        ("/maybe", None),
        ("/maybe", "valid"),
        ("/private", "valid"),
        ("/roles-any", "valid"),
    ],
)
async def test_client_identity_headers_are_stripped_on_every_route(
    hs: Client, path: str, token: str | None
) -> None:
    headers = dict(SPOOF)
    if token is not None:
        headers.update(bearer(sign(claims(sub="alice", roles=["ops"]))))
    response = await hs.get(path, headers=[*headers.items(), ("X-USER-ROLES", "root")])
    sent = (await echoed(response))["headers"]
    if token is None or path == "/open":
        assert "x-user-id" not in sent
        assert "x-user-roles" not in sent
    else:
        # Exactly the verified values: a client copy would show up comma-joined by the echo.
        assert sent["x-user-id"] == "alice"
        assert sent["x-user-roles"] == "ops"


@pytest.mark.observes("auth.forward_claims")
async def test_custom_forward_claims_are_stripped_too(gateway: Gateway, upstream: Upstream) -> None:
    auth = auth_section(forward_claims={"sub": "X-Subject", "email": "X-Email"})
    client = await gateway(gateway_config(upstream.url, auth=auth))
    spoof = {"X-Subject": "mallory", "X-Email": "m@evil.test"}
    anonymous = (await echoed(await client.get("/open", headers=spoof)))["headers"]
    assert "x-subject" not in anonymous
    assert "x-email" not in anonymous
    token = sign(claims(email="alice@example.test"))
    sent = (await echoed(await client.get("/private", headers={**spoof, **bearer(token)})))[
        "headers"
    ]
    assert sent["x-subject"] == "alice"
    assert sent["x-email"] == "alice@example.test"


async def test_identity_headers_are_stripped_without_an_auth_section(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(gateway_config(upstream.url, routes=[{"path": "/"}]))
    sent = (await echoed(await client.get("/x", headers=SPOOF)))["headers"]
    assert "x-user-id" not in sent
    assert "x-user-roles" not in sent


@pytest.mark.parametrize("sub", ["a\x00b", "a\x01b", "a\x7fb", "a\x1bb", "a\r\nX-Admin: 1"])
async def test_control_characters_in_a_forwarded_claim_become_spaces(hs: Client, sub: str) -> None:
    # The token is valid, so the request goes through; a header value cannot hold control
    # characters (RFC 9110 5.5: CR, LF and NUL are rejected or replaced with SP), and the
    # claim must not smuggle a header of its own.
    response = await hs.get("/private", headers=bearer(sign(claims(sub=sub))))
    sent = (await echoed(response))["headers"]
    assert sent["x-user-id"] == re.sub(r"[\x00-\x1f\x7f]", " ", sub)
    assert "x-admin" not in sent


# --- cookie and query parameter ----------------------------------------------------------------


@pytest.fixture
async def cookie_query(gateway: Gateway, upstream: Upstream) -> Client:
    auth = auth_section(cookie="session", query_param="access_token")
    return await gateway(gateway_config(upstream.url, auth=auth))


@pytest.mark.observes("auth.cookie")
async def test_token_from_named_cookie(cookie_query: Client) -> None:
    token = sign(claims(sub="cookie-user"))
    response = await cookie_query.get("/private", headers={"Cookie": f"other=1; session={token}"})
    assert (await echoed(response))["headers"]["x-user-id"] == "cookie-user"


@pytest.mark.observes("auth.query_param")
async def test_token_from_query_parameter(cookie_query: Client) -> None:
    token = sign(claims(sub="query-user"))
    response = await cookie_query.get("/private", params={"access_token": token, "x": "1"})
    assert (await echoed(response))["headers"]["x-user-id"] == "query-user"


async def test_invalid_cookie_token_is_401(cookie_query: Client) -> None:
    token = sign(claims(), OTHER_SECRET)
    response = await cookie_query.get("/maybe", headers={"Cookie": f"session={token}"})
    assert (await problem(response, 401))["reason"] == "bad_signature"


async def test_bearer_header_wins_over_cookie(cookie_query: Client) -> None:
    headers = {
        **bearer(sign(claims(sub="header-user"))),
        "Cookie": f"session={sign(claims(sub='cookie-user'))}",
    }
    response = await cookie_query.get("/private", headers=headers)
    assert (await echoed(response))["headers"]["x-user-id"] == "header-user"


async def test_cookie_and_query_are_ignored_unless_configured(hs: Client) -> None:
    token = sign(claims())
    for response in (
        await hs.get("/private", headers={"Cookie": f"session={token}"}),
        await hs.get("/private", params={"access_token": token}),
    ):
        assert (await problem(response, 401))["type"] == "urn:spork:problem:token-required"


async def test_query_token_is_not_written_to_the_access_log(
    aiohttp_client: Any, upstream: Upstream
) -> None:
    stream = io.BytesIO()
    auth = auth_section(query_param="access_token")
    config = gateway_config(upstream.url, auth=auth, logging={"access_log": True})
    log = AccessLog(stream, console=False)
    client = await aiohttp_client(build_app(config, access_log=log))
    token = sign(claims())
    await echoed(await client.get("/private", params={"access_token": token}))
    await echoed(await client.get("/private", params={"access_token": token}))
    log.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines  # the log was written: the check below means something
    signature = token.rsplit(".", 1)[1].encode()
    assert signature not in stream.getvalue()


# --- algorithm confusion and asymmetric algorithms ---------------------------------------------


@pytest.fixture
def rsa_pem(tmp_path: Path) -> Path:
    path = tmp_path / "rs256-public.pem"
    path.write_bytes(public_pem(private_key("RS256")))
    return path


@pytest.mark.parametrize(
    ("algorithms", "secret", "reason"),
    [
        (["RS256"], None, "alg_not_allowed"),
        # HS256 accepted too, but its only key is the secret: the PEM is never an HMAC key.
        (["RS256", "HS256"], SECRET, "bad_signature"),
        (["RS256", "HS256"], None, "unknown_kid"),
    ],
)
@pytest.mark.parametrize("strip", [False, True])
@pytest.mark.observes("auth.algorithms", "auth.secret", "auth.public_key_file")
async def test_hs256_token_signed_with_the_public_pem_is_rejected(
    gateway: Gateway,
    upstream: Upstream,
    rsa_pem: Path,
    algorithms: list[str],
    secret: str | None,
    reason: str,
    strip: bool,
) -> None:
    auth = auth_section(algorithms=algorithms, secret=secret, public_key_file=str(rsa_pem))
    client = await gateway(gateway_config(upstream.url, auth=auth))
    # The control: a real RS256 token passes this gateway.
    good = sign(claims(), private_key("RS256"), "RS256")
    await echoed(await client.get("/private", headers=bearer(good)))

    pem = rsa_pem.read_bytes()
    forged = hmac_forge(
        {"alg": "HS256", "typ": "JWT"}, claims(roles=["admin"]), pem.strip() if strip else pem
    )
    response = await client.get("/roles-any", headers=bearer(forged))
    body = await problem(response, 401)
    assert body["reason"] == reason
    assert upstream.requests[-1].raw_path == "/private"


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256", "PS256"])
@pytest.mark.observes("auth.algorithms", "auth.public_key_file")
async def test_asymmetric_algorithm_works_end_to_end(
    gateway: Gateway, upstream: Upstream, tmp_path: Path, alg: str
) -> None:
    pem = tmp_path / "public.pem"
    pem.write_bytes(public_pem(private_key(alg)))
    auth = auth_section(algorithms=[alg], secret=None, public_key_file=str(pem))
    client = await gateway(gateway_config(upstream.url, auth=auth))

    token = sign(claims(sub="asym", roles=["admin"]), private_key(alg), alg)
    echo = await echoed(await client.get("/roles-any", headers=bearer(token)))
    assert echo["headers"]["x-user-id"] == "asym"
    assert echo["headers"]["x-user-roles"] == "admin"

    other = sign(claims(), private_key(alg, 1), alg)
    assert (await problem(await client.get("/private", headers=bearer(other)), 401))[
        "reason"
    ] == "bad_signature"
    hs_token = sign(claims(), SECRET, "HS256")
    assert (await problem(await client.get("/private", headers=bearer(hs_token)), 401))[
        "reason"
    ] == "alg_not_allowed"


# --- the verified-token cache and revocation ---------------------------------------------------


async def test_repeated_token_is_served_from_the_cache(
    hs: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = verifier_of(hs)
    checks: list[str] = []
    original = verifier.verify_signature

    def counting(token: str, *args: Any) -> Any:
        checks.append(token)
        return original(token, *args)

    monkeypatch.setattr(verifier, "verify_signature", counting)
    token = sign(claims())
    for _ in range(5):
        await echoed(await hs.get("/private", headers=bearer(token)))
    assert len(checks) == 1
    assert len(verifier.cache) == 1

    second = sign(claims(sub="bob"))
    assert (await echoed(await hs.get("/private", headers=bearer(second))))["headers"][
        "x-user-id"
    ] == "bob"
    assert len(checks) == 2
    assert len(verifier.cache) == 2


async def test_rejected_tokens_are_not_cached(hs: Client) -> None:
    verifier = verifier_of(hs)
    for _ in range(3):
        await problem(await hs.get("/private", headers=bearer(sign(claims(), OTHER_SECRET))), 401)
    assert len(verifier.cache) == 0


async def test_revoked_token_is_dropped_at_once(hs: Client, admin_api: AdminApi) -> None:
    admin = await admin_api(hs)
    payload = claims()
    token, other = sign(payload), sign(claims())
    await echoed(await hs.get("/private", headers=bearer(token)))
    await echoed(await hs.get("/private", headers=bearer(other)))
    verifier = verifier_of(hs)
    assert len(verifier.cache) == 2

    response = await admin.post("/api/revocations", json={"jti": payload["jti"], "ttl": 60})
    assert response.status == 200, await response.text()
    assert (await response.json())["revoked"] == payload["jti"]
    assert len(verifier.cache) == 1

    body = await problem(await hs.get("/private", headers=bearer(token)), 401)
    assert body["reason"] == "revoked"
    # Revocation is by jti, so the same token re-signed is refused as well.
    resigned = sign({**payload, "sub": "again"})
    assert (await problem(await hs.get("/maybe", headers=bearer(resigned)), 401))[
        "reason"
    ] == "revoked"
    await echoed(await hs.get("/private", headers=bearer(other)))

    lookup = await admin.get("/api/revocations", params={"jti": payload["jti"]})
    assert await lookup.json() == {"jti": payload["jti"], "revoked": True}
    lookup = await admin.get("/api/revocations", params={"jti": unverified_jti(other)})
    assert await lookup.json() == {"jti": unverified_jti(other), "revoked": False}


def unverified_jti(token: str) -> str:
    jti: str = unverified(token)["jti"]
    return jti


async def test_cached_token_is_refused_once_the_store_denies_it(hs: Client) -> None:
    """Revocation written straight to the state store (as another instance would) is seen
    within `auth.revocation_cache_ttl` (1 s), although the token is in this process's cache."""
    payload = claims()
    token = sign(payload)
    await echoed(await hs.get("/private", headers=bearer(token)))
    store = hs.app[TABLE].resources.store
    assert store is not None
    await store.revoke(payload["jti"], 60)
    revoked_at = time.monotonic()

    async def refused() -> bool:
        return (await hs.get("/private", headers=bearer(token))).status == 401

    await eventually(refused, timeout=3.0, what="the revocation applied to a cached token")
    assert time.monotonic() - revoked_at < 1.5
    assert (await problem(await hs.get("/private", headers=bearer(token)), 401))[
        "reason"
    ] == "revoked"


@pytest.mark.observes("auth.revocation_cache_ttl")
async def test_with_no_revocation_cache_the_store_is_asked_on_every_request(
    gateway: Gateway, upstream: Upstream
) -> None:
    client = await gateway(
        gateway_config(upstream.url, auth=auth_section(revocation_cache_ttl="0s"))
    )
    payload = claims()
    token = sign(payload)
    await echoed(await client.get("/private", headers=bearer(token)))
    store = client.app[TABLE].resources.store
    assert store is not None
    await store.revoke(payload["jti"], 60)
    assert (await problem(await client.get("/private", headers=bearer(token)), 401))[
        "reason"
    ] == "revoked"


async def test_admin_revocation_api_checks_its_token_and_input(
    hs: Client, admin_api: AdminApi
) -> None:
    admin = await admin_api(hs, "admin-token-0123456789")
    response = await admin.post("/api/revocations", json={"jti": "x", "ttl": 60})
    assert (await problem_plain(response, 401))["type"] == "urn:spork:problem:admin-token"
    wrong = {"Authorization": "Bearer nope"}
    response = await admin.post("/api/revocations", json={"jti": "x"}, headers=wrong)
    await problem_plain(response, 401)
    good = {"Authorization": "Bearer admin-token-0123456789"}
    for bad in ({"ttl": 5}, {"jti": "", "ttl": 5}, {"jti": "x", "ttl": -1}, [1]):
        response = await admin.post("/api/revocations", json=bad, headers=good)
        await problem_plain(response, 400)
    as_json = {**good, "Content-Type": "application/json"}
    response = await admin.post("/api/revocations", data=b"{not json", headers=as_json)
    await problem_plain(response, 400)
    response = await admin.post("/api/revocations", json={"jti": "x", "ttl": 5}, headers=good)
    assert response.status == 200
    # Liveness stays open without the token.
    assert (await admin.get("/health")).status == 200


async def problem_plain(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    """A problem body of the admin listener (it has no request ids)."""
    raw = await response.read()
    assert response.status == status, raw
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = orjson.loads(raw)
    assert body["status"] == status
    return body


@pytest.mark.observes("auth.issuer", "auth.audience")
async def test_issuer_and_audience_lists(gateway: Gateway, upstream: Upstream) -> None:
    auth = auth_section(audience=["first", AUDIENCE])
    client = await gateway(gateway_config(upstream.url, auth=auth))
    for aud in (AUDIENCE, ["x", "first"], "first"):
        await echoed(await client.get("/private", headers=bearer(sign(claims(aud=aud)))))
    response = await client.get("/private", headers=bearer(sign(claims(aud=["x", "y"]))))
    assert (await problem(response, 401))["reason"] == "wrong_audience"
    response = await client.get("/private", headers=bearer(sign(claims(iss=ISSUER + "/"))))
    assert (await problem(response, 401))["reason"] == "wrong_issuer"


# --- WebSocket upgrades ------------------------------------------------------------------------


async def test_websocket_upgrade_needs_a_token_and_gets_only_verified_identity(
    gateway: Gateway, aiohttp_server: Any
) -> None:
    async def report(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_json(
            {name: request.headers.getall(name, []) for name in ("X-User-Id", "X-User-Roles")}
        )
        await socket.close()
        return socket

    app = web.Application()
    app.router.add_get("/{tail:.*}", report)
    upstream = await aiohttp_server(app)
    client = await gateway(gateway_config(str(upstream.make_url("")), auth=auth_section()))

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/private/ws", headers=SPOOF)
    assert refused.value.status == 401

    async def seen(path: str, headers: dict[str, str]) -> Any:
        socket = await client.ws_connect(path, headers=headers)
        try:
            return await socket.receive_json(timeout=5)
        finally:
            await socket.close()

    token = sign(claims(sub="alice", roles=["ops"]))
    assert await seen("/private/ws", {**SPOOF, **bearer(token)}) == {
        "X-User-Id": ["alice"],
        "X-User-Roles": ["ops"],
    }
    assert await seen("/open/ws", SPOOF) == {"X-User-Id": [], "X-User-Roles": []}
