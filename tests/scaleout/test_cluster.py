"""Three `spork serve` processes on a real 3-node Redis Cluster act as one gateway."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.conftest import StartSpork
from tests.scaleout.fleet import (
    assert_one_breaker,
    assert_one_instance_list,
    assert_one_rate_limit,
    assert_one_revocation_list,
    revoke_with_admin_api,
    revoke_with_cli,
    start_fleet,
)
from tests.support import RedisClusterNodes, SporkRunner, Upstream, UpstreamFactory


async def test_three_instances_share_one_state_on_a_cluster(
    tmp_path: Path,
    redis_cluster: RedisClusterNodes,
    redis_cluster_url: str,
    upstream: Upstream,
    upstream_factory: UpstreamFactory,
    spork_server: StartSpork,
    http: aiohttp.ClientSession,
    run_spork: SporkRunner,
) -> None:
    flaky = await upstream_factory("flaky")
    fleet = await start_fleet(
        tmp_path, redis_cluster_url, upstream, flaky, spork_server, http, run_spork
    )

    await assert_one_rate_limit(fleet, "alpha")
    await assert_one_breaker(fleet, "b1", via=0)
    await assert_one_revocation_list(fleet, revoke_with_cli(fleet))
    await assert_one_revocation_list(fleet, revoke_with_admin_api(fleet, 1))
    await assert_one_instance_list(fleet)
