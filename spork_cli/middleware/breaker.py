"""The circuit breaker of a route's service: while open, answer 503 at once (with
Retry-After) and never call the upstream; count every outcome otherwise."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from aiohttp import web

from spork_cli.errors import StateError
from spork_cli.middleware import Handler, Middleware
from spork_cli.policies.breaker import BreakerCache, is_failure
from spork_cli.policies.failure import StoreFailure
from spork_cli.problems import HTTPProblem
from spork_cli.state import BreakerDecision, BreakerPolicy

if TYPE_CHECKING:
    from spork_cli.config.model import Breaker, OnError
    from spork_cli.state.outage import StateOutage


# How the proxy's problems map onto the kinds of failure a breaker may count.
ERROR_KINDS = {"upstream-unreachable": "connect", "upstream-timeout": "timeout"}


def breaker_middleware(
    service: str,
    config: Breaker,
    policy_on_error: OnError,
    breakers: BreakerCache,
    local: BreakerCache | None,
    outage: StateOutage,
) -> Middleware:
    policy = BreakerPolicy.from_config(config)
    failure = StoreFailure(policy_on_error, outage, local, "breaker", "check its breaker")

    async def decide(cache: BreakerCache) -> BreakerDecision:
        return await cache.allow(service, policy)

    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        cache = breakers
        try:
            decision = await decide(cache)
        except StateError as exc:
            fallback = failure.fallback(exc)
            if fallback is None:
                return await handler(request)
            cache = fallback
            decision = await decide(cache)
        if not decision.allowed:
            wait = max(1, math.ceil(decision.retry_after))
            raise HTTPProblem(
                503,
                "breaker-open",
                f"service '{service}' is failing; the gateway stopped calling it for now",
                headers={"Retry-After": str(wait)},
                extra={"service": service, "retry_after": wait},
            )
        try:
            response = await handler(request)
        except HTTPProblem as problem:
            kind = ERROR_KINDS.get(problem.slug)
            failed = is_failure(policy, None if kind else problem.status, kind)
            await _record(cache, service, policy, not failed, decision.probe, outage)
            raise
        failed = is_failure(policy, response.status, None)
        await _record(cache, service, policy, not failed, decision.probe, outage)
        return response

    return guarded


async def _record(
    cache: BreakerCache,
    service: str,
    policy: BreakerPolicy,
    success: bool,
    probe: bool,
    outage: StateOutage,
) -> None:
    try:
        await cache.record(service, policy, success, probe)
    except StateError as exc:
        # The answer is already decided; a lost count only delays a transition.
        outage.failed("breaker", exc)
