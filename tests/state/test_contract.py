"""The same contract on every backend: memory, a real redis-server, a real 3-node cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from spork_cli.config.model import State
from spork_cli.errors import StateError
from spork_cli.state import StateStore
from spork_cli.state.memory import MemoryStore
from spork_cli.state.open import store_from_config
from spork_cli.state.served import ServedStore, StoreServer
from tests.state.conftest import BACKENDS
from tests.support import free_port


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    served: StoreServer | None = None
    if request.param == "memory":
        store = store_from_config(State())
    elif request.param == "served":
        served = StoreServer(MemoryStore(State()), str(tmp_path / "state.sock"))
        await served.start()
        store = ServedStore(State(), served.path)
    else:
        url = request.getfixturevalue(request.param)
        store = store_from_config(State(backend="redis", url=url, timeout="500ms"))
    await store.start()
    try:
        yield store
    finally:
        await store.close()
        if served is not None:
            await served.close()


async def test_ping(store: StateStore) -> None:
    await store.ping()


async def test_revocation_is_seen_and_others_are_not(store: StateStore) -> None:
    assert not await store.is_revoked("abc")
    await store.revoke("abc", ttl=60)
    assert await store.is_revoked("abc")
    assert not await store.is_revoked("abd")


async def test_revocation_with_no_remaining_life_is_not_stored(store: StateStore) -> None:
    await store.revoke("old", ttl=0)
    assert not await store.is_revoked("old")


async def test_heartbeats_list_instances(store: StateStore) -> None:
    await store.heartbeat("gw-1", b'{"pid": 1}', ttl=30)
    await store.heartbeat("gw-2", b'{"pid": 2}', ttl=30)
    assert await store.instances() == {"gw-1": b'{"pid": 1}', "gw-2": b'{"pid": 2}'}


async def test_memory_entries_expire() -> None:
    now = [1000.0]
    from spork_cli.state.memory import MemoryStore

    store = MemoryStore(State(), clock=lambda: now[0])
    await store.revoke("x", ttl=5)
    assert await store.is_revoked("x")
    now[0] += 5.01
    assert not await store.is_revoked("x")


async def test_memory_revocations_expire_and_are_swept() -> None:
    from spork_cli.state.memory import MemoryStore

    now = [0.0]
    store = MemoryStore(State(max_keys=100), clock=lambda: now[0])
    for i in range(1500):
        await store.revoke(f"j{i}", ttl=10)
    now[0] += 11
    for i in range(1500, 2100):
        await store.revoke(f"j{i}", ttl=10)
    assert len(store._pinned.entries) == 2100 - 1500  # the expired ones were swept on the way
    assert not await store.is_revoked("j0")
    assert await store.is_revoked("j2099")


async def test_unreachable_redis_is_a_state_error_within_the_timeout() -> None:
    store = store_from_config(
        State(backend="redis", url=f"redis://127.0.0.1:{free_port()}/0", timeout="100ms")
    )
    try:
        with pytest.raises(StateError):
            await store.ping()
        with pytest.raises(StateError):
            await store.is_revoked("x")
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("policy", "outage_status", "outage_label"),
    [("closed", 503, "state unreachable"), ("open", 200, "degraded"), ("local", 200, "degraded")],
)
async def test_readiness_follows_the_state_store_as_on_error_says(
    aiohttp_client: Any,
    redis_server: Any,
    redis_url: str,
    upstream: Any,
    policy: str,
    outage_status: int,
    outage_label: str,
) -> None:
    """Not ready while Redis is down only when requests that need it are refused (closed)."""
    from spork_cli.config.model import GatewayConfig
    from spork_cli.gateway.admin import build_admin_app
    from spork_cli.gateway.app import build_app
    from spork_cli.gateway.keys import TABLE

    config = GatewayConfig.model_validate(
        {
            "state": {
                "backend": "redis",
                "url": redis_url,
                "timeout": "200ms",
                "on_error": policy,
            },
            "services": [{"name": "u", "endpoints": [upstream.url]}],
            "routes": [{"path": "/", "service": "u"}],
        }
    )
    gateway = build_app(config)
    await aiohttp_client(gateway)  # starts the gateway app (and its store)
    admin = await aiohttp_client(build_admin_app(gateway[TABLE]))
    async with admin.get("/health/ready") as ready:
        assert ready.status == 200
    redis_server.stop()
    try:
        async with admin.get("/health/ready") as ready:
            assert ready.status == outage_status
            body = await ready.json()
            assert body["status"] == outage_label
            assert body["state_error"]
        async with admin.get("/health") as alive:
            assert alive.status == 200
    finally:
        redis_server.start()
    async with admin.get("/health/ready") as ready:
        assert ready.status == 200
