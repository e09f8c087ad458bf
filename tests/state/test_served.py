"""The supervisor's memory store served to its workers over a Unix socket: only the state
primitives can be called, only state values can be sent, and a store that is gone or silent
is a StateError (the route's on_error policy), never a hang. The contract tests run on it as
the ``served`` backend."""

from __future__ import annotations

import asyncio
import os
import pickle
import stat
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spork_cli.config.model import State
from spork_cli.errors import StateError
from spork_cli.state.memory import MemoryStore
from spork_cli.state.memory_limiter import LimiterFull
from spork_cli.state.served import ServedStore, StoreServer


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[StoreServer, MemoryStore]]:
    memory = MemoryStore(State())
    server = StoreServer(memory, str(tmp_path / "state.sock"))
    await server.start()
    try:
        yield server, memory
    finally:
        await server.close()


async def test_only_its_owner_may_connect_to_the_socket(
    served: tuple[StoreServer, MemoryStore],
) -> None:
    server, _ = served
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600


async def test_a_frame_that_would_build_anything_but_a_state_value_is_refused(
    served: tuple[StoreServer, MemoryStore], tmp_path: Path
) -> None:
    server, memory = served
    proof = tmp_path / "ran"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {proof}",))

    payload = pickle.dumps(("revoke", (Exploit(), 60.0)))
    reader, writer = await asyncio.open_unix_connection(server.path)
    writer.write(struct.pack(">I", len(payload)) + payload)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without an answer
    writer.close()
    assert not proof.exists()
    # The store serves every other worker as before.
    client = ServedStore(State(), server.path)
    await client.revoke("jti-1", 60)
    assert await memory.is_revoked("jti-1")
    await client.close()


async def test_only_the_state_primitives_can_be_called(
    served: tuple[StoreServer, MemoryStore],
) -> None:
    server, memory = served
    client = ServedStore(State(), server.path)
    await memory.revoke("kept", 60)
    with pytest.raises(StateError, match="'close' is not a state primitive"):
        await client._call("close")
    assert await client.is_revoked("kept")  # the store was not closed
    await client.close()


async def test_arguments_the_store_rejects_are_a_value_error_as_in_one_process(
    served: tuple[StoreServer, MemoryStore],
) -> None:
    server, _ = served
    client = ServedStore(State(), server.path)
    with pytest.raises(ValueError, match="unknown rate limit algorithm 'leaky'"):
        await client.rate_limit("k", "leaky", 5, 60, 0)
    await client.close()


async def test_a_store_that_went_away_is_a_state_error_until_it_is_back(tmp_path: Path) -> None:
    path = str(tmp_path / "state.sock")
    first = StoreServer(MemoryStore(State()), path)
    await first.start()
    client = ServedStore(State(timeout="200ms"), path)
    await client.revoke("a", 60)
    await first.close()
    with pytest.raises(StateError):
        await client.is_revoked("a")
    with pytest.raises(StateError, match="state store"):
        await client.is_revoked("a")  # nothing listens: refused at once
    second = StoreServer(MemoryStore(State()), path)
    await second.start()
    assert await client.is_revoked("a") is False  # reconnected, to the new (empty) store
    await client.close()
    await second.close()


async def test_a_silent_store_is_a_state_error_after_the_timeout(tmp_path: Path) -> None:
    path = str(tmp_path / "state.sock")
    calls = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4)
        calls.set()
        await reader.read()  # never answers; until the client hangs up
        writer.close()

    server = await asyncio.start_unix_server(silent, path)
    client = ServedStore(State(timeout="100ms"), path)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StateError, match="did not answer is_revoked in time"):
        await client.is_revoked("a")
    assert calls.is_set()
    assert loop.time() - started < 1.0
    await client.close()
    server.close()
    await server.wait_closed()


async def test_calls_sent_together_get_their_own_answers(
    served: tuple[StoreServer, MemoryStore],
) -> None:
    server, _ = served
    client = ServedStore(State(), server.path)
    results = await asyncio.gather(
        *(client.rate_limit(f"k{i % 3}", "gcra", 10, 60, 0) for i in range(30))
    )
    by_key: dict[int, list[int]] = {}
    for i, result in enumerate(results):
        by_key.setdefault(i % 3, []).append(result.remaining)
    assert by_key == {k: list(range(9, -1, -1)) for k in range(3)}
    await client.close()


async def test_a_value_past_the_frame_limit_fails_alone(
    served: tuple[StoreServer, MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = served
    monkeypatch.setattr("spork_cli.state.served.MAX_FRAME", 1024)
    client = ServedStore(State(), server.path)
    with pytest.raises(StateError, match="more than the store takes"):
        await client.cache_set("k", b"x" * 2048, 60, "m", 0)
    await client.revoke("small", 60)  # the connection is still good
    assert await client.is_revoked("small")
    await client.close()


async def test_a_full_limiter_is_a_refusal_in_a_worker_as_in_one_process(tmp_path: Path) -> None:
    """No room for a new client is LimiterFull (refused whatever on_error says), never an
    outage that on_error = "open" would let through."""
    memory = MemoryStore(State(max_keys=100))
    server = StoreServer(memory, str(tmp_path / "state.sock"))
    await server.start()
    client = ServedStore(State(), server.path)
    for i in range(100):
        assert (await client.rate_limit(f"spork:{{rl:r:c{i}}}", "gcra", 5, 60, 0)).allowed
    with pytest.raises(LimiterFull) as refused:
        await client.rate_limit("spork:{rl:r:new}", "gcra", 5, 60, 0)
    assert 0 < refused.value.retry_after <= 60
    await client.close()
    await server.close()


async def test_only_the_servers_own_children_are_answered(tmp_path: Path) -> None:
    """The supervisor answers its workers alone: another process of the same user (here this
    test, which is not a child of the server's process) is refused without an answer."""
    memory = MemoryStore(State())
    await memory.revoke("secret", 60)
    server = StoreServer(memory, str(tmp_path / "state.sock"), children_only=True)
    await server.start()
    client = ServedStore(State(timeout="500ms"), server.path)
    with pytest.raises(StateError):
        await client.is_revoked("secret")
    await client.close()
    await server.close()
