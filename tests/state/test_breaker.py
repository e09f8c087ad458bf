"""The circuit breaker contract on every backend (memory, a real redis-server, a real 3-node
cluster), a model test of the memory backend against a small reference state machine, and the
pure parts of spork_cli.policies.breaker (policy from config, failures, the per-process cache)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from spork_cli.config.model import Breaker, State
from spork_cli.policies.breaker import BreakerCache, BreakerPolicy, is_failure
from spork_cli.state import BreakerDecision, BreakerState, breaker_key
from spork_cli.state.memory import MemoryStore
from spork_cli.state.open import store_from_config
from tests.state.conftest import Backend

PREFIX = "spork"
KEY = breaker_key(PREFIX, "demo")
# Short cooldowns so that Redis tests wait for real time only a few hundred ms.
COOLDOWN = 0.15


async def trip(backend: Backend, policy: BreakerPolicy) -> BreakerState:
    state = None
    for _ in range(policy.failures):
        state = await backend.store.breaker_record(KEY, policy, False, False)
    assert state is not None and state.state == "open" and state.changed
    return state


async def time_to_live(backend: Backend) -> float | None:
    """Seconds until the breaker key expires; None when it never does."""
    if backend.memory is not None:
        assert KEY in backend.memory._breakers.entries
        expires = backend.memory._breakers.expires(KEY)
        return None if expires is None else expires - backend.now[0]
    milliseconds = await backend.store.link.call(KEY, "PTTL", KEY)
    return None if milliseconds == -1 else milliseconds / 1000


def policy(**changes: Any) -> BreakerPolicy:
    base = BreakerPolicy(failures=3, cooldown=COOLDOWN, max_cooldown=1.0)
    return replace(base, **changes)


# -- the contract ------------------------------------------------------------------------------


async def test_an_unknown_breaker_is_closed(backend: Backend) -> None:
    assert await backend.store.breaker_read(KEY) is None
    decision = await backend.store.breaker_allow(KEY, policy())
    assert decision == BreakerDecision("closed", True, 0.0)
    assert await backend.store.breaker_read(KEY) is None  # a closed allow writes nothing


async def test_consecutive_failures_open_it(backend: Backend) -> None:
    p = policy()
    for count in (1, 2):
        state = await backend.store.breaker_record(KEY, p, False, False)
        assert (state.state, state.failures, state.changed) == ("closed", count, False)
        assert (await backend.store.breaker_allow(KEY, p)).allowed
    before = time.time()
    state = await backend.store.breaker_record(KEY, p, False, False)
    assert (state.state, state.failures, state.trips, state.changed) == ("open", 3, 1, True)
    assert state.cooldown == pytest.approx(COOLDOWN)
    assert state.opened_at is not None and before - 1 < state.opened_at < time.time() + 1


async def test_a_success_resets_the_consecutive_count(backend: Backend) -> None:
    p = policy()
    for success in (False, False, True, False, False):
        state = await backend.store.breaker_record(KEY, p, success, False)
    assert (state.state, state.failures) == ("closed", 2)
    state = await backend.store.breaker_record(KEY, p, False, False)
    assert state.state == "open"


async def test_the_ratio_trips_only_from_min_requests(backend: Backend) -> None:
    p = policy(failures=100, failure_ratio=0.5, window=60.0, min_requests=4)
    for _ in range(3):
        state = await backend.store.breaker_record(KEY, p, False, False)
    assert (state.state, state.window_requests, state.window_failures) == ("closed", 3, 3)
    state = await backend.store.breaker_record(KEY, p, True, False)  # 3/4 but a success
    assert (state.state, state.window_requests) == ("closed", 4)
    state = await backend.store.breaker_record(KEY, p, False, False)
    assert (state.state, state.window_requests, state.window_failures) == ("open", 5, 4)


async def test_the_ratio_stays_below_the_threshold(backend: Backend) -> None:
    p = policy(failures=100, failure_ratio=0.5, window=60.0, min_requests=4)
    for success in (True, True, True, False, True, False):  # 2 of 6 failed
        state = await backend.store.breaker_record(KEY, p, success, False)
    assert (state.state, state.window_requests, state.window_failures) == ("closed", 6, 2)
    state = await backend.store.breaker_record(KEY, p, False, False)  # 3 of 7
    assert state.state == "closed"
    state = await backend.store.breaker_record(KEY, p, False, False)  # 4 of 8
    assert state.state == "open"


async def test_the_ratio_counts_only_within_the_window(backend: Backend) -> None:
    p = policy(failures=100, failure_ratio=0.5, window=0.3, min_requests=4)
    for _ in range(3):
        await backend.store.breaker_record(KEY, p, False, False)
    await backend.wait(0.3 + 0.03)  # the window plus a bucket: all three have left
    state = await backend.store.breaker_record(KEY, p, False, False)
    assert (state.state, state.window_requests, state.window_failures) == ("closed", 1, 1)
    for _ in range(2):
        state = await backend.store.breaker_record(KEY, p, False, False)
    assert state.state == "closed"
    state = await backend.store.breaker_record(KEY, p, False, False)
    assert (state.state, state.window_requests) == ("open", 4)


async def test_open_denies_until_the_cooldown_is_over(backend: Backend) -> None:
    p = policy()
    await trip(backend, p)
    denied = await backend.store.breaker_allow(KEY, p)
    assert (denied.state, denied.allowed, denied.probe) == ("open", False, False)
    assert COOLDOWN - 0.1 < denied.retry_after <= COOLDOWN + 1e-6
    # outcomes of requests admitted before it opened change nothing
    late = await backend.store.breaker_record(KEY, p, True, False)
    assert (late.state, late.changed, late.trips) == ("open", False, 1)
    await backend.wait(denied.retry_after)
    probe = await backend.store.breaker_allow(KEY, p)
    assert (probe.state, probe.allowed, probe.probe, probe.changed) == ("half_open", 1, 1, 1)
    assert probe.failures == 3


async def test_half_open_admits_exactly_the_probes(backend: Backend) -> None:
    p = policy(half_open_probes=2)
    await trip(backend, p)
    await backend.wait(COOLDOWN)
    decisions = [await backend.store.breaker_allow(KEY, p) for _ in range(4)]
    assert [d.probe for d in decisions] == [True, True, False, False]
    assert [d.allowed for d in decisions] == [True, True, False, False]
    assert [d.changed for d in decisions] == [True, False, False, False]
    assert all(d.state == "half_open" for d in decisions)
    assert 0 < decisions[-1].retry_after <= COOLDOWN
    state = await backend.store.breaker_read(KEY)
    assert (state.state, state.probes) == ("half_open", 2)
    # a non-probe outcome (admitted while closed) does not decide anything
    ignored = await backend.store.breaker_record(KEY, p, True, False)
    assert (ignored.state, ignored.changed) == ("half_open", False)


async def test_probe_successes_close_it(backend: Backend) -> None:
    p = policy(half_open_probes=2)
    await trip(backend, p)
    await backend.wait(COOLDOWN)
    assert (await backend.store.breaker_allow(KEY, p)).probe
    assert (await backend.store.breaker_allow(KEY, p)).probe
    first = await backend.store.breaker_record(KEY, p, True, True)
    assert (first.state, first.changed) == ("half_open", False)  # every probe must succeed
    closed = await backend.store.breaker_record(KEY, p, True, True)
    assert (closed.state, closed.changed, closed.failures, closed.trips) == ("closed", 1, 0, 0)
    assert closed.opened_at is None and closed.next_probe_at is None
    assert (await backend.store.breaker_allow(KEY, p)) == BreakerDecision("closed", True, 0.0)


async def test_probe_failure_reopens_with_a_growing_capped_cooldown(backend: Backend) -> None:
    p = policy(failures=1, cooldown=0.1, cooldown_multiplier=2.0, max_cooldown=0.3)
    state = await trip(backend, p)
    cooldowns = [state.cooldown]
    for _ in range(2):
        await backend.wait(state.cooldown)
        assert (await backend.store.breaker_allow(KEY, p)).probe
        state = await backend.store.breaker_record(KEY, p, False, True)
        assert (state.state, state.changed) == ("open", True)
        denied = await backend.store.breaker_allow(KEY, p)
        assert state.cooldown - 0.1 < denied.retry_after <= state.cooldown + 1e-6
        cooldowns.append(state.cooldown)
    assert cooldowns == pytest.approx([0.1, 0.2, 0.3])  # 0.4 capped at max_cooldown
    assert state.trips == 3
    await backend.wait(state.cooldown)
    assert (await backend.store.breaker_allow(KEY, p)).probe
    assert (await backend.store.breaker_record(KEY, p, True, True)).state == "closed"
    state = await trip(backend, p)  # a successful close ends the series
    assert (state.trips, state.cooldown) == (1, pytest.approx(0.1))


async def test_an_unanswered_probe_frees_its_slot_after_a_cooldown(backend: Backend) -> None:
    p = policy()
    await trip(backend, p)
    await backend.wait(COOLDOWN)
    assert (await backend.store.breaker_allow(KEY, p)).probe
    assert not (await backend.store.breaker_allow(KEY, p)).allowed
    await backend.wait(COOLDOWN)
    again = await backend.store.breaker_allow(KEY, p)
    assert (again.probe, again.changed) == (True, False)


async def test_forced_states_are_honoured_and_cleared(backend: Backend) -> None:
    p = policy()
    forced = await backend.store.breaker_force(KEY, "open")
    assert (forced.state, forced.forced, forced.next_probe_at) == ("open", "open", None)
    denied = await backend.store.breaker_allow(KEY, p)
    assert (denied.state, denied.allowed, denied.retry_after) == ("open", False, COOLDOWN)
    ignored = await backend.store.breaker_record(KEY, p, False, False)  # nothing counts
    assert (ignored.state, ignored.failures, ignored.forced) == ("open", 0, "open")
    assert await time_to_live(backend) is None  # a force is kept until cleared

    cleared = await backend.store.breaker_force(KEY, None)
    assert (cleared.state, cleared.forced) == ("closed", None)
    assert (await backend.store.breaker_allow(KEY, p)).allowed
    assert await time_to_live(backend) is not None

    await trip(backend, p)
    held = await backend.store.breaker_force(KEY, "closed")
    assert (held.state, held.forced, held.opened_at) == ("closed", "closed", None)
    allowed = await backend.store.breaker_allow(KEY, p)
    assert (allowed.state, allowed.allowed, allowed.probe) == ("closed", True, False)
    released = await backend.store.breaker_force(KEY, None)
    assert (released.state, released.forced, released.trips) == ("open", None, 1)
    assert not (await backend.store.breaker_allow(KEY, p)).allowed  # resumes where it was


async def test_clearing_no_force_on_no_breaker_is_a_no_op(backend: Backend) -> None:
    assert await backend.store.breaker_force(KEY, None) is None
    assert await backend.store.breaker_read(KEY) is None


async def test_reset_forgets_everything(backend: Backend) -> None:
    p = policy()
    await trip(backend, p)
    await backend.store.breaker_force(KEY, "open")
    await backend.store.breaker_reset(KEY)
    assert await backend.store.breaker_read(KEY) is None
    assert (await backend.store.breaker_allow(KEY, p)).allowed
    state = await backend.store.breaker_record(KEY, p, False, False)
    assert (state.state, state.failures, state.trips) == ("closed", 1, 0)


async def test_read_gives_what_the_cli_shows(backend: Backend) -> None:
    p = policy(failure_ratio=0.9, window=60.0)
    before = time.time()
    opened = await trip(backend, p)
    state = await backend.store.breaker_read(KEY)
    assert state is not None and state.opened_at is not None and opened.opened_at is not None
    # memory reports times on the wall clock at the moment of the call: equal within a ms
    assert state.opened_at == pytest.approx(opened.opened_at, abs=1e-3)
    assert replace(state, opened_at=0, next_probe_at=0) == replace(
        opened, changed=False, opened_at=0, next_probe_at=0
    )
    assert (state.state, state.failures, state.trips, state.forced) == ("open", 3, 1, None)
    assert (state.window_requests, state.window_failures, state.probes) == (3, 3, 0)
    assert state.opened_at is not None and before - 1 < state.opened_at < time.time() + 1
    assert state.next_probe_at == pytest.approx(state.opened_at + COOLDOWN, abs=1e-3)
    await backend.wait(COOLDOWN)
    assert (await backend.store.breaker_read(KEY)).state == "open"  # reading changes nothing
    assert (await backend.store.breaker_allow(KEY, p)).probe
    half = await backend.store.breaker_read(KEY)
    assert (half.state, half.probes) == ("half_open", 1)
    assert half.next_probe_at is not None and half.next_probe_at > half.opened_at


async def test_an_idle_breaker_expires(backend: Backend) -> None:
    p = policy(max_cooldown=0.2)
    await backend.store.breaker_record(KEY, p, False, False)
    ttl = await time_to_live(backend)
    assert p.idle_ttl == pytest.approx(0.6)
    assert ttl is not None and 0.5 < ttl <= p.idle_ttl + 0.002  # Redis rounds up to the ms
    if backend.memory is not None:
        await backend.wait(p.idle_ttl)
        assert await backend.store.breaker_read(KEY) is None


async def test_concurrent_allows_in_half_open_admit_exactly_the_probes(backend: Backend) -> None:
    p = policy(half_open_probes=3)
    await trip(backend, p)
    await backend.wait(COOLDOWN)
    decisions = await asyncio.gather(*(backend.store.breaker_allow(KEY, p) for _ in range(50)))
    assert sum(d.probe for d in decisions) == 3
    assert sum(d.allowed for d in decisions) == 3
    assert sum(d.changed for d in decisions) == 1
    assert {d.state for d in decisions} == {"half_open"}


async def test_breakers_are_independent(backend: Backend) -> None:
    p = policy()
    await trip(backend, p)
    other = breaker_key(PREFIX, "other")
    assert (await backend.store.breaker_allow(other, p)).allowed
    assert await backend.store.breaker_read(other) is None


async def test_cluster_breaker_keys_live_in_their_tag_slot(redis_cluster_url: str) -> None:
    store: Any = store_from_config(State(backend="redis", url=redis_cluster_url, timeout="1s"))
    try:
        slots = set()
        for service in ("users", "billing", "demo", "a-b_c"):
            composed = breaker_key(PREFIX, service)
            slot = await store.link.call(composed, "CLUSTER", "KEYSLOT", composed)
            tag = f"cb:{service}"
            assert slot == await store.link.call(tag, "CLUSTER", "KEYSLOT", tag)
            await store.breaker_record(composed, policy(failure_ratio=0.5), False, False)
            assert await store.link.call(composed, "EXISTS", composed)
            slots.add(slot)
        assert len(slots) > 1
    finally:
        await store.close()


# -- model test: the memory backend against a reference state machine -------------------------


class Reference:
    """The breaker as the spork_cli.policies.breaker docstring describes it, kept plainly."""

    def __init__(self, p: BreakerPolicy) -> None:
        self.p = p
        self.saved_at: float | None = None
        self.clear()

    def clear(self) -> None:
        self.state = "closed"
        self.failures = self.trips = self.probes = self.ok = 0
        self.cooldown = self.opened_at = self.probe_until = 0.0
        self.outcomes: list[tuple[int, bool]] = []  # (bucket, failed)

    def expire(self, now: float) -> None:
        if self.saved_at is not None and self.saved_at + self.p.idle_ttl <= now:
            self.clear()
            self.saved_at = None

    def counts(self, now: float) -> tuple[int, int]:
        if self.p.failure_ratio is None:
            return 0, 0
        current = math.floor(now / (self.p.window / 10))
        live = [failed for bucket, failed in self.outcomes if bucket > current - 10]
        return len(live), sum(live)

    def allow(self, now: float) -> tuple[str, bool, bool, float]:
        self.expire(now)
        if self.state == "closed":
            return "closed", True, False, 0.0
        if self.state == "open":
            if now < self.opened_at + self.cooldown:
                return "open", False, False, self.opened_at + self.cooldown - now
            self.state, self.probes, self.ok = "half_open", 0, 0
        n = self.p.half_open_probes
        if self.probes >= n and self.ok < n and now >= self.probe_until:
            self.probes = self.ok
        if self.probes < n:
            self.probes += 1
            self.probe_until = now + self.cooldown
            self.saved_at = now
            return "half_open", True, True, 0.0
        return "half_open", False, False, max(self.probe_until - now, 0.0)

    def record(self, now: float, success: bool, probe: bool) -> tuple[str, int, int, float, bool]:
        self.expire(now)
        changed = False
        if self.state == "closed":
            self.failures = 0 if success else self.failures + 1
            tripped = not success and self.failures >= self.p.failures
            if self.p.failure_ratio is not None:
                self.outcomes.append((math.floor(now / (self.p.window / 10)), not success))
                total, failed = self.counts(now)
                ratio = failed >= self.p.failure_ratio * total - 1e-9
                tripped = tripped or (not success and total >= self.p.min_requests and ratio)
            if tripped:
                self.trip(now)
                changed = True
        elif self.state == "half_open" and probe:
            if not success:
                self.trip(now)
                changed = True
            else:
                self.ok += 1
                if self.ok >= self.p.half_open_probes:
                    self.clear()
                    changed = True
        else:
            return self.state, self.failures, self.trips, self.cooldown, False
        self.saved_at = now
        return self.state, self.failures, self.trips, self.cooldown, changed

    def trip(self, now: float) -> None:
        self.trips += 1
        cap = max(self.p.max_cooldown, self.p.cooldown)
        self.cooldown = min(self.p.cooldown * self.p.cooldown_multiplier ** (self.trips - 1), cap)
        self.state, self.opened_at, self.probes, self.ok = "open", now, 0, 0


policies = st.builds(
    BreakerPolicy,
    failures=st.integers(1, 4),
    failure_ratio=st.one_of(st.none(), st.sampled_from([0.25, 0.5, 1.0])),
    window=st.sampled_from([0.5, 2.0]),
    min_requests=st.integers(1, 6),
    cooldown=st.sampled_from([0.1, 0.25, 1.0]),
    max_cooldown=st.sampled_from([0.1, 0.5, 3.0]),
    cooldown_multiplier=st.sampled_from([1.0, 1.5, 2.0]),
    half_open_probes=st.integers(1, 3),
)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("allow"), st.just(0)),
        st.tuples(st.just("ok"), st.integers(0, 3)),  # which outstanding request finished
        st.tuples(st.just("fail"), st.integers(0, 3)),
        st.tuples(st.just("wait"), st.sampled_from([10, 50, 100, 260, 1000, 4000])),  # ms
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(p=policies, steps=actions)
def test_memory_breaker_matches_the_reference(
    p: BreakerPolicy, steps: list[tuple[str, int]]
) -> None:
    clock = [1000.0]
    store = MemoryStore(State(), clock=lambda: clock[0])
    reference = Reference(p)
    outstanding: list[bool] = []  # probe flags of admitted requests still in flight

    async def run() -> None:
        elapsed = 0
        for action, arg in steps:
            if action == "wait":
                elapsed += arg
                clock[0] = 1000 + elapsed / 1000
                continue
            now = clock[0]
            if action == "allow":
                got = await store.breaker_allow(KEY, p)
                state, allowed, probe, retry = reference.allow(now)
                assert (got.state, got.allowed, got.probe) == (state, allowed, probe), elapsed
                assert got.retry_after == pytest.approx(retry, abs=1e-9)
                if got.allowed:
                    outstanding.append(got.probe)
                continue
            probe = outstanding.pop(arg % len(outstanding)) if outstanding else False
            success = action == "ok"
            result = await store.breaker_record(KEY, p, success, probe)
            state, failures, trips, cooldown, changed = reference.record(now, success, probe)
            got_record = (result.state, result.failures, result.trips, result.changed)
            assert got_record == (state, failures, trips, changed), elapsed
            assert result.cooldown == pytest.approx(cooldown)
            requests, failed = reference.counts(now)
            if result.state == "closed":
                assert (result.window_requests, result.window_failures) == (requests, failed)

    asyncio.run(run())


# -- policy, failures, and the per-process cache ----------------------------------------------


def test_policy_from_config() -> None:
    config = Breaker.model_validate(
        {
            "failures": 4,
            "failure_ratio": 0.5,
            "window": "10s",
            "min_requests": 8,
            "cooldown": "2s",
            "max_cooldown": "1m",
            "cooldown_multiplier": 2,
            "half_open_probes": 3,
            "failure_on": ["timeout"],
            "failure_statuses": [502, 503],
        }
    )
    p = BreakerPolicy.from_config(config)
    statuses = frozenset({502, 503})
    assert p == BreakerPolicy(4, 0.5, 10.0, 8, 2.0, 60.0, 2.0, 3, frozenset({"timeout"}), statuses)
    assert [p.cooldown_for(n) for n in (1, 2, 3, 6, 7)] == [2.0, 4.0, 8.0, 60.0, 60.0]
    assert p.idle_ttl == 180.0
    assert BreakerPolicy.from_config(Breaker()) == BreakerPolicy()
    assert BreakerPolicy().idle_ttl == 900.0


@pytest.mark.parametrize(
    "changes",
    [
        {"failures": 0},
        {"half_open_probes": 0},
        {"min_requests": 0},
        {"failure_ratio": 0.0},
        {"failure_ratio": 1.5},
        {"failure_ratio": 0.5, "window": 0.0},
        {"cooldown": 0.0},
        {"cooldown_multiplier": 0.5},
    ],
)
def test_policy_rejects_nonsense(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(**changes)


def test_what_counts_as_a_failure() -> None:
    p = BreakerPolicy(failure_on=frozenset({"connect"}), failure_statuses=frozenset({503}))
    assert is_failure(p, None, "connect")
    assert not is_failure(p, None, "timeout")
    assert is_failure(p, 503, None)
    assert not is_failure(p, 500, None)
    assert not is_failure(p, 200, None)
    assert not is_failure(p, None, None)
    assert is_failure(BreakerPolicy(), 504, None) and is_failure(BreakerPolicy(), None, "timeout")


def test_breaker_key_layout() -> None:
    assert breaker_key("spork", "users") == "spork:{cb:users}"


class CountingStore(MemoryStore):
    def __init__(self, clock: list[float]) -> None:
        super().__init__(State(), clock=lambda: clock[0])
        self.calls: list[str] = []

    async def breaker_allow(self, key: str, policy: BreakerPolicy) -> BreakerDecision:
        self.calls.append("allow")
        return await super().breaker_allow(key, policy)

    async def breaker_record(
        self, key: str, policy: BreakerPolicy, success: bool, probe: bool
    ) -> BreakerState:
        self.calls.append("record")
        return await super().breaker_record(key, policy, success, probe)


async def test_the_cache_spares_round_trips_for_at_most_its_ttl() -> None:
    now = [1000.0]
    store = CountingStore(now)
    cache = BreakerCache(store, PREFIX, clock=lambda: now[0])
    p = policy(failures=2, cooldown=1.0)
    for _ in range(5):
        assert (await cache.allow("demo", p)).allowed
    assert store.calls == ["allow"]
    await cache.record("demo", p, True, False)  # learns: closed, no failures
    await cache.record("demo", p, True, False)  # changes nothing: not sent
    assert store.calls == ["allow", "record"]
    now[0] += 0.25
    assert (await cache.allow("demo", p)).allowed
    assert store.calls == ["allow", "record", "allow"]

    # another instance opens the breaker: seen once the entry is older than the ttl
    await store.breaker_record(KEY, p, False, False)
    await store.breaker_record(KEY, p, False, False)
    assert (await cache.allow("demo", p)).allowed  # stale, within 250 ms
    now[0] += 0.25
    denied = await cache.allow("demo", p)
    assert (denied.state, denied.allowed, denied.retry_after) == ("open", False, 0.75)
    calls = len(store.calls)
    now[0] += 0.1
    cached = await cache.allow("demo", p)
    assert (cached.allowed, cached.retry_after) == (False, pytest.approx(0.65))
    assert len(store.calls) == calls


async def test_the_cache_follows_its_own_transitions_and_logs_them() -> None:
    now = [1000.0]
    store = CountingStore(now)
    cache = BreakerCache(store, PREFIX, clock=lambda: now[0])
    p = policy(failures=2, cooldown=1.0)
    with capture_logs() as logs:
        assert (await cache.allow("demo", p)).allowed
        await cache.record("demo", p, False, False)
        await cache.record("demo", p, False, False)
        assert not (await cache.allow("demo", p)).allowed  # asks the store at once
        now[0] += 1.0
        probe = await cache.allow("demo", p)
        assert probe.probe
        assert not (await cache.allow("demo", p)).allowed  # half-open: the only probe is out
        await cache.record("demo", p, True, True)
        assert (await cache.allow("demo", p)).allowed
    assert [(e["event"], e["service"], e["state"], e["failures"]) for e in logs] == [
        ("breaker opened", "demo", "open", 2),
        ("breaker half-open", "demo", "half_open", 2),
        ("breaker closed", "demo", "closed", 0),
    ]
    assert logs[0]["log_level"] == "warning" and logs[0]["cooldown"] == 1.0
    state = await cache.read("demo")
    assert state is not None and state.state == "closed"
    cache.invalidate("demo")
    cache.invalidate()
