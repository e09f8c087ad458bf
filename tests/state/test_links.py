"""The links of `spork_cli.state.links` against real servers: a Cluster routed by slot through
real resharding (MOVED), a slot caught mid-migration (ASK), a node that stops and comes back,
many concurrent scripts; ``key_slot`` against the server's own CLUSTER KEYSLOT; and every URL
form ``open_link`` takes.

Slots are moved the way redis-cli does it (SETSLOT IMPORTING / MIGRATING, MIGRATE, SETSLOT NODE
on every node) and always moved back: the cluster is shared by the whole run, and the
``cluster`` fixture fails any test that leaves it other than it found it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spork_cli.config.model import State
from spork_cli.state.links import SLOTS, Cluster, Sentinel, Standalone, key_slot, open_link
from spork_cli.state.open import store_from_config
from spork_cli.state.resp import ConnectionError, ReplyError, Script
from tests.support import (
    RedisClusterNodes,
    RedisServer,
    eventually,
    free_port,
)

# Far below any connect timeout: a call to a stopped node must be refused, not time out.
FAST = 1.0
CONNECT_TIMEOUT = 5.0
# A restarted primary answers CLUSTERDOWN for its first 2 s (Redis's writable delay).
RESTART_DEADLINE = 10.0
SETTLE_DEADLINE = 15.0
# Long enough for a few local round trips, short enough to wait out.
PAUSE_MS = 1000

ECHO_GET = Script("return redis.call('GET', KEYS[1])")
INCRBY = Script("return {KEYS[1], redis.call('INCRBY', KEYS[1], ARGV[1])}")
GET_BOTH = Script("return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}")

Address = tuple[str, int]
SlotMap = list[tuple[int, int, int]]


# -- the cluster, read and resharded directly ---------------------------------------------------


def admin(server: RedisServer) -> redis.Redis:
    """A plain (not cluster-aware) client of one node: no redirect is ever followed for us."""
    return server.client(socket_timeout=5)


def address(server: RedisServer) -> Address:
    return (server.host, server.port)


def slot_map(server: RedisServer) -> SlotMap:
    """``server``'s view of the cluster: (first slot, last slot, primary port), sorted."""
    with admin(server) as client:
        reply = client.execute_command("CLUSTER", "SLOTS")
    return sorted((int(start), int(end), int(primary[1])) for start, end, primary, *_ in reply)


def slot_owners(server: RedisServer) -> list[Address]:
    """``server``'s view as a link keeps it: the address of the primary of every slot."""
    owners: list[Address] = []
    for start, end, port in slot_map(server):
        assert start == len(owners), "the slot map has a gap"
        owners += [(server.host, port)] * (end - start + 1)
    return owners


def tag_owned_by(
    cluster: RedisClusterNodes, server: RedisServer, name: str, avoid: Sequence[int] = ()
) -> str:
    """A hash tag ``{name<n>}`` whose slot ``server`` owns (and that is not in ``avoid``)."""
    table = slot_map(cluster.servers[0])
    for n in itertools.count():
        tag = f"{{{name}{n}}}"
        slot = key_slot(tag)
        if slot in avoid:
            continue
        if any(start <= slot <= end and port == server.port for start, end, port in table):
            return tag
    raise AssertionError("unreachable")


def node_id(server: RedisServer) -> str:
    with admin(server) as client:
        return str(client.execute_command("CLUSTER", "MYID").decode())


def keys_in_slot(server: RedisServer, slot: int) -> list[bytes]:
    """The keys ``server`` itself holds in ``slot`` (an admin command: never redirected)."""
    with admin(server) as client:
        return list(client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000))


def command_stats(server: RedisServer, command: str) -> tuple[int, int]:
    """(calls, rejected calls) of ``command`` on ``server``; a MOVED or ASK is a rejection."""
    with admin(server) as client:
        stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0)), int(stats.get("rejected_calls", 0))


