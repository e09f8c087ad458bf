"""Three `spork serve` processes behind a real Redis Sentinel act as one gateway, before and
after the master dies and the sentinels promote its replica.

Replication is asynchronous: a write the old master took but had not yet passed on is lost
with it. So the test waits for the replica to acknowledge everything before the crash (to
know what the new master holds), and asserts exactness on a limit key created after the
failover.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path

import aiohttp
import orjson

from spork_cli.gateway.heartbeat import BEAT
from spork_cli.state import instance_key, limit_key
from tests.conftest import StartSpork
from tests.scaleout.fleet import (
    INSTANCES,
    Fleet,
    assert_one_breaker,
    assert_one_instance_list,
    assert_one_rate_limit,
    assert_one_revocation_list,
    breaker_open_everywhere,
    problem,
    revoke_with_admin_api,
    revoke_with_cli,
    start_fleet,
)
from tests.support import SporkRunner, SporkServer, Upstream, UpstreamFactory, eventually
from tests.support.sentinel import DataServer, RedisSentinel, keys_on

# The sentinels call a master down after 1 s, then agree, elect and promote: ~2-3 s.
FAILOVER_DEADLINE = 15.0
# state.timeout of the fleet is 1 s; a refused connection fails much sooner.
OUTAGE_ANSWER = 1.5
# Every instance beats once per BEAT; allow one beat plus a busy machine.
HEARTBEAT_DEADLINE = BEAT + 5.0


def beats_since(server: DataServer, since: float) -> int:
    """Instances whose last heartbeat on ``server`` was written after ``since`` (epoch s)."""
    with server.client() as client:
        keys = client.keys(instance_key("spork", "*"))
        values = client.mget(keys) if keys else []
    beats = [orjson.loads(value) for value in values if value is not None]
    return sum(1 for beat in beats if beat["seen"] > since)


async def fail_over(fleet: Fleet, topology: RedisSentinel) -> tuple[DataServer, float]:
    """Kill the master; every instance fails closed meanwhile and, once the sentinels name the
    promoted replica, writes its state there. The new master, and when the old one died."""
    old = await asyncio.to_thread(topology.kill_master)
    killed_at = time.time()
    for server in fleet.servers:
        started = time.monotonic()
        reply = await fleet.get(server, "/limited/x", {"X-Client": "outage"})
        await problem(reply, 503, "state-unavailable")
        assert time.monotonic() - started < OUTAGE_ANSWER
    new = await asyncio.to_thread(topology.wait_new_master, old, FAILOVER_DEADLINE)

    async def admitted(server: SporkServer, client: str) -> bool:
        reply = await fleet.get(server, "/limited/x", {"X-Client": client})
        return reply.status == 200

    for index, server in enumerate(fleet.servers):
        await eventually(
            partial(admitted, server, f"probe-{index}"),
            timeout=FAILOVER_DEADLINE,
            interval=0.05,
            what=f"{server.url} admitting through the new master {new.port}",
        )
    landed = keys_on(new, "spork:{rl:*")
    for index in range(INSTANCES):
        assert limit_key("spork", "/limited", f"header:x-client=probe-{index}") in landed
    return new, killed_at


async def test_three_instances_share_one_state_through_a_sentinel_failover(
    tmp_path: Path,
    redis_sentinel: RedisSentinel,
    redis_sentinel_url: str,
    upstream: Upstream,
    upstream_factory: UpstreamFactory,
    spork_server: StartSpork,
    http: aiohttp.ClientSession,
    run_spork: SporkRunner,
) -> None:
    flaky = await upstream_factory("flaky")
    fleet = await start_fleet(
        tmp_path, redis_sentinel_url, upstream, flaky, spork_server, http, run_spork
    )

    await assert_one_rate_limit(fleet, "before")
    await assert_one_breaker(fleet, "b1", via=0)  # left forced open
    await assert_one_revocation_list(fleet, revoke_with_cli(fleet))
    await assert_one_instance_list(fleet)

    # Everything so far has reached the replica, so the new master holds it all.
    await asyncio.to_thread(redis_sentinel.replicate)
    new, killed_at = await fail_over(fleet, redis_sentinel)
    # The entries replicated before the crash would list the instances for a while anyway;
    # fresh heartbeats on the new master show that each instance keeps announcing itself.
    # They come every BEAT seconds, so they are awaited alongside the checks below.
    heartbeats = asyncio.create_task(
        eventually(
            lambda: beats_since(new, killed_at) == INSTANCES,
            timeout=HEARTBEAT_DEADLINE,
            interval=0.2,
            what="a heartbeat of every instance on the new master",
        )
    )
    try:
        await assert_one_rate_limit(fleet, "after")
        await breaker_open_everywhere(fleet, "b1")  # the forced state came along
        await assert_one_breaker(fleet, "b2", via=2)
        await assert_one_revocation_list(fleet, revoke_with_admin_api(fleet, 1))
        await heartbeats
    finally:
        heartbeats.cancel()
    await assert_one_instance_list(fleet)
