"""The verified-token LRU: hits skip signature work, never outlive exp, forget, stay bounded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from spork_cli.auth import TokenRejected
from spork_cli.auth.algorithms import VerificationKey
from spork_cli.auth.keys import KeySet
from spork_cli.auth.verify import Verifier
from tests.auth.keyring import NOW, SECRET, Clock, auth, claims, sign


class Spy:
    """Counts key lookups and signature checks: the work a cache hit must skip."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lookups = 0
        self.signatures = 0
        keys_for = KeySet.keys_for
        verify_signature = Verifier.verify_signature

        def counting_keys_for(keyset: KeySet, header: Any) -> tuple[VerificationKey, ...]:
            self.lookups += 1
            return keys_for(keyset, header)

        def counting_signature(
            verifier: Verifier, token: str, header: Any, keys: Sequence[VerificationKey]
        ) -> tuple[VerificationKey, dict[str, Any]]:
            self.signatures += 1
            return verify_signature(verifier, token, header, keys)

        monkeypatch.setattr(KeySet, "keys_for", counting_keys_for)
        monkeypatch.setattr(Verifier, "verify_signature", counting_signature)

    @property
    def work(self) -> tuple[int, int]:
        return self.lookups, self.signatures


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    return Spy(monkeypatch)


def token(**fields: Any) -> str:
    return sign(claims(**fields), "HS256", SECRET.encode())


def make(tmp_path: Path, clock: Clock, revoked: set[str] | None = None, **fields: Any) -> Verifier:
    async def is_revoked(jti: str) -> bool:
        return revoked is not None and jti in revoked

    config = auth(secret=SECRET, **fields)
    return Verifier(
        config, tmp_path, clock=clock, revoked=is_revoked if revoked is not None else None
    )


async def test_a_repeated_token_costs_no_signature_check(tmp_path: Path, spy: Spy) -> None:
    v = make(tmp_path, Clock(NOW))
    t = token(jti="a")
    first = await v.verify(t)
    assert spy.work == (1, 1)
    for _ in range(5):
        assert await v.verify(t) is first
    assert spy.work == (1, 1)
    await v.verify(token(jti="b"))
    assert spy.work == (2, 2)


async def test_a_cached_token_is_never_served_past_its_exp(tmp_path: Path, spy: Spy) -> None:
    clock = Clock(NOW)
    v = make(tmp_path, clock, leeway="30s")
    t = token(exp=NOW + 60)
    await v.verify(t)
    clock.advance(59)
    await v.verify(t)
    assert spy.work == (1, 1)
    # Inside the leeway the token is still good, but only a full verification may say so.
    clock.advance(1)
    await v.verify(t)
    assert spy.work == (2, 2)
    clock.advance(30)
    with pytest.raises(TokenRejected) as info:
        await v.verify(t)
    assert info.value.code == "expired"
    assert len(v.cache) == 0


async def test_entries_without_exp_live_at_most_max_age(tmp_path: Path, spy: Spy) -> None:
    clock = Clock(NOW)
    v = make(tmp_path, clock, require_exp=False)
    t = token(exp=None)
    await v.verify(t)
    clock.advance(299)
    await v.verify(t)
    assert spy.work == (1, 1)
    clock.advance(1)
    await v.verify(t)
    assert spy.work == (2, 2)


async def test_forget_drops_a_token_by_jti(tmp_path: Path, spy: Spy) -> None:
    v = make(tmp_path, Clock(NOW))
    a, b = token(jti="a"), token(jti="b")
    await v.verify(a)
    await v.verify(b)
    v.forget("a")
    v.forget("unknown")
    assert len(v.cache) == 1
    await v.verify(b)
    assert spy.work == (2, 2)
    await v.verify(a)
    assert spy.work == (3, 3)


async def test_a_revoked_token_is_refused_even_from_the_cache(tmp_path: Path, spy: Spy) -> None:
    revoked: set[str] = set()
    v = make(tmp_path, Clock(NOW), revoked, revocation_cache_ttl="0s")
    t = token(jti="r1")
    await v.verify(t)
    revoked.add("r1")
    with pytest.raises(TokenRejected) as info:
        await v.verify(t)
    assert (info.value.code, info.value.reason) == ("revoked", "the token has been revoked")
    assert len(v.cache) == 0
    with pytest.raises(TokenRejected):
        await v.verify(t)
    assert spy.signatures == 2


@pytest.mark.observes("auth.cache_size")
async def test_the_cache_is_bounded_and_evicts_the_least_recent(tmp_path: Path, spy: Spy) -> None:
    v = make(tmp_path, Clock(NOW), cache_size=3)
    tokens = [token(jti=str(i)) for i in range(5)]
    for t in tokens[:3]:
        await v.verify(t)
    await v.verify(tokens[0])  # now the most recent
    for t in tokens[3:]:
        await v.verify(t)
    assert len(v.cache) == 3
    assert spy.signatures == 5
    await v.verify(tokens[0])
    await v.verify(tokens[4])
    assert spy.signatures == 5
    await v.verify(tokens[1])
    assert spy.signatures == 6


@pytest.mark.observes("auth.cache_size")
async def test_size_zero_disables_the_cache(tmp_path: Path, spy: Spy) -> None:
    v = make(tmp_path, Clock(NOW), cache_size=0)
    t = token()
    await v.verify(t)
    await v.verify(t)
    assert spy.signatures == 2
    assert len(v.cache) == 0


async def test_rejected_tokens_are_not_cached(tmp_path: Path, spy: Spy) -> None:
    v = make(tmp_path, Clock(NOW), issuer="me")
    t = token(iss="someone-else")
    for _ in range(2):
        with pytest.raises(TokenRejected):
            await v.verify(t)
    assert spy.signatures == 2
    assert len(v.cache) == 0


@pytest.mark.observes("auth.revocation_cache_ttl")
async def test_a_remembered_token_is_asked_about_once_per_revocation_cache_ttl(
    tmp_path: Path,
) -> None:
    asked: list[str] = []
    revoked: set[str] = set()

    async def is_revoked(jti: str) -> bool:
        asked.append(jti)
        return jti in revoked

    clock = Clock(NOW)
    v = Verifier(
        auth(secret=SECRET, revocation_cache_ttl="1s"), tmp_path, clock=clock, revoked=is_revoked
    )
    t = token(jti="r2")
    for _ in range(5):
        await v.verify(t)
    assert asked == ["r2"]  # the first verification asked; the next four rode on it
    revoked.add("r2")
    clock.advance(0.5)
    await v.verify(t)  # revoked elsewhere, but the check of 0.5 s ago still holds
    clock.advance(0.5)
    with pytest.raises(TokenRejected) as info:
        await v.verify(t)
    assert info.value.code == "revoked"
    assert asked == ["r2", "r2"]