def begin_migration(slot: int, source: RedisServer, target: RedisServer) -> None:
    with admin(target) as client:
        client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
    with admin(source) as client:
        client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))


def migrate(source: RedisServer, target: RedisServer, keys: Sequence[bytes | str]) -> None:
    if keys:
        with admin(source) as client:
            client.execute_command(
                "MIGRATE", target.host, target.port, "", 0, 5000, "REPLACE", "KEYS", *keys
            )


def assign(cluster: RedisClusterNodes, slot: int, new_owner: RedisServer) -> None:
    """CLUSTER SETSLOT NODE on every node, the new owner first (as redis-cli does), so that
    it bumps its config epoch and its claim wins the gossip."""
    owner_id = node_id(new_owner)
    for server in sorted(cluster.servers, key=lambda s: s is not new_owner):
        with admin(server) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner_id)


def move_slot(
    cluster: RedisClusterNodes, slot: int, source: RedisServer, target: RedisServer
) -> None:
    begin_migration(slot, source, target)
    while keys := keys_in_slot(source, slot):
        migrate(source, target, keys)
    assign(cluster, slot, target)


@contextlib.contextmanager
def slots_moved(
    cluster: RedisClusterNodes, slots: Sequence[int], source: RedisServer, target: RedisServer
) -> Iterator[None]:
    """``slots`` (and their keys) moved from ``source`` to ``target``, and back afterwards."""
    moved: list[int] = []
    try:
        for slot in slots:
            move_slot(cluster, slot, source, target)
            moved.append(slot)
        yield
    finally:
        for slot in moved:
            move_slot(cluster, slot, target, source)


@contextlib.contextmanager
def migrating(
    cluster: RedisClusterNodes, slot: int, source: RedisServer, target: RedisServer
) -> Iterator[None]:
    """``slot`` MIGRATING on ``source`` and IMPORTING on ``target``, its keys not yet moved.

    Afterwards the migration is completed and the slot moved back: from any point of a
    migration that is the one way back Redis accepts."""
    begin_migration(slot, source, target)
    try:
        yield
    finally:
        while keys := keys_in_slot(source, slot):
            migrate(source, target, keys)
        assign(cluster, slot, target)
        move_slot(cluster, slot, target, source)


def healthy(server: RedisServer) -> bool:
    info = RedisClusterNodes.cluster_info(server)
    return (
        info.get("cluster_state") == "ok"
        and info.get("cluster_slots_assigned") == str(SLOTS)
        and info.get("cluster_known_nodes") == "3"
    )


def settled(cluster: RedisClusterNodes, expected: SlotMap) -> bool:
    """Every node up, healthy, and of the same view of who serves what as ``expected``."""
    try:
        return all(
            server.running and healthy(server) and slot_map(server) == expected
            for server in cluster.servers
        )
    except redis.RedisError:
        return False


@pytest.fixture
async def cluster(
    redis_cluster: RedisClusterNodes, redis_cluster_url: str
) -> AsyncIterator[RedisClusterNodes]:
    """The shared cluster, emptied. Afterwards every node must be up, healthy and agree on
    the slot map the test started with, or the test errors: the next one needs it so."""
    before = slot_map(redis_cluster.servers[0])
    yield redis_cluster
    for server in redis_cluster.servers:
        if not server.running:
            server.start()
    await eventually(
        lambda: settled(redis_cluster, before),
        timeout=SETTLE_DEADLINE,
        what="the cluster back as the test found it",
    )


@pytest.fixture
async def open_cluster(cluster: RedisClusterNodes) -> AsyncIterator[Callable[..., Cluster]]:
    """``open_cluster(connections=1)``: a Cluster link seeded with every node, closed after
    the test."""
    links: list[Cluster] = []

    def make(connections: int = 1) -> Cluster:
        link = Cluster(
            cluster.nodes,
            username=None,
            password=None,
            connect_timeout=CONNECT_TIMEOUT,
            connections=connections,
        )
        links.append(link)
        return link

    try:
        yield make
    finally:
        for link in links:
            await link.aclose()


