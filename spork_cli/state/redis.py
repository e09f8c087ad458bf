"""The Redis backend: standalone (redis://, rediss://, unix://), Cluster (redis+cluster://)
and Sentinel (redis+sentinel://host:port[,host:port]/service[/db]).

Every call is bounded by ``state.timeout`` (default 50 ms) so no request waits on a sick
Redis; failures surface as StateError for the caller's ``on_error`` policy to handle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from spork_cli.config.model import State
from spork_cli.errors import StateError
from spork_cli.state import (
    ALGORITHMS,
    BREAKER_BUCKETS,
    CACHE_STATS_TTL,
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    BreakerStateName,
    CacheHit,
    ForcedState,
    LimitResult,
    check_limit_args,
    instance_key,
    revoked_key,
)

T = TypeVar("T")
BREAKER_SCRIPTS = ("allow", "record", "read", "force")
CACHE_SCRIPTS = ("cache_get", "cache_set")
_STATS_TTL_MS = int(CACHE_STATS_TTL * 1000)
_STATES: dict[str, BreakerStateName] = {
    "closed": "closed",
    "open": "open",
    "half_open": "half_open",
}
_FORCED: dict[str, ForcedState | None] = {"open": "open", "closed": "closed", "": None}


def lua_source(name: str) -> str:
    """The text of ``spork_cli/state/lua/<name>.lua`` (package data)."""
    source = resources.files("spork_cli.state").joinpath("lua").joinpath(f"{name}.lua")
    return source.read_text("utf-8")


def connect(url: str, pool_size: int, timeout: float) -> Any:
    """A redis-py asyncio client for any URL form spork accepts."""
    parts = urlsplit(url)
    socket: dict[str, Any] = {
        "socket_timeout": max(timeout, 0.001),
        "socket_connect_timeout": max(timeout, 0.5),
    }
    if parts.scheme == "redis+cluster":
        nodes = []
        for node in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = node.rpartition(":")
            nodes.append(ClusterNode(host or node, int(port) if port.isdigit() else 6379))
        return RedisCluster(
            startup_nodes=nodes,
            max_connections=pool_size,
            username=parts.username,
            password=parts.password,
            **socket,
        )
    if parts.scheme == "redis+sentinel":
        hosts = []
        for node in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = node.rpartition(":")
            hosts.append((host or node, int(port) if port.isdigit() else 26379))
        path = [p for p in parts.path.split("/") if p]
        service, db = path[0], int(path[1]) if len(path) > 1 else 0
        sentinel = Sentinel(hosts, sentinel_kwargs=socket, **socket)  # type: ignore[no-untyped-call]
        return sentinel.master_for(service, db=db, password=parts.password)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=timeout, **socket
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seconds(microseconds: Any) -> float:
    return int(microseconds) / 1_000_000


def _breaker_state(reply: Any) -> BreakerState | None:
    """A breaker report of lua/breaker_common.lua (times in server microseconds)."""
    if not reply:
        return None
    state, failures, requests, failed, opened, cooldown, next_at, forced, trips, probes = reply[:10]
    return BreakerState(
        state=_STATES[_text(state)],
        failures=int(failures),
        window_requests=int(requests),
        window_failures=int(failed),
        opened_at=None if int(opened) < 0 else _seconds(opened),
        cooldown=_seconds(cooldown),
        next_probe_at=None if int(next_at) < 0 else _seconds(next_at),
        forced=_FORCED[_text(forced)],
        trips=int(trips),
        probes=int(probes),
        changed=bool(int(reply[10])),
    )


def _us(seconds: float) -> str:
    return repr(seconds * 1_000_000)


class RedisStore:
    backend = "redis"

    def __init__(self, config: State) -> None:
        assert config.url is not None
        self.url = config.url
        self.prefix = config.prefix
        self.timeout = config.timeout
        self.client: Any = connect(config.url, config.pool_size, config.timeout)
        # register_script only hashes the source; EVALSHA loads it on first use per node
        self._limiters: dict[str, Any] = {
            name: self.client.register_script(lua_source(name)) for name in ALGORITHMS
        }
        common = lua_source("breaker_common")
        self._breakers: dict[str, Any] = {
            name: self.client.register_script(common + "\n" + lua_source(f"breaker_{name}"))
            for name in BREAKER_SCRIPTS
        }
        self._cache = {
            name: self.client.register_script(lua_source(name)) for name in CACHE_SCRIPTS
        }

    async def _call(self, work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await work
        except TimeoutError as exc:
            raise StateError(f"Redis did not answer within {self.timeout * 1000:g} ms") from exc
        except (RedisError, OSError) as exc:
            raise StateError(f"Redis failed: {exc}") from exc
        except Exception as exc:
            # The client's own bugs under cancellation (seen: a connection whose writer is
            # gone) must follow on_error like any other failure, never become a 500.
            raise StateError(f"Redis client failed: {type(exc).__name__}: {exc}") from exc

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> None:
        await self._call(self.client.ping())

    async def scan(self, match: str, limit: int = 10_000) -> list[str]:
        found: list[str] = []

        async def collect() -> None:
            async for key in self.client.scan_iter(match=match, count=500):
                found.append(key.decode() if isinstance(key, bytes) else str(key))
                if len(found) >= limit:
                    return

        try:
            async with asyncio.timeout(max(self.timeout, 5.0)):
                await collect()
        except TimeoutError as exc:
            raise StateError("Redis did not answer in time while listing keys") from exc
        except (RedisError, OSError) as exc:
            raise StateError(f"Redis failed: {exc}") from exc
        return found

    async def delete(self, keys: list[str]) -> int:
        deleted = 0
        # One key per call: keys of different entities live in different cluster slots.
        for key in keys:
            deleted += int(await self._call(self.client.delete(key)))
        return deleted

    async def revoke(self, jti: str, ttl: float) -> None:
        if ttl > 0:
            milliseconds = max(1, int(ttl * 1000))
            await self._call(self.client.set(revoked_key(self.prefix, jti), b"1", px=milliseconds))

    async def is_revoked(self, jti: str) -> bool:
        return bool(await self._call(self.client.exists(revoked_key(self.prefix, jti))))

    async def heartbeat(self, instance: str, info: bytes, ttl: float) -> None:
        key = instance_key(self.prefix, instance)
        await self._call(self.client.set(key, info, px=max(1, int(ttl * 1000))))

    async def instances(self) -> dict[str, bytes]:
        head = instance_key(self.prefix, "")
        found: dict[str, bytes] = {}

        async def collect() -> None:
            async for key in self.client.scan_iter(match=head + "*", count=500):
                name = key.decode() if isinstance(key, bytes) else str(key)
                value = await self.client.get(key)
                if value is not None:
                    found[name[len(head) :]] = value

        try:
            async with asyncio.timeout(max(self.timeout, 2.0)):
                await collect()
        except TimeoutError as exc:
            raise StateError("Redis did not answer in time while listing instances") from exc
        except (RedisError, OSError) as exc:
            raise StateError(f"Redis failed: {exc}") from exc
        return found

    async def rate_limit(
        self,
        key: str,
        algorithm: str,
        rate: int,
        period: float,
        burst: int,
        cost: int = 1,
    ) -> LimitResult:
        capacity = check_limit_args(algorithm, rate, period, burst, cost)
        period_us = period * 1_000_000
        # gcra and token_bucket take the time per unit; the sliding window the period
        first = period_us if algorithm == "sliding_window" else period_us / rate
        script = self._limiters[algorithm]
        reply = await self._call(script(keys=[key], args=[repr(first), capacity, cost]))
        allowed, remaining, reset_us, retry_us = (int(part) for part in reply)
        return LimitResult(
            allowed=bool(allowed),
            limit=capacity,
            remaining=remaining,
            reset_after=max(reset_us, 0) / 1_000_000,
            retry_after=0.0 if allowed else max(retry_us, 0) / 1_000_000,
        )

    async def breaker_allow(self, key: str, policy: BreakerPolicy) -> BreakerDecision:
        args = [policy.half_open_probes, _us(policy.cooldown), _us(policy.idle_ttl)]
        reply = await self._call(self._breakers["allow"](keys=[key], args=args))
        state, allowed, retry_us, probe, changed, failures = reply
        return BreakerDecision(
            state=_STATES[_text(state)],
            allowed=bool(int(allowed)),
            retry_after=max(_seconds(retry_us), 0.0),
            probe=bool(int(probe)),
            changed=bool(int(changed)),
            failures=int(failures),
        )

    async def breaker_record(
        self, key: str, policy: BreakerPolicy, success: bool, probe: bool
    ) -> BreakerState:
        args = [
            int(success),
            int(probe),
            policy.failures,
            repr(policy.failure_ratio or 0.0),
            _us(policy.window / BREAKER_BUCKETS),
            policy.min_requests,
            _us(policy.cooldown),
            _us(policy.cooldown_cap),
            repr(policy.cooldown_multiplier),
            policy.half_open_probes,
            _us(policy.idle_ttl),
        ]
        reply = await self._call(self._breakers["record"](keys=[key], args=args))
        state = _breaker_state(reply)
        assert state is not None
        return state

    async def breaker_read(self, key: str) -> BreakerState | None:
        return _breaker_state(await self._call(self._breakers["read"](keys=[key], args=[])))

    async def breaker_force(self, key: str, state: ForcedState | None) -> BreakerState | None:
        reply = await self._call(self._breakers["force"](keys=[key], args=[state or ""]))
        return _breaker_state(reply)

    async def breaker_reset(self, key: str) -> None:
        await self._call(self.client.delete(key))

    async def cache_get(self, key: str, stats: str) -> CacheHit | None:
        script = self._cache["cache_get"]
        reply = await self._call(script(keys=[key, stats], args=[_STATS_TTL_MS]))
        if not reply:
            return None
        value, age_us = reply
        return CacheHit(bytes(value), float(_text(age_us)) / 1_000_000)

    async def cache_set(self, key: str, stats: str, value: bytes, ttl: float) -> None:
        milliseconds = int(ttl * 1000)
        if milliseconds < 1:
            return
        script = self._cache["cache_set"]
        await self._call(script(keys=[key, stats], args=[value, milliseconds, _STATS_TTL_MS]))

    async def cache_stats(self, stats: str) -> dict[str, int]:
        found = await self._call(self.client.hgetall(stats))
        return {_text(k): int(v) for k, v in found.items()}
