"""Shared state: the StateStore protocol, its values and its key layout (`spork_cli.state.open`
picks a backend from config).

Backends offer a few atomic primitives, each one round trip; the algorithms built on them
(limiter, breaker, cache) live elsewhere. Key layout (stable: the CLI reads it)::

    {prefix}:{rl:<route>:<client-key>}  limiter state (GCRA TAT, token bucket hash, or the
                                     sliding window's sorted set); expires once replenished
    {prefix}:{cb:<service>}          breaker hash (fields in lua/breaker_common.lua); expires
                                     when idle for `BreakerPolicy.idle_ttl`, never while forced
    {prefix}:{cache:<route>}:<url>:<variant>  cached response (hash: t = stored at, v = the
                                     entry); <url> digests path and query, <variant> the user
                                     and the configured `vary` headers; TTL = freshness
    {prefix}:{cache:<route>}:<url>   when the URL's entries were invalidated (server clock);
                                     an entry stored before it is not served
    {prefix}:{cache:<route>}:stats   what clients were answered (hits, misses, stale,
                                     revalidated), entries written (stores), invalidations
    {prefix}:{jwt}:revoked:<jti>     revocation, TTL = the token's remaining life
    {prefix}:instances:<id>          heartbeat of a running gateway (TTL)

Braces are Redis Cluster hash tags: everything about one entity lives in one slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from spork_cli.config.model import Breaker

Algorithm = Literal["gcra", "token_bucket", "sliding_window"]
ALGORITHMS: tuple[Algorithm, ...] = ("gcra", "token_bucket", "sliding_window")


@dataclass(frozen=True, slots=True)
class LimitResult:
    """One limiter decision. Times are seconds from the moment of the decision."""

    allowed: bool
    limit: int  # the capacity `remaining` counts down from
    remaining: int  # units that could still be admitted now
    reset_after: float  # until the state is back to idle (fully replenished / window empty)
    retry_after: float  # until this request's cost would be admitted; 0 when allowed


def limit_capacity(algorithm: str, rate: int, burst: int) -> int:
    """Units admitted at once from idle: ``rate + burst``; the sliding window ignores burst."""
    return rate if algorithm == "sliding_window" else rate + burst


def check_limit_args(algorithm: str, rate: int, period: float, burst: int, cost: int) -> int:
    """Validate the arguments of ``rate_limit`` (same rules on every backend); the capacity."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown rate limit algorithm {algorithm!r}")
    # A cost of 0 reads the limiter without taking from it (what `spork limits` shows).
    if rate < 1 or period <= 0 or burst < 0 or cost < 0:
        raise ValueError("rate_limit needs rate >= 1, period > 0, burst >= 0 and cost >= 0")
    capacity = limit_capacity(algorithm, rate, burst)
    if cost > capacity:
        raise ValueError(f"a cost of {cost} can never fit a capacity of {capacity}")
    return capacity


