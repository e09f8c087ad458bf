"""What several worker processes would each keep apart with memory state.

With `state.backend = "memory"` every worker of `spork serve --workers N` has a store of its
own: a limit would admit N times its requests, a breaker forced open in one worker would stay
closed in the others, and a revocation would reach one worker. `spork serve` refuses such a
config (and a reload into one), and `spork check` reports it, rather than diverge silently.
"""

from __future__ import annotations

from spork_cli.config.model import GatewayConfig


def per_worker_state(config: GatewayConfig) -> list[str]:
    """The features of ``config`` whose state its workers would each keep alone ([] when none
    would, or when there is one worker or a shared store)."""
    if config.state.backend != "memory" or config.server.workers < 2:
        return []
    used: list[str] = []
    if any(route.rate_limit is not None for route in config.routes):
        used.append("rate limits")
    if any(service.breaker is not None for service in config.services):
        used.append("circuit breakers")
    if any(route.cache is not None for route in config.routes):
        used.append("response cache")
    if config.auth is not None and any(route.auth != "none" for route in config.routes):
        used.append("token revocations")
    return used


def per_worker_problem(config: GatewayConfig) -> str | None:
    """One line saying what would diverge and what to do, or None."""
    used = per_worker_state(config)
    if not used:
        return None
    workers = config.server.workers
    return (
        f"{workers} workers with memory state would each keep their own {', '.join(used)}: "
        'set [state] backend = "redis" to share them, or run one worker'
    )