# -- key_slot ----------------------------------------------------------------------------------


def server_slots(server: RedisServer, keys: Sequence[str | bytes]) -> list[int]:
    with admin(server) as client:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("CLUSTER", "KEYSLOT", key)
        return [int(slot) for slot in pipe.execute()]


def test_key_slot_of_the_crc16_check_string() -> None:
    # CRC16/XMODEM("123456789") is 0x31C3, the check value of the Redis Cluster spec.
    assert key_slot("123456789") == 0x31C3 == 12739
    assert key_slot(b"123456789") == 12739


@pytest.mark.parametrize(
    ("key", "hashed"),
    [
        ("{user1000}.following", "user1000"),
        ("{user1000}.followers", "user1000"),
        ("foo{}{bar}", "foo{}{bar}"),  # an empty first tag: the whole key
        ("foo{{bar}}zap", "{bar"),  # from the first { to the first } after it
        ("foo{bar}{zap}", "bar"),  # only the first tag counts
        ("{", "{"),
        ("}{", "}{"),
        ("a}b{c}", "c"),
        ("", ""),
        ("caf\u00e9{\u2603}", "\u2603"),
    ],
)
def test_key_slot_follows_the_hash_tag_rules(
    redis_cluster: RedisClusterNodes, key: str, hashed: str
) -> None:
    assert key_slot(key) == key_slot(hashed)
    assert [key_slot(key)] == server_slots(redis_cluster.servers[0], [key])


BRACEY = st.text(alphabet=st.sampled_from("{}{}ab\u00e9\u2603\U0001f600\x00 "), max_size=12)
KEYS = st.one_of(
    st.text(max_size=40),
    BRACEY,
    st.builds(lambda a, b, c: f"{a}{{{b}}}{c}", BRACEY, BRACEY, BRACEY),
    st.binary(max_size=24),
)


@settings(max_examples=150, deadline=None)
@given(keys=st.lists(KEYS, min_size=1, max_size=25))
@example(keys=["{}", "{}{}", "{{}}", "{a}{b}", "x{}y{z}", "\u00e9{\u00e9}", b"\xff{\xfe}"])
def test_key_slot_equals_cluster_keyslot(
    redis_cluster: RedisClusterNodes, keys: list[str | bytes]
) -> None:
    assert [key_slot(key) for key in keys] == server_slots(redis_cluster.servers[0], keys)


# -- MOVED ---------------------------------------------------------------------------------------


async def test_moved_is_followed_and_the_next_call_goes_straight_to_the_new_owner(
    cluster: RedisClusterNodes, open_cluster: Callable[..., Cluster]
) -> None:
    link = open_cluster()
    # The map is read from the first seed, the bystander: neither end of the move.
    bystander, source, target = cluster.servers
    tag = tag_owned_by(cluster, source, "moved")
    slot = key_slot(tag)
    # A second slot moved along, never called: only the background re-read can learn of it.
    other_tag = tag_owned_by(cluster, source, "also-moved", avoid=[slot])
    other_slot = key_slot(other_tag)
    await link.call(f"{tag}:k", "SET", f"{tag}:k", "before the move")
    await link.call(f"{other_tag}:k", "SET", f"{other_tag}:k", "other")
    assert link._slots[slot] == address(source)

    with slots_moved(cluster, [slot, other_slot], source, target):
        assert keys_in_slot(target, slot) == [f"{tag}:k".encode()]
        assert link._slots[slot] == address(source)  # the map predates the move
        source_get, target_get = command_stats(source, "get"), command_stats(target, "get")
        # Hold the re-read at the bystander, so what the MOVED itself did to the map shows
        # apart from what the re-read does. (Redis 7.0 holds CLIENT UNPAUSE behind the pause
        # too, so the pause runs out by itself.)
        with admin(bystander) as client:
            client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
        paused_until = time.monotonic() + PAUSE_MS / 1000

        assert await link.call(f"{tag}:k", "GET", f"{tag}:k") == b"before the move"
        assert link._slots[slot] == address(target)
        assert link._slots[other_slot] == address(source)  # the re-read is still held
        assert command_stats(source, "get")[1] == source_get[1] + 1  # one MOVED
        assert command_stats(target, "get")[0] == target_get[0] + 1

        assert await link.call(f"{tag}:k", "GET", f"{tag}:k") == b"before the move"
        assert command_stats(source, "get")[1] == source_get[1] + 1  # no second MOVED
        assert command_stats(target, "get")[0] == target_get[0] + 2
        assert time.monotonic() < paused_until, "too slow: the checks above outlived the pause"

        # The call did not wait for the re-read; once the pause ends the re-read finishes.
        await eventually(
            lambda: link._slots[other_slot] == address(target),
            timeout=PAUSE_MS / 1000 + 5,
            what="the background re-read of the slot map",
        )
        assert link._slots == slot_owners(target)
        source_evalsha = command_stats(source, "evalsha")
        assert await link.evalsha(ECHO_GET, [f"{other_tag}:k"], []) == b"other"
        assert command_stats(source, "evalsha") == source_evalsha  # straight to the target


