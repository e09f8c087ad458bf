"""redis-server killed and restarted under traffic, for each on_error policy: behaviour as
configured, no request waits much longer than the state timeout, and the limiter is back on
Redis within a second of its return."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from spork_cli.config.model import GatewayConfig
from spork_cli.gateway.app import build_app
from tests.support import RedisServer, Upstream

TIMEOUT = 0.1
SLACK = 0.4  # scheduling on a busy 2-core machine; far below any hang


@pytest.mark.parametrize(
    ("policy", "outage_status"), [("open", 200), ("closed", 503), ("local", 200)]
)
async def test_redis_outage_under_traffic(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    upstream: Upstream,
    redis_server: RedisServer,
    redis_url: str,
    policy: str,
    outage_status: int,
) -> None:
    config = GatewayConfig.model_validate(
        {
            "state": {"backend": "redis", "url": redis_url, "timeout": "100ms", "on_error": policy},
            "services": [{"name": "u", "endpoints": [upstream.url]}],
            "routes": [
                {
                    "path": "/",
                    "service": "u",
                    "rate_limit": {"requests": 100, "per": "1h", "key": ["route"]},
                }
            ],
        }
    )
    client = await aiohttp_client(build_app(config))
    probe = redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=1)

    async def one() -> tuple[int, float]:
        started = time.monotonic()
        async with client.get("/x") as response:
            await response.read()
            return response.status, time.monotonic() - started

    try:
        assert (await one())[0] == 200
        assert probe.keys("spork:{rl:*") != []
        redis_server.stop(kill=True)
        during = [await one() for _ in range(15)]
        assert {status for status, _ in during} == {outage_status}
        assert max(seconds for _, seconds in during) < TIMEOUT + SLACK
    finally:
        if not redis_server.running:
            redis_server.start()
    # The restarted server is empty; the first request that reaches it writes the key again.
    back = time.monotonic()
    while not probe.keys("spork:{rl:*"):
        assert time.monotonic() - back < 1.0, "not back on Redis within a second"
        status, _ = await one()
        assert status in (200, outage_status)
    probe.close()
