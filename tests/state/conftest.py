"""The store on every backend: memory (with an injected clock), a real redis-server and a real
3-node Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spork_cli.config.model import State
from spork_cli.state.memory import MemoryStore
from spork_cli.state.open import store_from_config
from spork_cli.state.served import ServedStore, StoreServer

# Parametrised by fixture name, which is how tests/conftest.py sees the processes they start.
BACKENDS = [
    pytest.param("memory", id="memory"),
    # The supervisor's memory store of `--workers N`, called over its Unix socket.
    pytest.param("served", id="served"),
    pytest.param("redis_url", id="redis"),
    pytest.param("redis_cluster_url", id="cluster"),
]


@dataclass
class Backend:
    """A store plus a way to let time pass: the injected clock for memory, real time for Redis."""

    name: str
    store: Any
    now: list[float]
    memory: MemoryStore | None = None  # the memory store behind ``store`` (memory, served)

    async def wait(self, seconds: float) -> None:
        if self.memory is not None:
            self.now[0] += seconds
        else:
            # time passing, not synchronisation; a little over so the server clock has moved
            await asyncio.sleep(seconds + 0.01)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    now = [1000.0]
    store: Any
    memory: MemoryStore | None = None
    served: StoreServer | None = None
    if request.param == "memory":
        store = memory = MemoryStore(State(), clock=lambda: now[0])
    elif request.param == "served":
        memory = MemoryStore(State(), clock=lambda: now[0])
        served = StoreServer(memory, str(tmp_path / "state.sock"))
        await served.start()
        store = ServedStore(State(timeout="3s"), served.path)
    else:
        url = request.getfixturevalue(request.param)
        # 256 connections: the concurrency tests send up to 200 calls at once, and the cluster
        # client refuses (rather than queues) calls beyond its pool. A generous timeout: that
        # many calls on two cores can queue for a while, and timing out is not what these
        # tests are about.
        store = store_from_config(State(backend="redis", url=url, timeout="3s", pool_size=256))
    await store.start()
    try:
        yield Backend(request.param.removesuffix("_url"), store, now, memory)
    finally:
        await store.close()
        if served is not None:
            await served.close()