async def test_concurrent_calls_for_a_moved_slot_all_follow_moved(
    cluster: RedisClusterNodes, open_cluster: Callable[..., Cluster]
) -> None:
    link = open_cluster(connections=2)
    source, target = cluster.servers[2], cluster.servers[0]
    tag = tag_owned_by(cluster, source, "many-moved")
    keys = [f"{tag}:{i}" for i in range(200)]
    await asyncio.gather(*(link.call(key, "SET", key, i) for i, key in enumerate(keys)))
    with slots_moved(cluster, [key_slot(tag)], source, target):
        # Scripts on the even keys, plain reads of the odd ones, all at once on a stale map.
        replies = await asyncio.gather(
            *(
                link.evalsha(INCRBY, [key], [1000]) if i % 2 == 0 else link.call(key, "GET", key)
                for i, key in enumerate(keys)
            )
        )
        assert replies == [
            [key.encode(), i + 1000] if i % 2 == 0 else str(i).encode()
            for i, key in enumerate(keys)
        ]
        assert link._slots[key_slot(tag)] == address(target)
        assert len(keys_in_slot(target, key_slot(tag))) == 200


@pytest.mark.parametrize("redirect", ["moved", "ask"])
async def test_a_script_of_two_keys_follows_a_redirect(
    cluster: RedisClusterNodes, open_cluster: Callable[..., Cluster], redirect: str
) -> None:
    link = open_cluster()
    source, target = cluster.servers[1], cluster.servers[2]
    tag = tag_owned_by(cluster, source, f"two-{redirect}")
    keys = [f"{tag}:a", f"{tag}:b"]
    for key in keys:
        await link.call(key, "SET", key, key)
    expected = [key.encode() for key in keys]
    assert await link.evalsha(GET_BOTH, keys, []) == expected
    if redirect == "moved":
        with slots_moved(cluster, [key_slot(tag)], source, target):
            assert await link.evalsha(GET_BOTH, keys, []) == expected
    else:
        with migrating(cluster, key_slot(tag), source, target):
            migrate(source, target, keys)
            assert await link.evalsha(GET_BOTH, keys, []) == expected


# -- ASK -----------------------------------------------------------------------------------------


