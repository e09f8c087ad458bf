"""Rate limiting over a StateStore: limits from config, client keys, and response headers.

The decision itself is one atomic store primitive, ``StateStore.rate_limit``; this module holds
no state and does no I/O of its own. For ``rate`` requests per ``period`` and a ``burst``:

``gcra``
    Generic cell rate algorithm. Emission interval ``T = period / rate``; the store keeps the
    theoretical arrival time (TAT). A request of cost ``c`` is admitted when
    ``max(TAT, now) + c*T - now <= capacity * T``, and then TAT becomes ``max(TAT, now) + c*T``.
    ``capacity = rate + burst``, so from idle exactly ``rate + burst`` requests pass at once
    (exactly ``rate`` with no burst: "N requests per period"), then one every ``T``.
    ``remaining = floor((capacity*T - (TAT - now)) / T)``; ``reset_after = TAT - now``.
``token_bucket``
    A bucket of ``capacity = rate + burst`` tokens refilled continuously at ``rate / period``;
    a request takes ``cost`` tokens when that many are there. It admits exactly what GCRA
    admits (the two are duals); it stores ``{tokens, ts}`` instead of one number.
    ``remaining = floor(tokens)``; ``reset_after`` is the time until the bucket is full.
``sliding_window``
    A sliding log: every admitted unit is recorded with its time and counts while it is less
    than ``period`` old. A request is admitted when the recorded units plus its cost do not
    exceed ``rate``, so no window of length ``period`` ever holds more than ``rate`` admitted
    units, exactly. ``burst`` is ignored (capacity = rate). Memory is one entry per admitted
    unit within the last period. ``reset_after`` is when the newest entry leaves the window.

``retry_after`` is the wait after which the same request would be admitted (0 when allowed).
Decisions allow 1 µs of clock tolerance to absorb float rounding. Time comes from the Redis
server (``TIME``) or, for the memory backend, its clock. A denied request changes nothing.
"""

from __future__ import annotations

import hashlib
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from spork_cli.config.model import GatewayConfig, RateLimit, RateTier, Route
from spork_cli.state import (
    Algorithm,
    LimitResult,
    StateStore,
    glob_literal,
    limit_capacity,
    limit_key,
)

__all__ = ["Limit", "LimitResult", "acquire", "client_key", "headers"]


@dataclass(frozen=True, slots=True)
class Limit:
    """``rate`` requests per ``period`` seconds, plus ``burst`` extra at once (not for the
    sliding window)."""

    rate: int
    period: float
    burst: int = 0
    algorithm: Algorithm = "gcra"

    @classmethod
    def from_config(cls, config: RateLimit, *, authenticated: bool = False) -> Limit:
        """The limit of a route's anonymous tier, or of its authenticated tier when asked and
        configured (the tier shares the route's algorithm)."""
        tier: RateLimit | RateTier = config
        if authenticated and config.authenticated is not None:
            tier = config.authenticated
        return cls(tier.requests, tier.per, tier.burst or 0, config.algorithm)

    @property
    def capacity(self) -> int:
        """Requests admitted at once from idle; what ``remaining`` counts down from."""
        return limit_capacity(self.algorithm, self.rate, self.burst)


async def acquire(store: StateStore, key: str, limit: Limit, cost: int = 1) -> LimitResult:
    """Take ``cost`` from the limiter at ``key``; a limit of zero requests denies without I/O."""
    if limit.rate == 0:
        return LimitResult(False, 0, 0, limit.period, limit.period)
    # cost 0 reads the state without taking from it
    return await store.rate_limit(key, limit.algorithm, limit.rate, limit.period, limit.burst, cost)


_PLAIN = frozenset(string.ascii_letters + string.digits + "._~+/=@:-")


def _part(value: str) -> str:
    # Client-supplied values must not break the hash tag ("}") or the "|" separator, nor make
    # keys arbitrarily long: anything unusual is replaced by a digest.
    if len(value) <= 64 and all(char in _PLAIN for char in value):
        return value
    return "~" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), "")
    return value


