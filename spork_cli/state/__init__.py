"""Shared state: the StateStore protocol and the factory that picks a backend from config.

Backends offer a few atomic primitives, each one round trip; the algorithms built on them
(limiter, breaker, cache) live elsewhere. Key layout (stable: the CLI reads it)::

    {prefix}:{jwt}:revoked:<jti>     revocation, TTL = the token's remaining life
    {prefix}:instances:<id>          heartbeat of a running gateway (TTL)

Braces are Redis Cluster hash tags: everything about one entity lives in one slot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from spork_cli.config.model import State


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