BreakerStateName = Literal["closed", "open", "half_open"]
ForcedState = Literal["open", "closed"]
BREAKER_BUCKETS = 10  # the failure-ratio window is this many buckets of window / BREAKER_BUCKETS
BREAKER_TTL_FACTOR = 3  # an idle breaker is forgotten after this many of its longest periods


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """The numbers of one service's breaker (semantics in `spork_cli.policies.breaker`);
    durations in seconds. The store uses the thresholds and times; `failure_on` and
    `failure_statuses` are for `spork_cli.policies.breaker.is_failure`."""

    failures: int = 5
    failure_ratio: float | None = None
    window: float = 30.0
    min_requests: int = 20
    cooldown: float = 30.0
    max_cooldown: float = 300.0
    cooldown_multiplier: float = 1.0
    half_open_probes: int = 1
    failure_on: frozenset[str] = frozenset({"connect", "timeout"})
    failure_statuses: frozenset[int] = frozenset({500, 502, 503, 504})

    def __post_init__(self) -> None:
        if self.failures < 1 or self.min_requests < 1 or self.half_open_probes < 1:
            raise ValueError("breaker failures, min_requests and half_open_probes must be >= 1")
        if self.failure_ratio is not None and not 0 < self.failure_ratio <= 1:
            raise ValueError("breaker failure_ratio must be > 0 and <= 1")
        if self.failure_ratio is not None and self.window <= 0:
            raise ValueError("breaker window must be longer than zero")
        if self.cooldown <= 0 or self.cooldown_multiplier < 1:
            raise ValueError("breaker cooldown must be > 0 and cooldown_multiplier >= 1")

    @classmethod
    def from_config(cls, config: Breaker) -> BreakerPolicy:
        return cls(
            failures=config.failures,
            failure_ratio=config.failure_ratio,
            window=config.window,
            min_requests=config.min_requests,
            cooldown=config.cooldown,
            max_cooldown=config.max_cooldown,
            cooldown_multiplier=config.cooldown_multiplier,
            half_open_probes=config.half_open_probes,
            failure_on=frozenset(config.failure_on),
            failure_statuses=frozenset(config.failure_statuses),
        )

    @property
    def cooldown_cap(self) -> float:
        """The longest cooldown; never below `cooldown` even when misconfigured."""
        return max(self.max_cooldown, self.cooldown)

    @property
    def idle_ttl(self) -> float:
        """Seconds after its last change that a breaker is forgotten (back to closed)."""
        longest = max(self.cooldown_cap, self.window if self.failure_ratio is not None else 0.0)
        return BREAKER_TTL_FACTOR * longest

    def cooldown_for(self, trips: int) -> float:
        """The cooldown of the ``trips``-th trip in a row (1-based), capped."""
        grown = self.cooldown * self.cooldown_multiplier ** max(trips - 1, 0)
        return min(grown, self.cooldown_cap)