async def test_ask_reaches_a_key_already_migrated(
    cluster: RedisClusterNodes, open_cluster: Callable[..., Cluster]
) -> None:
    link = open_cluster()
    source, target = cluster.servers[1], cluster.servers[0]
    tag = tag_owned_by(cluster, source, "ask")
    slot = key_slot(tag)
    moved, stays, new = f"{tag}:moved", f"{tag}:stays", f"{tag}:new"
    await link.call(moved, "SET", moved, "on the target")
    await link.call(stays, "SET", stays, "on the source")
    with migrating(cluster, slot, source, target):
        migrate(source, target, [moved])
        source_get = command_stats(source, "get")
        target_get, target_asking = command_stats(target, "get"), command_stats(target, "asking")

        assert await link.call(moved, "GET", moved) == b"on the target"
        assert command_stats(source, "get")[1] == source_get[1] + 1  # the ASK
        assert command_stats(target, "asking")[0] == target_asking[0] + 1
        assert command_stats(target, "get")[0] == target_get[0] + 1

        assert await link.evalsha(ECHO_GET, [moved], []) == b"on the target"
        assert await link.call(stays, "GET", stays) == b"on the source"
        # A key on neither node is created where the slot is going.
        assert await link.call(new, "SET", new, "created") == b"OK"
        assert sorted(keys_in_slot(target, slot)) == [
            f"{tag}:{k}".encode() for k in ("moved", "new")
        ]
        assert keys_in_slot(source, slot) == [stays.encode()]
        assert link._slots[slot] == address(source)  # ASK is for one call; the map stays


async def test_ask_is_followed_with_several_connections_per_node(
    cluster: RedisClusterNodes, open_cluster: Callable[..., Cluster]
) -> None:
    link = open_cluster(connections=2)
    source, target = cluster.servers[2], cluster.servers[1]
    key = f"{tag_owned_by(cluster, source, 'ask-pool')}:k"
    await link.call(key, "SET", key, "v")
    with migrating(cluster, key_slot(key), source, target):
        migrate(source, target, [key])
        assert await link.call(key, "GET", key) == b"v"


async def test_concurrent_ask_redirects_all_reach_their_keys(
    cluster: RedisClusterNodes, open_cluster: Callable[..., Cluster]
) -> None:
    link = open_cluster(connections=1)
    source, target = cluster.servers[0], cluster.servers[2]
    tag = tag_owned_by(cluster, source, "ask-many")
    keys = [f"{tag}:{i}" for i in range(50)]
    await asyncio.gather(*(link.call(key, "SET", key, key) for key in keys))
    with migrating(cluster, key_slot(tag), source, target):
        migrate(source, target, keys)
        replies = await asyncio.gather(
            *(link.call(key, "GET", key) for key in keys), return_exceptions=True
        )
        assert replies == [key.encode() for key in keys]


# -- a node stops and comes back -----------------------------------------------------------------


async def test_a_stopped_node_fails_its_slots_fast_and_serves_them_after_a_restart(
    cluster: RedisClusterNodes,
) -> None:
    # Seeded with the node that stops: while it is down the map is read from the others.
    link = open_link(cluster.url, connect_timeout=CONNECT_TIMEOUT)
    assert isinstance(link, Cluster)
    down, *up = cluster.servers
    assert link.seeds == [address(down)]
    down_key = f"{tag_owned_by(cluster, down, 'down')}:k"
    up_keys = [f"{tag_owned_by(cluster, server, 'up')}:k" for server in up]

    async def served() -> bool:
        try:
            return bool(await link.call(down_key, "SET", down_key, "back") == b"OK")
        except (ConnectionError, ReplyError):  # CLUSTERDOWN while it rejoins
            return False

    try:
        for key in [down_key, *up_keys]:
            await link.call(key, "SET", key, key)
        blocked = asyncio.create_task(link.call(down_key, "BLPOP", f"{down_key}:list", 30))
        with admin(down) as client:
            await eventually(lambda: client.info("clients")["blocked_clients"] == 1)
        try:
            down.stop()
            started = time.monotonic()
            with pytest.raises(ConnectionError):
                await blocked
            for _ in range(3):
                with pytest.raises(ConnectionError):
                    await link.call(down_key, "GET", down_key)
                assert not link._mapped  # a connection error marks the map stale
            assert time.monotonic() - started < FAST
            # The other primaries keep serving their slots (until the cluster gives up).
            for key in up_keys:
                assert await link.call(key, "GET", key) == key.encode()
            assert time.monotonic() - started < FAST
        finally:
            down.start()

        await eventually(served, timeout=RESTART_DEADLINE, what="the restarted node serving")
        assert link._mapped
        assert await link.call(down_key, "GET", down_key) == b"back"
        with admin(down) as client:
            assert client.get(down_key) == b"back"
    finally:
        await link.aclose()


