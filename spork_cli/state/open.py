"""The store a config asks for: the backend named by ``[state] backend``."""

from __future__ import annotations

from collections.abc import Callable

from spork_cli.config.model import State
from spork_cli.state import StateStore
from spork_cli.state.memory import MemoryStore
from spork_cli.state.redis import RedisStore


def store_from_config(state: State) -> StateStore:

    factories: dict[str, Callable[[State], StateStore]] = {
        "memory": MemoryStore,
        "redis": RedisStore,
    }
    return factories[state.backend](state)
