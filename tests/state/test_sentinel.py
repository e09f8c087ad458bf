"""The Redis backend behind a real Redis Sentinel: a master, a replica and three sentinels.

The store only ever gets a ``redis+sentinel://`` URL naming the sentinels, so every call that
works found the master through them; each test then reads the master directly to see that the
writes really are there. The failover tests show the same store object following the master
to a promoted replica within a bounded time.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from spork_cli.config.model import State
from spork_cli.errors import StateError
from spork_cli.state import (
    ALGORITHMS,
    BreakerPolicy,
    breaker_key,
    instance_key,
    limit_key,
    revoked_key,
)
from spork_cli.state.open import store_from_config
from tests.support import (
    TCP_ESTABLISHED,
    RedisServer,
    eventually,
    require_binary,
    socket_inodes,
    tcp_sockets,
)
from tests.support.sentinel import (
    SERVICE,
    DataServer,
    RedisSentinel,
    keys_on,
    replication_info,
    start_redis_sentinel,
)

PREFIX = "spork"
# Generous: a call made while the master is gone must fail within it, and a call that waits
# for a connection while the sentinels move the master must not time out for nothing.
TIMEOUT = 2.0
# `SENTINEL FAILOVER` promotes the replica at once, but the old master keeps its clients until
# the sentinels reconfigure it, which Redis does only ~10 s later.
FAILOVER_DEADLINE = 25.0
# After the master dies: down-after (1 s), agreement, election and promotion take ~2-3 s.
CRASH_DEADLINE = 15.0
# A write answered READONLY must send the store back to the sentinels at once.
READONLY_DEADLINE = 3.0
# The sentinels publish `+switch-master` when they agree on the new master.
SWITCH_DEADLINE = 2.0


def open_store(url: str, **options: Any) -> Any:
    return store_from_config(State(backend="redis", url=url, timeout=f"{TIMEOUT}s", **options))


@pytest.fixture
async def store(redis_sentinel_url: str) -> AsyncIterator[Any]:
    store = open_store(redis_sentinel_url)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def connections_to(ports: set[int]) -> int:
    """Established TCP connections from this process to any of ``ports``."""
    mine = socket_inodes(os.getpid())
    return sum(
        1
        for _local, remote, state, inode in tcp_sockets()
        if remote in ports and state == TCP_ESTABLISHED and inode in mine
    )


def sockets_to(ports: set[int]) -> int:
    """Sockets of this process connected to any of ``ports``, whatever their TCP state."""
    mine = socket_inodes(os.getpid())
    return sum(
        1 for _local, remote, _state, inode in tcp_sockets() if remote in ports and inode in mine
    )


async def cut_clients(topology: RedisSentinel, server: DataServer) -> None:
    """End every client connection to ``server`` from the server side and wait until this
    process has let go of its end.

    A test that ends mid-failover may leave the store's connection to the old master still
    closing; this keeps its garbage collection from turning into a ResourceWarning error in
    whichever test comes next.
    """
    topology.disconnect_clients(server)
    await eventually(
        lambda: sockets_to({server.port}) == 0, what=f"no socket to {server.port} left"
    )


async def lands_on(store: Any, server: RedisServer, jti: str) -> bool:
    """Write one revocation through the store; did it reach ``server`` (read directly)?"""
    try:
        await store.revoke(jti, ttl=60)
    except StateError:
        return False
    return revoked_key(PREFIX, jti) in keys_on(server)


async def lands_within(store: Any, new: RedisServer, deadline: float, interval: float) -> None:
    """Writes through the store, until one reaches ``new`` within ``deadline``."""
    probes = iter(range(100_000))
    await eventually(
        lambda: lands_on(store, new, f"probe-{next(probes)}"),
        timeout=deadline,
        interval=interval,
        what=f"a write through the store landing on the new master {new.port}",
    )


# -- every primitive, through the sentinel-discovered master -------------------------------------


def test_the_sentinels_agree_on_a_master_with_a_linked_replica(
    redis_sentinel: RedisSentinel, redis_sentinel_url: str
) -> None:
    master = redis_sentinel.master
    (replica,) = redis_sentinel.replicas
    assert replication_info(master)["role"] == "master"
    assert replication_info(replica)["master_port"] == str(master.port)
    # The store is given the three sentinels and nothing else: it must ask them for the master.
    hosts = urlsplit(redis_sentinel_url).netloc.split(",")
    assert hosts == [f"{sentinel.host}:{sentinel.port}" for sentinel in redis_sentinel.sentinels]
    assert f"{master.host}:{master.port}" not in hosts


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_rate_limit_admits_exactly_the_limit(
    redis_sentinel: RedisSentinel, store: Any, algorithm: str
) -> None:
    key = limit_key(PREFIX, "/api/", "ip=10.0.0.1")
    results = [await store.rate_limit(key, algorithm, 5, 60.0, 0) for _ in range(7)]
    assert [result.allowed for result in results] == [True] * 5 + [False] * 2
    assert [result.remaining for result in results[:5]] == [4, 3, 2, 1, 0]
    assert results[5].retry_after > 0
    assert keys_on(redis_sentinel.master) == [key]
    # A client of its own for another route starts afresh.
    other = limit_key(PREFIX, "/api/", "ip=10.0.0.2")
    assert (await store.rate_limit(other, algorithm, 5, 60.0, 0)).remaining == 4


async def test_breaker_allow_record_read_and_force(
    redis_sentinel: RedisSentinel, store: Any
) -> None:
    key = breaker_key(PREFIX, "demo")
    policy = BreakerPolicy(failures=2, cooldown=30.0)
    assert (await store.breaker_allow(key, policy)).allowed
    assert (await store.breaker_record(key, policy, False, False)).state == "closed"
    opened = await store.breaker_record(key, policy, False, False)
    assert (opened.state, opened.failures, opened.changed) == ("open", 2, True)

    denied = await store.breaker_allow(key, policy)
    assert (denied.state, denied.allowed) == ("open", False)
    assert 29 < denied.retry_after <= 30
    read = await store.breaker_read(key)
    assert read is not None and (read.state, read.failures, read.trips) == ("open", 2, 1)

    forced = await store.breaker_force(key, "closed")
    assert forced is not None and (forced.state, forced.forced) == ("closed", "closed")
    assert (await store.breaker_allow(key, policy)).allowed
    with redis_sentinel.master.client(decode_responses=True) as master:
        assert master.type(key) == "hash"
        assert master.ttl(key) == -1  # a forced breaker never expires

    released = await store.breaker_force(key, None)
    assert released is not None and (released.state, released.forced) == ("open", None)
    await store.breaker_reset(key)
    assert await store.breaker_read(key) is None
    assert keys_on(redis_sentinel.master) == []


async def test_revocation_lives_on_the_master_for_the_tokens_remaining_life(
    redis_sentinel: RedisSentinel, store: Any
) -> None:
    assert not await store.is_revoked("jti-1")
    await store.revoke("jti-1", ttl=60)
    assert await store.is_revoked("jti-1")
    assert not await store.is_revoked("jti-2")
    with redis_sentinel.master.client() as master:
        assert 0 < master.pttl(revoked_key(PREFIX, "jti-1")) <= 60_000


async def test_heartbeats_list_instances(redis_sentinel: RedisSentinel, store: Any) -> None:
    await store.heartbeat("gw-1", b'{"pid": 1}', ttl=30)
    await store.heartbeat("gw-2", b'{"pid": 2}', ttl=30)
    assert await store.instances() == {"gw-1": b'{"pid": 1}', "gw-2": b'{"pid": 2}'}
    with redis_sentinel.master.client() as master:
        assert master.get(instance_key(PREFIX, "gw-2")) == b'{"pid": 2}'
        assert 0 < master.pttl(instance_key(PREFIX, "gw-1")) <= 30_000


async def test_scan_and_delete_see_the_masters_keys(
    redis_sentinel: RedisSentinel, store: Any
) -> None:
    await store.revoke("a", ttl=60)
    await store.heartbeat("gw", b"{}", ttl=30)
    await store.rate_limit(limit_key(PREFIX, "/x/", "ip=1"), "gcra", 5, 60.0, 0)
    with redis_sentinel.master.client() as master:
        master.set("unrelated", b"1")
    found = sorted(await store.scan(f"{PREFIX}:*"))
    assert len(found) == 3
    assert found == keys_on(redis_sentinel.master, f"{PREFIX}:*")

    assert await store.delete(found) == 3
    assert keys_on(redis_sentinel.master) == ["unrelated"]
    assert await store.scan(f"{PREFIX}:*") == []


async def test_the_database_in_the_url_is_the_one_used(
    redis_sentinel: RedisSentinel, redis_sentinel_url: str
) -> None:
    store = open_store(redis_sentinel.url(db=3))
    try:
        await store.revoke("in-db-3", ttl=60)
        assert await store.is_revoked("in-db-3")
    finally:
        await store.close()
    master = redis_sentinel.master
    try:
        assert keys_on(master, db=3) == [revoked_key(PREFIX, "in-db-3")]
        assert keys_on(master, db=0) == []
    finally:
        with master.client(db=3) as client:
            client.flushdb()


async def test_a_stopped_first_sentinel_is_skipped(
    redis_sentinel: RedisSentinel, redis_sentinel_url: str
) -> None:
    first = redis_sentinel.sentinels[0]
    assert redis_sentinel_url.startswith(f"redis+sentinel://{first.host}:{first.port},")
    first.stop()
    store = open_store(redis_sentinel_url)
    try:
        await store.revoke("while-one-sentinel-is-down", ttl=60)
        assert await store.is_revoked("while-one-sentinel-is-down")
    finally:
        await store.close()
        first.start()
    key = revoked_key(PREFIX, "while-one-sentinel-is-down")
    assert keys_on(redis_sentinel.master) == [key]


async def test_an_unknown_service_is_a_state_error_within_the_timeout(
    redis_sentinel: RedisSentinel, redis_sentinel_url: str
) -> None:
    store = open_store(redis_sentinel_url.replace(f"/{SERVICE}", "/no-such-service"))
    started = time.monotonic()
    try:
        with pytest.raises(StateError):
            await store.revoke("x", ttl=60)
    finally:
        await store.close()
    assert time.monotonic() - started < TIMEOUT + 1
    assert keys_on(redis_sentinel.master) == []


async def test_the_pool_takes_many_concurrent_calls(redis_sentinel_url: str) -> None:
    store = open_store(redis_sentinel_url, pool_size=256)
    key = limit_key(PREFIX, "/busy/", "ip=10.0.0.1")
    try:
        results = await asyncio.gather(
            *(store.rate_limit(key, "gcra", 1000, 60.0, 0) for _ in range(200)),
            return_exceptions=True,
        )
    finally:
        await store.close()
    errors = {str(result) for result in results if isinstance(result, BaseException)}
    assert errors == set()
    assert sum(1 for result in results if result.allowed) == 200


async def test_close_leaves_no_connection_open(
    redis_sentinel: RedisSentinel, redis_sentinel_url: str
) -> None:
    assert connections_to(redis_sentinel.ports) == 0
    store = open_store(redis_sentinel_url)
    try:
        await store.revoke("x", ttl=60)
        assert connections_to({redis_sentinel.master.port}) >= 1, "no connection to the master"
    finally:
        await store.close()
    assert connections_to(redis_sentinel.ports) == 0


# -- failover ------------------------------------------------------------------------------------


async def test_the_store_follows_a_failover_the_sentinels_are_asked_for(
    redis_sentinel: RedisSentinel, store: Any
) -> None:
    key = limit_key(PREFIX, "/api/", "ip=10.0.0.1")
    for _ in range(2):
        assert (await store.rate_limit(key, "gcra", 5, 60.0, 0)).allowed
    await store.revoke("before", ttl=60)
    redis_sentinel.replicate()

    old = redis_sentinel.request_failover()
    try:
        new = await asyncio.to_thread(redis_sentinel.wait_new_master, old, 15.0)
        await lands_within(store, new, FAILOVER_DEADLINE, 0.1)

        # The state written before the failover came along (it had reached the replica), and
        # the same limiter goes on counting from where it was.
        assert await store.is_revoked("before")
        results = [await store.rate_limit(key, "gcra", 5, 60.0, 0) for _ in range(4)]
        assert [result.allowed for result in results] == [True, True, True, False]
        assert key in keys_on(new)
    finally:
        await cut_clients(redis_sentinel, old)


async def test_the_store_moves_to_the_new_master_when_the_sentinels_announce_it(
    redis_sentinel: RedisSentinel, store: Any
) -> None:
    """Not ten seconds later, when the old master is demoted: writes it took meanwhile would
    be lost."""
    assert await lands_on(store, redis_sentinel.master, "before")
    await asyncio.wait_for(store.link.listening.wait(), 5)
    redis_sentinel.replicate()

    old = redis_sentinel.request_failover()
    try:
        new = await asyncio.to_thread(redis_sentinel.wait_new_master, old, 15.0)
        await lands_within(store, new, SWITCH_DEADLINE, 0.05)
        # The old master was still a master: the announcement moved the store, not a
        # failed call.
        assert replication_info(old).get("role") == "master"
    finally:
        await cut_clients(redis_sentinel, old)


async def readonly_failover(topology: RedisSentinel) -> tuple[DataServer, DataServer]:
    """A failover after which the old master answers the store's writes with READONLY: the
    sentinels promote the replica, and the old master is demoted at once, clients kept."""
    old = topology.request_failover()
    new = await asyncio.to_thread(topology.wait_new_master, old, 15.0)
    topology.demote(old, new)
    return old, new


async def test_a_limiter_script_answered_readonly_sends_the_store_to_the_new_master(
    redis_sentinel: RedisSentinel, store: Any
) -> None:
    key = limit_key(PREFIX, "/api/", "ip=10.0.0.1")
    assert (await store.rate_limit(key, "gcra", 5, 60.0, 0)).remaining == 4
    redis_sentinel.replicate()
    old, new = await readonly_failover(redis_sentinel)
    try:
        # Only limiter calls: the READONLY comes from inside a Lua script this time, and the
        # store must recognise it as such, not report every later call as a failure.
        results = []
        for _ in range(3):
            try:
                results.append((await store.rate_limit(key, "gcra", 5, 60.0, 0)).remaining)
            except StateError as exc:
                results.append(str(exc))
        admitted = [result for result in results if isinstance(result, int)]
        assert len(admitted) >= 2, f"more than the first call after the demotion failed: {results}"
        # The limiter goes on from the replicated state: 4 left before, then 3, 2, ...
        assert admitted == list(range(3, 3 - len(admitted), -1))
        assert key in keys_on(new)
    finally:
        await cut_clients(redis_sentinel, old)


async def test_close_after_a_readonly_failover_leaves_no_connection_open(
    redis_sentinel: RedisSentinel, store: Any
) -> None:
    await store.revoke("before", ttl=60)
    # The sentinels promote the replica; the old master is demoted at once instead of ~10 s
    # later, keeping its clients: the store's next write there is answered READONLY.
    old = redis_sentinel.request_failover()
    try:
        new = await asyncio.to_thread(redis_sentinel.wait_new_master, old, 15.0)
        redis_sentinel.demote(old, new)
        await lands_within(store, new, READONLY_DEADLINE, 0.05)
        await store.close()
        to_old, to_any = connections_to({old.port}), connections_to(redis_sentinel.ports)
    finally:
        await cut_clients(redis_sentinel, old)
    assert (to_old, to_any) == (0, 0), "connections (to the old master, to any) after close()"


async def test_the_store_recovers_when_the_master_dies(
    redis_sentinel: RedisSentinel, store: Any
) -> None:
    await store.revoke("before", ttl=60)
    redis_sentinel.replicate()

    old = redis_sentinel.kill_master()
    # While there is no master, every call fails within the timeout (never hangs, never
    # raises anything but StateError) until one succeeds on the promoted replica.
    started = time.monotonic()
    failures = 0
    while True:
        call_started = time.monotonic()
        try:
            revoked = await store.is_revoked("before")
        except StateError:
            failures += 1
        else:
            break
        assert time.monotonic() - call_started < TIMEOUT + 0.5
        assert time.monotonic() - started < CRASH_DEADLINE, "no master within the deadline"
        await asyncio.sleep(0.05)  # pacing between attempts, not synchronisation
    assert failures >= 1, "the store never noticed the master had gone"
    assert revoked, "a revocation replicated before the crash was lost"

    new = await asyncio.to_thread(redis_sentinel.wait_new_master, old, CRASH_DEADLINE)
    await store.revoke("after", ttl=60)
    assert revoked_key(PREFIX, "after") in keys_on(new)


# -- a password-protected master ------------------------------------------------------------------

# Characters that must be percent-encoded in a URL's userinfo.
PASSWORD = "s3cret:p@ss/w%rd"
ACL_USER, ACL_PASSWORD = "spork", "spork@pw"


@pytest.fixture(scope="module")
def protected_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    """A master that requires a password and knows one more ACL user, watched by one sentinel
    (which has the password; the sentinel itself asks for none)."""
    topology = start_redis_sentinel(
        require_binary("redis-server"),
        tmp_path_factory.mktemp("redis-sentinel-auth"),
        replicas=0,
        sentinels=1,
        password=PASSWORD,
        data_args=("--user", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all"),
    )
    try:
        yield topology
    finally:
        topology.stop()


async def test_the_password_in_the_url_reaches_the_master(
    protected_sentinel: RedisSentinel,
) -> None:
    store = open_store(protected_sentinel.url(userinfo=":" + quote(PASSWORD, safe="")))
    try:
        await store.revoke("with-password", ttl=60)
        assert await store.is_revoked("with-password")
    finally:
        await store.close()
    key = revoked_key(PREFIX, "with-password")
    assert key in keys_on(protected_sentinel.master)


async def test_without_the_password_calls_are_state_errors(
    protected_sentinel: RedisSentinel,
) -> None:
    store = open_store(protected_sentinel.url())
    try:
        with pytest.raises(StateError, match=r"(?i)auth"):
            await store.revoke("no-password", ttl=60)
    finally:
        await store.close()


async def test_a_user_in_the_url_logs_in_as_that_user(protected_sentinel: RedisSentinel) -> None:
    store = open_store(
        protected_sentinel.url(userinfo=f"{ACL_USER}:{quote(ACL_PASSWORD, safe='')}")
    )
    try:
        await store.revoke("as-user", ttl=60)
        with protected_sentinel.master.client() as master:
            users = {client["user"] for client in master.client_list()}
    finally:
        await store.close()
    assert ACL_USER in users
