"""Endpoint selection: round robin, smooth weighted, least connections, power of two choices."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from spork_cli.gateway.balancer import Balancer, EndpointState
from tests.gateway.conftest import Gateway, single_service
from tests.support import UpstreamFactory

STRATEGIES = ("round_robin", "weighted", "least_conn", "p2c")


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def endpoints(*weights: int) -> list[EndpointState]:
    return [EndpointState(f"http://10.0.0.{i}:80", weight) for i, weight in enumerate(weights, 1)]


def names(picks: list[EndpointState | None], all_: list[EndpointState]) -> list[str]:
    letters = {id(e): "abcdefgh"[i] for i, e in enumerate(all_)}
    return [letters[id(p)] if p is not None else "-" for p in picks]


def test_round_robin_cycles_evenly() -> None:
    eps = endpoints(1, 1, 1)
    balancer = Balancer(eps, "round_robin")
    picks = [balancer.pick() for _ in range(30)]
    assert Counter(id(p) for p in picks) == {id(e): 10 for e in eps}
    # Every window of three consecutive picks holds each endpoint once.
    for start in range(len(picks) - 2):
        assert {id(p) for p in picks[start : start + 3]} == {id(e) for e in eps}


def test_weighted_gives_exact_shares_over_every_full_cycle() -> None:
    eps = endpoints(3, 1)
    balancer = Balancer(eps, "weighted")
    for _ in range(5):
        cycle = [balancer.pick() for _ in range(4)]
        assert Counter(names(cycle, eps)) == {"a": 3, "b": 1}


def test_weighted_spreads_the_light_endpoint_between_heavy_picks() -> None:
    # With 3:1 some heavy picks must be adjacent; smoothness means the light endpoint comes
    # exactly once in every four picks, so runs of the heavy one never exceed three.
    eps = endpoints(3, 1)
    balancer = Balancer(eps, "weighted")
    sequence = "".join(names([balancer.pick() for _ in range(40)], eps))
    assert "bb" not in sequence
    assert "aaaa" not in sequence
    for start in range(len(sequence) - 3):
        assert sequence[start : start + 4].count("b") == 1


def test_weighted_matches_nginx_smooth_sequence() -> None:
    # nginx's own example (ngx_http_upstream_round_robin.c): weights 5, 1, 1 give
    # a a b a c a a, never the bursty a a a a a b c of plain weighted round robin.
    eps = endpoints(5, 1, 1)
    balancer = Balancer(eps, "weighted")
    sequence = "".join(names([balancer.pick() for _ in range(14)], eps))
    assert sequence == "aabacaa" * 2


def test_weighted_never_picks_weight_zero_beside_others() -> None:
    eps = endpoints(0, 2, 1)
    balancer = Balancer(eps, "weighted")
    picks = names([balancer.pick() for _ in range(30)], eps)
    assert Counter(picks) == {"b": 20, "c": 10}


def test_least_conn_picks_the_least_busy() -> None:
    eps = endpoints(1, 1, 1)
    eps[0].in_flight, eps[1].in_flight, eps[2].in_flight = 4, 1, 7
    balancer = Balancer(eps, "least_conn", rng=random.Random(1))
    assert all(balancer.pick() is eps[1] for _ in range(20))
    eps[1].in_flight = 9
    assert balancer.pick() is eps[0]


def test_least_conn_breaks_ties_among_the_least_busy_only() -> None:
    eps = endpoints(1, 1, 1)
    eps[0].in_flight, eps[1].in_flight, eps[2].in_flight = 2, 0, 0
    balancer = Balancer(eps, "least_conn", rng=random.Random(3))
    picks = Counter(id(balancer.pick()) for _ in range(200))
    assert set(picks) == {id(eps[1]), id(eps[2])}


@pytest.mark.parametrize("seed", range(5))
def test_p2c_never_picks_the_busier_of_two(seed: int) -> None:
    eps = endpoints(1, 1)
    eps[0].in_flight, eps[1].in_flight = 3, 1
    balancer = Balancer(eps, "p2c", rng=random.Random(seed))
    assert all(balancer.pick() is eps[1] for _ in range(50))


@pytest.mark.parametrize("seed", range(5))
def test_p2c_never_picks_the_busiest_endpoint(seed: int) -> None:
    eps = endpoints(1, 1, 1, 1)
    for endpoint, load in zip(eps, (2, 9, 0, 5), strict=True):
        endpoint.in_flight = load
    balancer = Balancer(eps, "p2c", rng=random.Random(seed))
    picks = Counter(id(balancer.pick()) for _ in range(200))
    assert id(eps[1]) not in picks
    assert id(eps[2]) in picks  # the least busy is chosen whenever it is sampled


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_exclude_skips_tried_endpoints(strategy: str) -> None:
    eps = endpoints(1, 1, 1)
    balancer = Balancer(eps, strategy, rng=random.Random(0))
    for _ in range(20):
        picked = balancer.pick(exclude=[eps[0], eps[2]])
        assert picked is eps[1]
    for _ in range(20):
        assert balancer.pick(exclude=[eps[1]]) in (eps[0], eps[2])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_exclude_of_every_endpoint_falls_back_to_an_available_one(strategy: str) -> None:
    eps = endpoints(1, 1)
    eps[1].healthy = False
    balancer = Balancer(eps, strategy, rng=random.Random(0))
    assert balancer.pick(exclude=eps) is eps[0]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_unavailable_endpoints_are_skipped(strategy: str) -> None:
    clock = Clock()
    eps = endpoints(1, 1, 1)
    eps[0].healthy = False
    eps[2].ejected_until = clock.now + 5
    balancer = Balancer(eps, strategy, rng=random.Random(0), clock=clock)
    assert all(balancer.pick() is eps[1] for _ in range(20))
    clock.now += 5  # the ejection ends at its deadline
    picks = {id(balancer.pick()) for _ in range(40)}
    assert picks == {id(eps[1]), id(eps[2])}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_all_unavailable_gives_none(strategy: str) -> None:
    clock = Clock()
    eps = endpoints(1, 1)
    eps[0].healthy = False
    eps[1].ejected_until = clock.now + 1
    balancer = Balancer(eps, strategy, rng=random.Random(0), clock=clock)
    assert balancer.pick() is None
    assert balancer.pick(exclude=[eps[0]]) is None


def test_endpoint_is_ejected_after_threshold_failures_for_the_cooldown() -> None:
    endpoint = EndpointState("http://10.0.0.1", 1)
    assert endpoint.record_failure(threshold=3, cooldown=10.0, now=100.0) is False
    assert endpoint.record_failure(threshold=3, cooldown=10.0, now=100.0) is False
    assert endpoint.record_failure(threshold=3, cooldown=10.0, now=100.0) is True
    assert not endpoint.available(109.9)
    assert endpoint.available(110.0)


def test_success_resets_consecutive_failures() -> None:
    endpoint = EndpointState("http://10.0.0.1", 1)
    endpoint.record_failure(threshold=2, cooldown=10.0, now=0.0)
    endpoint.record_success()
    assert endpoint.record_failure(threshold=2, cooldown=10.0, now=0.0) is False
    assert endpoint.available(0.0)


@pytest.mark.observes("services.balance", "services.endpoints.weight")
@pytest.mark.parametrize(
    ("balance", "shares"), [("weighted", {"a": 6, "b": 2}), ("round_robin", {"a": 4, "b": 4})]
)
async def test_the_gateway_spreads_requests_as_balance_and_weights_say(
    gateway: Gateway, upstream_factory: UpstreamFactory, balance: str, shares: dict[str, int]
) -> None:
    a, b = await upstream_factory.many("a", "b")
    data = single_service(a.url, b.url, balance=balance)
    data["services"][0]["endpoints"] = [{"url": a.url, "weight": 3}, {"url": b.url, "weight": 1}]
    client = await gateway(data)
    seen: Counter[str] = Counter()
    for _ in range(8):
        async with client.get("/x") as response:
            assert response.status == 200
            seen[response.headers["X-Upstream"]] += 1
    assert seen == shares  # round robin leaves weights out