# -- primaries and scan --------------------------------------------------------------------------


async def test_primaries_are_one_client_per_master(
    cluster: RedisClusterNodes, open_cluster: Callable[..., Cluster]
) -> None:
    link = open_cluster()
    clients = await link.primaries()  # reads the map itself
    assert sorted(client.where for client in clients) == sorted(
        f"{host}:{port}" for host, port in cluster.nodes
    )
    ids = [await client.execute("CLUSTER", "MYID") for client in clients]
    assert sorted(i.decode() for i in ids) == sorted(node_id(s) for s in cluster.servers)
    for client in clients:
        assert (await client.execute("ROLE"))[0] == b"master"
    assert await link.primaries() == clients  # the same clients, not new connections


async def test_store_scan_finds_keys_on_all_three_nodes(
    cluster: RedisClusterNodes, redis_cluster_url: str
) -> None:
    store: Any = store_from_config(State(backend="redis", url=redis_cluster_url, timeout="2s"))
    names = [f"gw-{i}" for i in range(2000)]  # several SCAN pages (COUNT 500) per node
    try:
        await asyncio.gather(*(store.heartbeat(name, name.encode(), 60) for name in names))
        for server in cluster.servers:
            with admin(server) as client:
                assert client.dbsize() > 500, f"too few keys on {server.port} to page"
        found = await store.scan("spork:instances:*")
        assert sorted(found) == sorted(f"spork:instances:{name}" for name in names)
        assert len(set(await store.scan("spork:instances:*", limit=700))) == 700
        assert await store.instances() == {name: name.encode() for name in names}
    finally:
        await store.close()


# -- concurrency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("connections", [1, 3])
async def test_500_concurrent_scripts_over_every_node_get_their_own_replies(
    cluster: RedisClusterNodes, open_cluster: Callable[..., Cluster], connections: int
) -> None:
    for server in cluster.servers:
        with admin(server) as client:
            client.script_flush()  # every node answers NOSCRIPT first, mid-burst
    link = open_cluster(connections=connections)
    keys = [f"spread:{i}" for i in range(500)]
    slots_read = sum(command_stats(s, "cluster|slots")[0] for s in cluster.servers)

    replies = await asyncio.gather(*(link.evalsha(INCRBY, [k], [i]) for i, k in enumerate(keys)))

    assert replies == [[key.encode(), i] for i, key in enumerate(keys)]
    # 500 first calls, one read of the slot map between them.
    assert sum(command_stats(s, "cluster|slots")[0] for s in cluster.servers) == slots_read + 1
    owners = slot_owners(cluster.servers[0])
    by_owner: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_owner.setdefault(owners[key_slot(key)][1], []).append(i)
    assert len(by_owner) == 3
    for server in cluster.servers:
        mine = by_owner[server.port]
        with admin(server) as client:
            pipe = client.pipeline(transaction=False)
            for i in mine:
                pipe.get(keys[i])
            assert pipe.execute() == [str(i).encode() for i in mine]


# -- open_link -----------------------------------------------------------------------------------


async def test_a_redis_url_opens_a_standalone_link_on_its_database(
    redis_server: RedisServer, redis_url: str
) -> None:
    link = open_link(redis_url.rpartition("/")[0] + "/2", connect_timeout=5, connections=2)
    assert isinstance(link, Standalone)
    try:
        assert await link.call("k", "SET", "k", "in db 2") == b"OK"
        assert await link.evalsha(ECHO_GET, ["k"], []) == b"in db 2"
        assert await link.primaries() == [link.client]
    finally:
        await link.aclose()
    with redis_server.client(db=2) as client:
        assert client.get("k") == b"in db 2"
        client.flushdb()
    with redis_server.client(db=0) as client:
        assert client.get("k") is None