@dataclass(frozen=True, slots=True)
class BreakerDecision:
    """May one request go through the breaker now? Times are seconds from the decision."""

    state: BreakerStateName  # the effective state after this call (a forced one wins)
    allowed: bool
    retry_after: float  # when denied: until a request may be admitted again; 0 when allowed
    probe: bool = False  # admitted as a half-open probe: record its outcome with probe=True
    changed: bool = False  # this call moved the breaker from open to half-open
    failures: int = 0  # consecutive failures counted before the breaker opened


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A breaker as stored; what `spork breakers` shows. Times are epoch seconds."""

    state: BreakerStateName  # effective: the forced state when one is set
    failures: int  # consecutive failures (kept while open, cleared on closing)
    window_requests: int  # outcomes in the failure-ratio window (0 without failure_ratio)
    window_failures: int
    opened_at: float | None  # when it last opened; None while closed
    cooldown: float  # of the current open period; 0 once closed
    next_probe_at: float | None  # open: end of the cooldown; half-open: probes given up
    forced: ForcedState | None
    trips: int  # trips in a row; the cooldown grows with it; 0 after closing
    probes: int  # half-open: probes admitted in this half-open period
    changed: bool = False  # set by breaker_record: this call opened or closed the breaker


@dataclass(frozen=True, slots=True)
class CacheHit:
    """A cached response as stored, and how long ago it was stored (by the store's clock)."""

    value: bytes
    age: float


CACHE_STATS_TTL = 7 * 24 * 3600.0  # a route's hit counters are forgotten after a quiet week


class StateStore(Protocol):
    backend: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def scan(self, match: str, limit: int = 10_000) -> list[str]:
        """Keys matching a glob pattern (for the CLI; never on the request path)."""

    async def delete(self, keys: list[str]) -> int: ...

    async def ping(self, timeout: float | None = None) -> None:
        """Raise StateError when the store does not answer within ``timeout`` seconds
        (default: the configured ``state.timeout``), a new connection's login included."""

    async def revoke(self, jti: str, ttl: float) -> None:
        """Deny tokens with this ``jti`` for ``ttl`` seconds (their remaining life)."""

    async def is_revoked(self, jti: str) -> bool: ...

    async def heartbeat(self, instance: str, info: bytes, ttl: float) -> None: ...

    async def instances(self) -> dict[str, bytes]: ...

    async def rate_limit(
        self,
        key: str,
        algorithm: str,
        rate: int,
        period: float,
        burst: int,
        cost: int = 1,
    ) -> LimitResult:
        """Take ``cost`` units from the limiter at ``key`` (see `limit_key`), atomically.

        ``algorithm`` is one of `ALGORITHMS`; the semantics are documented in
        `spork_cli.policies.limiter`. A denied request changes nothing. Raises ValueError on
        arguments `check_limit_args` rejects.
        """

    async def breaker_allow(self, key: str, policy: BreakerPolicy) -> BreakerDecision:
        """May a request pass the breaker at ``key`` (see `breaker_key`)? Atomic; moves an open
        breaker whose cooldown is over to half-open and hands out at most
        ``half_open_probes`` probes."""

    async def breaker_record(
        self, key: str, policy: BreakerPolicy, success: bool, probe: bool
    ) -> BreakerState:
        """Count one outcome, atomically; trips, re-opens or closes the breaker."""

    async def breaker_read(self, key: str) -> BreakerState | None:
        """The stored breaker, unchanged; None when there is none (closed and idle)."""

    async def breaker_force(self, key: str, state: ForcedState | None) -> BreakerState | None:
        """Hold the breaker open or closed on every instance; None clears the force."""

    async def breaker_reset(self, key: str) -> None:
        """Forget the breaker: closed, nothing counted, no force."""

    async def cache_get(self, key: str, marker: str) -> CacheHit | None:
        """The entry at ``key`` (see `cache_key`) and its age; None when there is none, or
        when it was stored before the URL's invalidation ``marker`` (see `cache_marker_key`),
        which deletes it."""

    async def cache_set(
        self, key: str, value: bytes, ttl: float, marker: str, asked: float
    ) -> bool:
        """Store an entry for ``ttl`` seconds, stamped with the store's clock, unless the
        URL's invalidation ``marker`` is from the last ``asked`` seconds (since the request
        that brought the entry went upstream): an answer already out of date is not stored.
        Returns whether it was stored."""

    async def cache_invalidate(self, marker: str, ttl: float) -> None:
        """Mark every entry of one URL stored until now as invalid, on every instance; the
        marker lasts ``ttl`` seconds (the longest any such entry could still be kept)."""

    async def cache_count(self, stats: str, counts: Mapping[str, int]) -> None:
        """Add ``counts`` (hits, misses, stale, revalidated, stores, invalidations...) to the
        route's counters (see `cache_stats_key`)."""

    async def cache_stats(self, stats: str) -> dict[str, int]:
        """The counters of one route (absent ones are 0)."""


def glob_literal(text: str) -> str:
    """``text`` as a SCAN pattern matching only itself, in Redis's glob and in fnmatch alike
    (a character class of one; ``]`` is literal outside a class in both)."""
    return "".join(f"[{c}]" if c in "*?[" else "[\\\\]" if c == "\\" else c for c in text)


def limit_key(prefix: str, route: str, client: str) -> str:
    """``{prefix}:{rl:<route>:<client>}``: the whole ``rl:...`` part is the hash tag."""
    return f"{prefix}:{{rl:{route}:{client}}}"


def breaker_key(prefix: str, service: str) -> str:
    """``{prefix}:{cb:<service>}``: the whole ``cb:...`` part is the hash tag."""
    return f"{prefix}:{{cb:{service}}}"


def cache_key(prefix: str, route: str, digest: str) -> str:
    """``{prefix}:{cache:<route>}:<digest>``: one route's entries share a slot."""
    return f"{prefix}:{{cache:{route}}}:{digest}"


def cache_stats_key(prefix: str, route: str) -> str:
    return f"{prefix}:{{cache:{route}}}:stats"


def cache_marker_key(prefix: str, route: str, url: str) -> str:
    """``{prefix}:{cache:<route>}:<url>``: when the URL's entries were last invalidated (an
    unsafe request succeeded on it). Entries are ``<url>:<variant>``, so never the same key."""
    return f"{prefix}:{{cache:{route}}}:{url}"


def revoked_key(prefix: str, jti: str) -> str:
    return f"{prefix}:{{jwt}}:revoked:{jti}"


def instance_key(prefix: str, instance: str) -> str:
    return f"{prefix}:instances:{instance}"
