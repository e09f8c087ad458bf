"""inspect (decode without verifying, human times) and explain_checks (every check, in order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spork_cli.auth import TokenRejected
from spork_cli.auth.claims import human_duration
from spork_cli.auth.explain import Check, accepted, describe_time, explain_checks, inspect
from spork_cli.auth.mint import mint
from spork_cli.auth.verify import Verifier
from tests.auth.keyring import (
    NOW,
    OTHER_SECRET,
    SECRET,
    auth,
    claims,
    clock,
    forge_hmac,
    segment,
    sign,
)

ORDER = [
    "format",
    "algorithm",
    "key",
    "signature",
    "exp",
    "nbf",
    "iat",
    "iss",
    "aud",
    "grants",
    "revoked",
    "roles",
    "scopes",
]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (59.6, "1m"),
        (90, "1m 30s"),
        (180, "3m"),
        (200, "3m 20s"),
        (839.6, "14m"),
        (870, "14m"),
        (7140, "1h 59m"),
        (7200, "2h"),
        (-7200, "2h"),
        (86400 * 3 + 60, "3d"),
        (86400 * 3 + 7200, "3d 2h"),
        (86400 * 40, "40d"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("claim", "offset", "text"),
    [
        ("exp", 14 * 60, "expires in 14m"),
        ("exp", -180, "expired 3m ago"),
        ("exp", 0, "expired 0s ago"),
        ("iat", -7200, "issued 2h ago"),
        ("iat", 300, "issued 5m in the future"),
        ("nbf", 300, "valid in 5m"),
        ("nbf", -60, "valid since 1m ago"),
    ],
)
def test_describe_time(claim: str, offset: float, text: str) -> None:
    assert describe_time(claim, NOW + offset, NOW) == text


def test_inspect_shows_header_claims_and_human_times() -> None:
    token = mint(auth(secret=SECRET), Path(), sub="alice", kid="k1", ttl=14 * 60, now=NOW)
    result = inspect(token, now=NOW)
    assert result["verified"] is False
    assert "WITHOUT verifying" in result["notice"]
    assert result["header"] == {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    assert result["claims"]["sub"] == "alice"
    assert result["times"]["exp"] == {
        "timestamp": int(NOW) + 840,
        "utc": "2023-11-14T22:27:20Z",
        "human": "expires in 14m",
    }
    later = inspect(token, now=NOW + 2 * 3600)
    assert later["times"]["exp"]["human"] == "expired 1h 46m ago"
    assert later["times"]["iat"]["human"] == "issued 2h ago"


def test_inspect_needs_no_key_and_trusts_nothing() -> None:
    forged = forge_hmac({"alg": "HS256"}, claims(exp=NOW - 180, iat="soon"), b"anything")
    result = inspect(f"  {forged}\n", now=NOW)
    assert result["times"]["exp"]["human"] == "expired 3m ago"
    assert result["times"]["iat"]["human"] == "iat is not a number of seconds"
    assert "nbf" in result["times"]


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", f"{segment({'alg': 'x'})}.%%%.x"])
def test_inspect_refuses_what_is_not_a_jwt(token: str) -> None:
    with pytest.raises(TokenRejected) as info:
        inspect(token)
    assert info.value.code == "malformed"


def make(tmp_path: Path, revoked: set[str] | None = None, **fields: Any) -> Verifier:
    async def is_revoked(jti: str) -> bool:
        return revoked is not None and jti in revoked

    config = auth(secret=SECRET, **fields)
    hook = is_revoked if revoked is not None else None
    return Verifier(config, tmp_path, revoked=hook, clock=clock())


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.check: c for c in checks}


async def test_a_good_token_passes_every_check(tmp_path: Path) -> None:
    v = make(tmp_path, set(), issuer="me", audience=["api"])
    token = mint(v.auth, tmp_path, sub="alice", roles=["admin"], scopes=["read"], now=NOW)
    checks = await explain_checks(token, v, roles=["admin"], scopes=["read"])
    assert [c.check for c in checks] == ORDER
    assert all(c.ok for c in checks), checks
    assert accepted(checks)
    found = by_name(checks)
    assert found["signature"].detail == "verified with auth.secret"
    assert found["exp"].detail == "expires in 15m"
    assert found["aud"].detail == "audience 'api'"
    assert found["revoked"].detail.endswith("is not revoked")


async def test_every_failure_is_reported_not_just_the_first(tmp_path: Path) -> None:
    v = make(tmp_path, issuer="me", audience=["api"])
    body = claims(exp=NOW - 60, iss="them", aud="web", roles=["dev"], jti="j1")
    token = sign(body, "HS256", SECRET.encode())
    checks = by_name(await explain_checks(token, v, roles=["admin", "ops"], roles_mode="all"))
    failed = sorted(name for name, c in checks.items() if c.ok is False)
    assert failed == ["aud", "exp", "iss", "roles"]
    assert checks["signature"].ok is True
    assert checks["exp"].detail == "the token expired 1m ago"
    assert checks["roles"].detail == "missing admin, ops; the token has: dev"
    assert checks["revoked"].ok is None
    assert not accepted(list(checks.values()))


async def test_claims_of_a_bad_signature_are_marked_unverified(tmp_path: Path) -> None:
    v = make(tmp_path)
    token = sign(claims(), "HS256", OTHER_SECRET.encode())
    checks = by_name(await explain_checks(token, v))
    assert checks["signature"] == Check("signature", False, "the signature does not match")
    assert checks["exp"].ok is True and checks["exp"].detail.endswith("(unverified)")
    assert not accepted(list(checks.values()))


async def test_a_refused_algorithm_skips_key_and_signature(tmp_path: Path) -> None:
    v = make(tmp_path)
    token = f"{segment({'alg': 'none'})}.{segment(claims())}."
    checks = await explain_checks(token, v)
    assert checks[1:4] == [
        Check("algorithm", False, "unsigned tokens (alg none) are never accepted"),
        Check("key", None, "not looked up: the algorithm is refused"),
        Check("signature", None, "not checked: the algorithm is refused"),
    ]
    assert not accepted(checks)


async def test_an_unknown_kid_is_a_key_failure(tmp_path: Path) -> None:
    v = make(tmp_path, algorithms=["HS256", "RS256"])
    token = f"{segment({'alg': 'RS256', 'kid': 'x'})}.{segment(claims())}.c2ln"
    checks = by_name(await explain_checks(token, v))
    assert checks["key"] == Check("key", False, "no key has kid 'x'")
    assert checks["signature"].ok is None


@pytest.mark.parametrize("token", ["", "junk", "a.b.c"])
async def test_unreadable_tokens_fail_the_format_check_alone(tmp_path: Path, token: str) -> None:
    checks = await explain_checks(token, make(tmp_path))
    assert [(c.check, c.ok) for c in checks] == [("format", False)]


async def test_revocation_from_the_hook_or_the_caller(tmp_path: Path) -> None:
    v = make(tmp_path, {"gone"})
    token = sign(claims(jti="gone"), "HS256", SECRET.encode())
    assert by_name(await explain_checks(token, v))["revoked"].ok is False
    assert by_name(await explain_checks(token, v, revoked=False))["revoked"].ok is True
    bare = sign(claims(), "HS256", SECRET.encode())
    assert by_name(await explain_checks(bare, v))["revoked"].detail.startswith("no jti")


@pytest.mark.parametrize(
    ("held", "required", "mode", "ok", "detail"),
    [
        (
            ["read"],
            ["read", "write"],
            "any",
            True,
            "any of read, write required; the token has: read",
        ),
        ([], ["read", "write"], "any", False, "needs one of read, write; the token has: none"),
        (["read"], ["read", "write"], "all", False, "missing write; the token has: read"),
        (["read"], [], "all", True, "none required (the token has: read)"),
    ],
)
async def test_scope_modes(
    tmp_path: Path, held: list[str], required: list[str], mode: Any, ok: bool, detail: str
) -> None:
    token = sign(claims(scope=" ".join(held)), "HS256", SECRET.encode())
    checks = await explain_checks(token, make(tmp_path), scopes=required, scopes_mode=mode)
    assert by_name(checks)["scopes"] == Check("scopes", ok, detail)


async def test_explain_agrees_with_verify(tmp_path: Path) -> None:
    v = make(tmp_path, audience=["api"], leeway="10s")
    cases = [
        claims(aud="api"),
        claims(aud="web"),
        claims(aud="api", exp=NOW - 5),
        claims(aud="api", exp=NOW - 10),
        claims(aud="api", nbf=NOW + 11),
        claims(aud="api", exp=None),
    ]
    for body in cases:
        token = sign(body, "HS256", SECRET.encode())
        try:
            await v.verify(token)
            verdict = True
        except TokenRejected:
            verdict = False
        assert accepted(await explain_checks(token, v)) is verdict, body