async def test_a_unix_url_opens_a_standalone_link_over_the_socket(
    own_server: Callable[..., RedisServer], socket_dir: Path
) -> None:
    sock = socket_dir / "r.sock"
    server = own_server("--unixsocket", str(sock))
    link = open_link(f"unix://{sock}?db=1", connect_timeout=5)
    assert isinstance(link, Standalone)
    try:
        await link.call("k", "SET", "k", "over unix")
        info = await link.call("k", "CLIENT", "INFO")
    finally:
        await link.aclose()
    assert b" laddr=" + str(sock).encode() in info and b" db=1 " in info
    with server.client(db=1) as client:
        assert client.get("k") == b"over unix"


async def test_a_cluster_url_with_two_nodes_skips_one_that_is_down(
    cluster: RedisClusterNodes,
) -> None:
    (host, port), *_ = cluster.nodes
    dead = free_port()
    link = open_link(f"redis+cluster://{host}:{dead},{host}:{port}", connect_timeout=5)
    assert isinstance(link, Cluster)
    assert link.seeds == [(host, dead), (host, port)]
    try:
        keys = [f"{tag_owned_by(cluster, server, 'url')}:k" for server in cluster.servers]
        for key in keys:
            assert await link.call(key, "SET", key, key) == b"OK"
        for key, server in zip(keys, cluster.servers, strict=True):
            with admin(server) as client:
                assert client.get(key) == key.encode()
    finally:
        await link.aclose()


def test_a_cluster_url_takes_credentials_and_default_ports() -> None:
    link = open_link("redis+cluster://us%40r:p%3Aw@a:7001,b", connect_timeout=1, connections=3)
    assert isinstance(link, Cluster)
    assert link.seeds == [("a", 7001), ("b", 6379)]
    assert (link._username, link._password, link._connections) == ("us@r", "p:w", 3)


async def test_a_sentinel_url_reaches_the_master_on_its_database(
    redis_sentinel: Any, redis_sentinel_url: str
) -> None:
    link = open_link(redis_sentinel.url(db=4), connect_timeout=5)
    assert isinstance(link, Sentinel)
    assert link.service == redis_sentinel.service
    assert link.sentinels == [(s.host, s.port) for s in redis_sentinel.sentinels]
    try:
        assert await link.call("k", "SET", "k", "via sentinel") == b"OK"
    finally:
        await link.aclose()
    with redis_sentinel.master.client(db=4) as client:
        assert client.get("k") == b"via sentinel"
        client.flushdb()


def test_a_sentinel_url_defaults_its_ports_and_database() -> None:
    link = open_link("redis+sentinel://a,b:26380/svc", connect_timeout=1)
    assert isinstance(link, Sentinel)
    assert (link.sentinels, link.service) == ([("a", 26379), ("b", 26380)], "svc")
    assert link._options["db"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/",
        "redis+sentinel://a,b",
    ],
)
def test_a_sentinel_url_without_a_master_name_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="name the master"):
        open_link(url, connect_timeout=1)


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="scheme"):
        open_link("http://127.0.0.1:6379", connect_timeout=1)


def test_a_sentinel_url_with_a_bad_database_is_refused() -> None:
    with pytest.raises(ValueError):
        open_link("redis+sentinel://127.0.0.1:26379/mymaster/two", connect_timeout=1)


@pytest.mark.parametrize("scheme", ["redis+cluster", "redis+sentinel"])
def test_ipv6_literals_in_cluster_and_sentinel_urls(scheme: str) -> None:
    link: Any = open_link(f"{scheme}://[::1]:7000/svc", connect_timeout=1)
    assert (link.seeds if scheme == "redis+cluster" else link.sentinels) == [("::1", 7000)]
