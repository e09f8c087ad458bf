"""Shared state: the StateStore protocol and the factory that picks a backend from config.

Backends offer a few atomic primitives, each one round trip; the algorithms built on them
(limiter, breaker, cache) live elsewhere. Key layout (stable: the CLI reads it)::

    {prefix}:{rl:<route>:<client-key>}  limiter state (GCRA TAT, token bucket hash, or the
                                     sliding window's sorted set); expires once replenished
    {prefix}:{jwt}:revoked:<jti>     revocation, TTL = the token's remaining life
    {prefix}:instances:<id>          heartbeat of a running gateway (TTL)

Braces are Redis Cluster hash tags: everything about one entity lives in one slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from spork_cli.config.model import State

Algorithm = Literal["gcra", "token_bucket", "sliding_window"]
ALGORITHMS: tuple[Algorithm, ...] = ("gcra", "token_bucket", "sliding_window")


@dataclass(frozen=True, slots=True)
class LimitResult:
    """One limiter decision. Times are seconds from the moment of the decision."""

    allowed: bool
    limit: int  # the capacity `remaining` counts down from
    remaining: int  # units that could still be admitted now
    reset_after: float  # until the state is back to idle (fully replenished / window empty)
    retry_after: float  # until this request's cost would be admitted; 0 when allowed


def limit_capacity(algorithm: str, rate: int, burst: int) -> int:
    """Units admitted at once from idle: ``rate + burst``; the sliding window ignores burst."""
    return rate if algorithm == "sliding_window" else rate + burst


def check_limit_args(algorithm: str, rate: int, period: float, burst: int, cost: int) -> int:
    """Validate the arguments of ``rate_limit`` (same rules on every backend); the capacity."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown rate limit algorithm {algorithm!r}")
    if rate < 1 or period <= 0 or burst < 0 or cost < 1:
        raise ValueError("rate_limit needs rate >= 1, period > 0, burst >= 0 and cost >= 1")
    capacity = limit_capacity(algorithm, rate, burst)
    if cost > capacity:
        raise ValueError(f"a cost of {cost} can never fit a capacity of {capacity}")
    return capacity


class StateStore(Protocol):
    backend: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StateError when the store cannot be reached."""

    async def revoke(self, jti: str, ttl: float) -> None:
        """Deny tokens with this ``jti`` for ``ttl`` seconds (their remaining life)."""

    async def is_revoked(self, jti: str) -> bool: ...

    async def heartbeat(self, instance: str, info: bytes, ttl: float) -> None: ...

    async def instances(self) -> dict[str, bytes]: ...

    async def rate_limit(
        self,
        key: str,
        algorithm: str,
        rate: int,
        period: float,
        burst: int,
        cost: int = 1,
    ) -> LimitResult:
        """Take ``cost`` units from the limiter at ``key`` (see `limit_key`), atomically.

        ``algorithm`` is one of `ALGORITHMS`; the semantics are documented in
        `spork_cli.limiter`. A denied request changes nothing. Raises ValueError on
        arguments `check_limit_args` rejects.
        """


def limit_key(prefix: str, route: str, client: str) -> str:
    """``{prefix}:{rl:<route>:<client>}``: the whole ``rl:...`` part is the hash tag."""
    return f"{prefix}:{{rl:{route}:{client}}}"


def revoked_key(prefix: str, jti: str) -> str:
    return f"{prefix}:{{jwt}}:revoked:{jti}"


def instance_key(prefix: str, instance: str) -> str:
    return f"{prefix}:instances:{instance}"


def store_from_config(state: State) -> StateStore:
    from spork_cli.state.memory import MemoryStore
    from spork_cli.state.redis import RedisStore

    factories: dict[str, Callable[[State], StateStore]] = {
        "memory": MemoryStore,
        "redis": RedisStore,
    }
    return factories[state.backend](state)
