"""The Redis backend: standalone (redis://, rediss://, unix://), Cluster (redis+cluster://)
and Sentinel (redis+sentinel://host:port[,host:port]/service[/db]).

Every call is bounded by ``state.timeout`` (default 50 ms) so no request waits on a sick
Redis; failures surface as StateError for the caller's ``on_error`` policy to handle. Calls go
through spork's own pipelined RESP client (`spork_cli.state.resp`, routed by
`spork_cli.state.links`): one round trip each, many in flight on one connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from importlib import resources
from typing import Any, TypeVar

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
from spork_cli.state.links import open_link
from spork_cli.state.resp import Arg, RespError, Script

T = TypeVar("T")
BREAKER_SCRIPTS = ("allow", "record", "read", "force")
CACHE_SCRIPTS = ("cache_get", "cache_set", "cache_invalidate", "cache_count")
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
        # Requests are pipelined, so a few connections per node carry any load.
        self.link = open_link(
            config.url, connect_timeout=max(config.timeout, 0.5), connections=config.pool_size
        )
        # Scripts are sent by digest; a server that lacks one gets the source once (NOSCRIPT).
        self._limiters: dict[str, Script] = {name: Script(lua_source(name)) for name in ALGORITHMS}
        common = lua_source("breaker_common")
        self._breakers = {
            name: Script(common + "\n" + lua_source(f"breaker_{name}")) for name in BREAKER_SCRIPTS
        }
        self._cache = {name: Script(lua_source(name)) for name in CACHE_SCRIPTS}

    async def _call(self, work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await work
        except TimeoutError as exc:
            raise StateError(f"Redis did not answer within {self.timeout * 1000:g} ms") from exc
        except (RespError, OSError) as exc:
            raise StateError(f"Redis failed: {exc}") from exc

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self.link.aclose()

    async def ping(self, timeout: float | None = None) -> None:
        if timeout is None:
            await self._call(self.link.call("", "PING"))
            return
        try:
            async with asyncio.timeout(timeout):
                await self.link.call("", "PING")
        except TimeoutError as exc:
            raise StateError(f"Redis did not answer within {timeout:g}s") from exc
        except (RespError, OSError) as exc:
            raise StateError(f"Redis failed: {exc}") from exc

    async def scan(self, match: str, limit: int = 10_000) -> list[str]:
        found: list[str] = []

        async def collect() -> None:
            for node in await self.link.primaries():
                cursor = b"0"
                while True:
                    cursor, keys = await node.execute("SCAN", cursor, "MATCH", match, "COUNT", 500)
                    found.extend(_text(key) for key in keys)
                    if len(found) >= limit:
                        del found[limit:]
                        return
                    if cursor == b"0":
                        break

        await self._slow(collect(), "listing keys")
        return found

    async def _slow(self, work: Awaitable[None], what: str) -> None:
        """The CLI's walks over many keys: a longer bound than one request's."""
        try:
            async with asyncio.timeout(max(self.timeout, 5.0)):
                await work
        except TimeoutError as exc:
            raise StateError(f"Redis did not answer in time while {what}") from exc
        except (RespError, OSError) as exc:
            raise StateError(f"Redis failed: {exc}") from exc

    async def delete(self, keys: list[str]) -> int:
        deleted = 0
        # One key per call: keys of different entities live in different cluster slots.
        for key in keys:
            deleted += int(await self._call(self.link.call(key, "DEL", key)))
        return deleted

    async def revoke(self, jti: str, ttl: float) -> None:
        if ttl > 0:
            milliseconds = max(1, int(ttl * 1000))
            key = revoked_key(self.prefix, jti)
            await self._call(self.link.call(key, "SET", key, b"1", "PX", milliseconds))

    async def is_revoked(self, jti: str) -> bool:
        key = revoked_key(self.prefix, jti)
        return bool(await self._call(self.link.call(key, "EXISTS", key)))

    async def heartbeat(self, instance: str, info: bytes, ttl: float) -> None:
        key = instance_key(self.prefix, instance)
        await self._call(self.link.call(key, "SET", key, info, "PX", max(1, int(ttl * 1000))))

    async def instances(self) -> dict[str, bytes]:
        head = instance_key(self.prefix, "")
        found: dict[str, bytes] = {}
        for key in await self.scan(head + "*"):
            value = await self._call(self.link.call(key, "GET", key))
            if value is not None:
                found[key[len(head) :]] = value
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
        reply = await self._call(self.link.evalsha(script, [key], [repr(first), capacity, cost]))
        allowed, remaining, reset_us, retry_us = (int(part) for part in reply)
        return LimitResult(
            allowed=bool(allowed),
            limit=capacity,
            remaining=remaining,
            reset_after=max(reset_us, 0) / 1_000_000,
            retry_after=0.0 if allowed else max(retry_us, 0) / 1_000_000,
        )

    async def breaker_allow(self, key: str, policy: BreakerPolicy) -> BreakerDecision:
        args: list[Arg] = [policy.half_open_probes, _us(policy.cooldown), _us(policy.idle_ttl)]
        reply = await self._call(self.link.evalsha(self._breakers["allow"], [key], args))
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
        args: list[Arg] = [
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
        reply = await self._call(self.link.evalsha(self._breakers["record"], [key], args))
        state = _breaker_state(reply)
        assert state is not None
        return state

    async def breaker_read(self, key: str) -> BreakerState | None:
        return _breaker_state(
            await self._call(self.link.evalsha(self._breakers["read"], [key], []))
        )

    async def breaker_force(self, key: str, state: ForcedState | None) -> BreakerState | None:
        reply = await self._call(self.link.evalsha(self._breakers["force"], [key], [state or ""]))
        return _breaker_state(reply)

    async def breaker_reset(self, key: str) -> None:
        await self._call(self.link.call(key, "DEL", key))

    async def cache_get(self, key: str, marker: str) -> CacheHit | None:
        script = self._cache["cache_get"]
        reply = await self._call(self.link.evalsha(script, [key, marker], []))
        if not reply:
            return None
        value, age_us = reply
        return CacheHit(bytes(value), float(_text(age_us)) / 1_000_000)

    async def cache_set(
        self, key: str, value: bytes, ttl: float, marker: str, asked: float
    ) -> bool:
        milliseconds = int(ttl * 1000)
        if milliseconds < 1:
            return False
        script = self._cache["cache_set"]
        since = max(int(asked * 1_000_000), 0)
        reply = await self._call(
            self.link.evalsha(script, [key, marker], [value, milliseconds, since])
        )
        return bool(reply)

    async def cache_invalidate(self, marker: str, ttl: float) -> None:
        script = self._cache["cache_invalidate"]
        await self._call(self.link.evalsha(script, [marker], [max(int(ttl * 1000), 1)]))

    async def cache_count(self, stats: str, counts: Mapping[str, int]) -> None:
        if not counts:
            return
        args: list[Arg] = [_STATS_TTL_MS]
        for field, n in counts.items():
            args += [field, n]
        await self._call(self.link.evalsha(self._cache["cache_count"], [stats], args))

    async def cache_stats(self, stats: str) -> dict[str, int]:
        flat = await self._call(self.link.call(stats, "HGETALL", stats))
        return {_text(k): int(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