def client_key(
    parts: Sequence[str],
    ip: str,
    sub: str | None,
    headers: Mapping[str, str],
    route: str,
) -> str:
    """The client part of a limiter key, from a route's ``key`` list.

    ``ip`` -> ``ip=<ip>``; ``user`` -> ``user=<sub>``, or ``ip=<ip>`` when anonymous;
    ``route`` -> ``route=<route>`` (one limit shared by every client); ``header:NAME`` ->
    ``header:<name>=<value>`` (empty when absent). Parts are joined with ``|`` in the configured
    order, duplicates dropped; labels keep a user named like an address apart from that address.
    """
    pieces: list[str] = []
    for part in parts:
        if part == "ip":
            piece = f"ip={_part(ip)}"
        elif part == "user":
            piece = f"user={_part(sub)}" if sub else f"ip={_part(ip)}"
        elif part == "route":
            piece = f"route={_part(route)}"
        elif part.startswith("header:"):
            name = part.removeprefix("header:")
            piece = f"header:{name.lower()}={_part(_header(headers, name))}"
        else:
            raise ValueError(f"unknown rate limit key part {part!r}")
        if piece not in pieces:
            pieces.append(piece)
    return "|".join(pieces)


def _seconds(value: float) -> int:
    return max(math.ceil(value), 0)


def headers(result: LimitResult, limit: Limit) -> dict[str, str]:
    """Response headers for a decision (DESIGN section 6).

    ``RateLimit-Policy: <rate>;w=<period>[;burst=<burst>]`` and ``RateLimit: limit=<capacity>,
    remaining=<n>, reset=<s>`` (IETF draft ratelimit-headers), the ``X-RateLimit-*`` trio, and
    ``Retry-After`` when denied. Seconds are whole, rounded up; ``Retry-After`` is at least 1.
    """
    policy = f"{limit.rate};w={max(_seconds(limit.period), 1)}"
    if limit.burst and limit.algorithm != "sliding_window":
        policy += f";burst={limit.burst}"
    reset = _seconds(result.reset_after)
    out = {
        "RateLimit-Policy": policy,
        "RateLimit": f"limit={result.limit}, remaining={result.remaining}, reset={reset}",
        "X-RateLimit-Limit": str(result.limit),
        "X-RateLimit-Remaining": str(result.remaining),
        "X-RateLimit-Reset": str(reset),
    }
    if not result.allowed:
        out["Retry-After"] = str(max(_seconds(result.retry_after), 1))
    return out


# -- looking inside (the CLI and the admin API; never on the request path) ---------------------


def limited_routes(config: GatewayConfig, route: str | None = None) -> list[tuple[str, Route]]:
    """(route id, route) of every rate-limited route, or of the one named (by id or path)."""
    found = [
        (r.route_id, r)
        for r in config.routes
        if r.rate_limit is not None and (route is None or route in (r.route_id, r.path))
    ]
    return found


async def limit_rows(
    store: StateStore, config: GatewayConfig, route: str | None = None, key: str | None = None
) -> list[dict[str, object]]:
    """What each client of each limited route has left, read without taking from it."""
    prefix = config.state.prefix
    rows: list[dict[str, object]] = []
    for route_id, cfg in limited_routes(config, route):
        assert cfg.rate_limit is not None
        tiers = [("", Limit.from_config(cfg.rate_limit))]
        if cfg.rate_limit.authenticated is not None:
            tiers.append((":auth", Limit.from_config(cfg.rate_limit, authenticated=True)))
        for suffix, limit in tiers:
            head = limit_key(prefix, route_id + suffix, "")[:-1]  # up to the client part
            for stored in sorted(await store.scan(glob_literal(head) + "*}")):
                client = stored[len(head) : -1]
                if client.startswith("auth:") or (key is not None and key not in client):
                    continue  # the authenticated tier's keys share the anonymous prefix
                result = await acquire(store, stored, limit, cost=0)
                rows.append(
                    {
                        "route": route_id,
                        "tier": "authenticated" if suffix else "anonymous",
                        "client": client,
                        "limit": result.limit,
                        "remaining": result.remaining,
                        "reset_after": round(result.reset_after, 3),
                    }
                )
    return rows


async def reset_limits(
    store: StateStore, config: GatewayConfig, route: str, key: str | None = None
) -> int:
    """Forget the limiter state of ``route`` (every client, or those whose key contains
    ``key``); returns how many keys were deleted."""
    prefix = config.state.prefix
    doomed: set[str] = set()
    for route_id, _ in limited_routes(config, route):
        for suffix in ("", ":auth"):
            head = limit_key(prefix, route_id + suffix, "")[:-1]
            for stored in await store.scan(glob_literal(head) + "*}"):
                if key is None or key in stored[len(head) : -1]:
                    doomed.add(stored)
    return await store.delete(sorted(doomed)) if doomed else 0
