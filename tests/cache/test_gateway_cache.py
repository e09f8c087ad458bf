"""The response cache at the gateway, in process, against a real origin on loopback and a real
redis-server (or the memory store): hits and misses, lifetimes, what is never stored, users
and variants kept apart, bypasses, HEAD and conditional requests, one upstream call for many
concurrent misses, the size cap, purging and counting, and Redis outages per on_error."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import redis

from spork_cli.state import cache_key
from tests.authgw.conftest import auth_section, bearer, claims, sign
from tests.cache.conftest import (
    ROUTE,
    Answer,
    Client,
    Gateway,
    at,
    cached_config,
    fetch,
)
from tests.support import RedisServer, Upstream, eventually, pattern_bytes

AdminApi = Callable[[Client], Awaitable[Client]]
KEY_SHAPE = r"^[0-9a-f]{16}:[0-9a-f]{16}$"


@pytest.fixture(params=[pytest.param("memory", id="memory"), pytest.param("redis_url", id="redis")])
def state(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The [state] table of a test that must hold on both backends."""
    if request.param == "memory":
        return {}
    return {"backend": "redis", "url": request.getfixturevalue(request.param), "timeout": "1s"}


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        yield client
    finally:
        client.close()


def entry_key(answer: Answer) -> str:
    """The Redis key of the entry a response came from or went to."""
    return cache_key("spork", ROUTE, answer.headers["X-Cache-Key"])


async def twice(client: Client, path: str, **headers: str) -> tuple[Answer, Answer]:
    first = await fetch(client, path, headers=headers)
    second = await fetch(client, path, headers=headers)
    return first, second


# --- hits, misses and lifetimes ----------------------------------------------------------------


async def test_miss_then_hit_with_the_same_body_and_an_age(
    origin: Upstream, gateway: Gateway, state: dict[str, Any]
) -> None:
    client = await gateway(cached_config(origin.url, state=state))
    first, second = await twice(client, at("a"))
    assert (first.status, first.cache) == (200, "MISS")
    assert "Age" not in first.headers
    assert (second.status, second.cache) == (200, "HIT")
    assert second.body == first.body
    assert second.headers["Content-Type"] == first.headers["Content-Type"]
    assert second.age is not None and 0 <= second.age <= 1
    assert second.headers["X-Cache-Key"] == first.headers["X-Cache-Key"]
    assert re.match(KEY_SHAPE, first.headers["X-Cache-Key"])
    assert origin.calls("/r/a") == 1


async def test_age_grows_while_the_entry_is_served(
    origin: Upstream, gateway: Gateway, redis_url: str
) -> None:
    client = await gateway(cached_config(origin.url, state={"backend": "redis", "url": redis_url}))
    first = await fetch(client, at("grows"))
    ages: list[int] = []

    async def older() -> bool:
        answer = await fetch(client, at("grows"))
        assert answer.cache == "HIT" and answer.body == first.body
        assert answer.age is not None
        ages.append(answer.age)
        return answer.age >= 1

    await eventually(older, timeout=3, interval=0.1, what="Age reaching 1")
    assert ages == sorted(ages) and ages[0] == 0
    assert origin.calls("/r/grows") == 1


async def test_an_upstream_age_is_part_of_the_age_served(
    origin: Upstream, gateway: Gateway
) -> None:
    client = await gateway(cached_config(origin.url))
    path = at("aged", "Cache-Control: max-age=60", "Age: 5")
    _, hit = await twice(client, path)
    assert hit.cache == "HIT"
    assert hit.age is not None and 5 <= hit.age <= 6


@pytest.mark.observes("routes.cache.ttl")
async def test_an_entry_expires_after_the_ttl(
    origin: Upstream, gateway: Gateway, state: dict[str, Any]
) -> None:
    client = await gateway(cached_config(origin.url, {"ttl": "400ms"}, state=state))
    first, second = await twice(client, at("brief"))
    stored = time.monotonic()
    assert (first.cache, second.cache) == ("MISS", "HIT")

    async def expired() -> bool:
        return (await fetch(client, at("brief"))).cache == "MISS"

    await eventually(expired, timeout=3, interval=0.05, what="the entry expiring")
    assert time.monotonic() - stored >= 0.3
    assert origin.calls("/r/brief") == 2


async def test_a_max_age_shorter_than_the_ttl_expires_first(
    origin: Upstream, gateway: Gateway
) -> None:
    client = await gateway(cached_config(origin.url, {"ttl": "30s"}))
    path = at("short", "Cache-Control: max-age=1")
    first, second = await twice(client, path)
    assert (first.cache, second.cache) == ("MISS", "HIT")

    async def expired() -> bool:
        return (await fetch(client, path)).cache == "MISS"

    await eventually(expired, timeout=3, interval=0.05, what="max-age=1 expiring")


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (("Cache-Control: max-age=5",), 5),
        (("Cache-Control: s-maxage=3, max-age=60",), 3),
        (("Cache-Control: max-age=2, s-maxage=20",), 20),
        (("Cache-Control: max-age=3600",), 30),
        (("Cache-Control: max-age=10", "Age: 4"), 6),
        (("Age: 25",), 5),
    ],
)
async def test_upstream_freshness_only_shortens_the_route_ttl(
    origin: Upstream,
    gateway: Gateway,
    redis_url: str,
    redis_client: redis.Redis,
    given: tuple[str, ...],
    seconds: int,
) -> None:
    client = await gateway(cached_config(origin.url, state={"backend": "redis", "url": redis_url}))
    first, second = await twice(client, at("fresh", *given))
    assert (first.cache, second.cache) == ("MISS", "HIT")
    left = redis_client.pttl(entry_key(first))
    assert seconds * 1000 - 1500 < left <= seconds * 1000


@pytest.mark.parametrize(
    "given",
    [
        ("Cache-Control: no-store",),
        ("Cache-Control: private",),
        ("Cache-Control: no-cache",),
        ("Cache-Control: public, max-age=0",),
        ("Cache-Control: max-age=10", "Age: 10"),
        ("Set-Cookie: session=secret",),
        ("Cache-Control: public, max-age=60", "Set-Cookie: session=secret"),
    ],
)
async def test_responses_that_must_not_be_stored_are_not(
    origin: Upstream, gateway: Gateway, given: tuple[str, ...]
) -> None:
    client = await gateway(cached_config(origin.url))
    first = await fetch(client, at("never", *given))
    client.session.cookie_jar.clear()  # a request with the cookie would not even look
    second = await fetch(client, at("never", *given))
    assert (first.cache, second.cache) == ("MISS", "MISS")
    assert second.json()["n"] == 2
    assert origin.calls("/r/never") == 2


async def test_an_expires_in_the_past_is_not_served_from_the_cache(
    origin: Upstream, gateway: Gateway
) -> None:
    client = await gateway(cached_config(origin.url))
    first, second = await twice(client, at("expires", "Expires: 0"))
    assert (first.cache, second.cache) == ("MISS", "MISS")


@pytest.mark.parametrize(("statuses", "status"), [([200], 404), ([200], 500), ([200, 404], 500)])
@pytest.mark.observes("routes.cache.statuses")
async def test_statuses_not_listed_are_never_cached(
    origin: Upstream, gateway: Gateway, statuses: list[int], status: int
) -> None:
    client = await gateway(cached_config(origin.url, {"statuses": statuses}))
    first, second = await twice(client, at("status", status=status))
    assert (first.status, second.status) == (status, status)
    assert (first.cache, second.cache) == ("MISS", "MISS")
    assert origin.calls("/r/status") == 2


async def test_a_listed_status_other_than_200_is_cached(origin: Upstream, gateway: Gateway) -> None:
    client = await gateway(cached_config(origin.url, {"statuses": [200, 404]}))
    first, second = await twice(client, at("gone", status=404))
    assert (first.status, first.cache, second.status, second.cache) == (404, "MISS", 404, "HIT")
    assert second.body == first.body
    assert origin.calls("/r/gone") == 1


# --- variants ----------------------------------------------------------------------------------


@pytest.mark.observes("routes.cache.vary")
async def test_a_configured_vary_header_keeps_one_entry_per_value(
    origin: Upstream, gateway: Gateway, state: dict[str, Any]
) -> None:
    client = await gateway(cached_config(origin.url, {"vary": ["Accept-Language"]}, state=state))
    path = at("lang", "Vary: Accept-Language")
    en = await fetch(client, path, headers={"Accept-Language": "en"})
    fr = await fetch(client, path, headers={"Accept-Language": "fr"})
    en_again = await fetch(client, path, headers={"Accept-Language": "en"})
    fr_again = await fetch(client, path, headers={"Accept-Language": "fr"})
    assert [a.cache for a in (en, fr, en_again, fr_again)] == ["MISS", "MISS", "HIT", "HIT"]
    assert (
        en_again.json()["headers"]["accept-language"],
        fr_again.json()["headers"]["accept-language"],
    ) == ("en", "fr")
    assert en_again.body == en.body and fr_again.body == fr.body
    assert origin.calls("/r/lang") == 2


async def test_vary_on_a_header_not_configured_is_not_stored(
    origin: Upstream, gateway: Gateway
) -> None:
    client = await gateway(cached_config(origin.url, {"vary": ["Accept-Language"]}))
    path = at("enc", "Vary: Accept-Encoding")
    first, second = await twice(client, path, **{"Accept-Encoding": "gzip"})
    assert (first.cache, second.cache) == ("MISS", "MISS")
    assert origin.calls("/r/enc") == 2


async def test_vary_star_is_not_stored(origin: Upstream, gateway: Gateway) -> None:
    client = await gateway(cached_config(origin.url, {"vary": ["Accept-Language"]}))
    first, second = await twice(client, at("star", "Vary: *"))
    assert (first.cache, second.cache) == ("MISS", "MISS")
    assert origin.calls("/r/star") == 2


# --- users -------------------------------------------------------------------------------------


async def test_one_user_never_receives_another_users_response(
    origin: Upstream, gateway: Gateway, state: dict[str, Any]
) -> None:
    client = await gateway(
        cached_config(origin.url, route={"auth": "required"}, auth=auth_section(), state=state)
    )
    alice = bearer(sign(claims(sub="alice")))
    bob = bearer(sign(claims(sub="bob")))
    seen = [await fetch(client, at("me"), headers=who) for who in (alice, bob, alice, bob)]
    assert [a.status for a in seen] == [200] * 4
    assert [a.cache for a in seen] == ["MISS", "MISS", "HIT", "HIT"]
    assert [a.json()["headers"].get("x-user-id") for a in seen] == ["alice", "bob", "alice", "bob"]
    assert seen[2].body == seen[0].body and seen[3].body == seen[1].body
    alice_key, bob_key = (a.headers["X-Cache-Key"] for a in seen[:2])
    assert alice_key != bob_key and alice_key.split(":")[0] == bob_key.split(":")[0]
    assert (await fetch(client, at("me"))).status == 401
    assert origin.calls("/r/me") == 2


async def test_anonymous_and_signed_in_requests_do_not_share_an_entry(
    origin: Upstream, gateway: Gateway
) -> None:
    client = await gateway(
        cached_config(origin.url, route={"auth": "optional"}, auth=auth_section())
    )
    alice = bearer(sign(claims(sub="alice")))
    seen = [await fetch(client, at("maybe"), headers=who) for who in ({}, alice, {}, alice)]
    assert [a.cache for a in seen] == ["MISS", "MISS", "HIT", "HIT"]
    assert [a.json()["headers"].get("x-user-id") for a in seen] == [None, "alice", None, "alice"]


async def test_tokens_without_a_subject_do_not_share_an_entry(
    origin: Upstream, gateway: Gateway
) -> None:
    client = await gateway(
        cached_config(origin.url, route={"auth": "required"}, auth=auth_section())
    )
    admin = bearer(sign(claims(sub=None, roles=["admin"])))
    guest = bearer(sign(claims(sub=None, roles=["guest"])))
    first = await fetch(client, at("nosub"), headers=admin)
    second = await fetch(client, at("nosub"), headers=guest)
    assert first.json()["headers"]["x-user-roles"] == "admin"
    assert second.json()["headers"]["x-user-roles"] == "guest"


# --- bypass ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {"Range": "bytes=0-3"}),
        ("GET", {"Authorization": "Bearer anything"}),
        ("GET", {"Cookie": "session=abc"}),
        ("GET", {"Cache-Control": "no-store"}),
    ],
)
async def test_bypass_is_neither_served_from_nor_stored_in_the_cache(
    origin: Upstream, gateway: Gateway, method: str, headers: dict[str, str]
) -> None:
    client = await gateway(cached_config(origin.url))
    bypass = await fetch(client, at("by"), method, headers)
    assert bypass.cache == "BYPASS"
    assert "X-Cache-Key" not in bypass.headers
    plain = await fetch(client, at("by"))
    assert plain.cache == "MISS"  # the bypass stored nothing
    again = await fetch(client, at("by"), method, headers)
    assert again.cache == "BYPASS"
    assert origin.calls("/r/by") == 3  # and was not served the cached entry
    assert (await fetch(client, at("by"))).cache == "HIT"


# --- HEAD and conditional requests -------------------------------------------------------------


async def test_head_is_answered_from_a_cached_get(origin: Upstream, gateway: Gateway) -> None:
    client = await gateway(cached_config(origin.url))
    got = await fetch(client, at("head"))
    head = await fetch(client, at("head"), "HEAD")
    assert (got.cache, head.status, head.cache) == ("MISS", 200, "HIT")
    assert head.body == b""
    assert head.headers["Content-Length"] == str(len(got.body))
    assert head.headers["Content-Type"] == got.headers["Content-Type"]
    assert origin.calls("/r/head") == 1


async def test_a_head_miss_does_not_store(origin: Upstream, gateway: Gateway) -> None:
    client = await gateway(cached_config(origin.url))
    head = await fetch(client, at("headfirst"), "HEAD")
    got = await fetch(client, at("headfirst"))
    assert (head.cache, got.cache) == ("MISS", "MISS")
    assert got.body  # the GET got a body, not the HEAD's nothing
    assert origin.calls("/r/headfirst") == 2
    assert (await fetch(client, at("headfirst"))).cache == "HIT"


@pytest.mark.parametrize(
    ("condition", "status"),
    [('"v1"', 304), ('W/"v1"', 304), ('"x", "v1"', 304), ("*", 304), ('"v2"', 200)],
)
async def test_if_none_match_on_a_hit(
    origin: Upstream, gateway: Gateway, condition: str, status: int
) -> None:
    client = await gateway(cached_config(origin.url))
    path = at("etag", 'ETag: "v1"')
    stored = await fetch(client, path)
    answer = await fetch(client, path, headers={"If-None-Match": condition})
    assert (answer.status, answer.cache) == (status, "HIT")
    assert answer.headers["ETag"] == '"v1"'
    assert answer.body == (b"" if status == 304 else stored.body)
    assert origin.calls("/r/etag") == 1


# --- concurrency -------------------------------------------------------------------------------


async def lookups(admin: Client) -> dict[str, Any]:
    async with admin.get("/api/cache", params={"route": ROUTE}) as response:
        assert response.status == 200
        [row] = (await response.json())["cache"]
        return dict(row)


def in_flight(client: Client, count: int) -> bool:
    """``count`` requests are inside the gateway (each past its lookup or waiting on it)."""
    from spork_cli.gateway.keys import METRICS

    return client.app[METRICS].in_flight >= count


async def test_fifty_concurrent_misses_make_one_upstream_call(
    origin: Upstream, gateway: Gateway, admin_api: AdminApi, state: dict[str, Any]
) -> None:
    client = await gateway(cached_config(origin.url, state=state))
    admin = await admin_api(client)
    requests = [asyncio.create_task(fetch(client, at("herd", kind="hold"))) for _ in range(50)]
    try:
        # Every request is in, and the first has reached the origin, before it answers.
        await eventually(
            lambda: in_flight(client, 50) and origin.calls("/hold/herd") >= 1,
            timeout=10,
            what="fifty requests in",
        )
        assert origin.calls("/hold/herd") == 1
        origin.gate.set()
        answers = await asyncio.gather(*requests)
    finally:
        origin.gate.set()
        await asyncio.gather(*requests, return_exceptions=True)
    assert origin.calls("/hold/herd") == 1
    assert {a.status for a in answers} == {200}
    assert len({a.body for a in answers}) == 1
    assert Counter(a.cache for a in answers) == {"MISS": 1, "HIT": 49}
    assert (await fetch(client, at("herd", kind="hold"))).cache == "HIT"
    # Counted as the clients saw it: the requests that waited for the first one were hits.
    row = await lookups(admin)
    assert (row["hits"], row["misses"], row["stores"]) == (50, 1, 1)


async def test_concurrent_misses_of_an_unstorable_response_each_go_upstream(
    origin: Upstream, gateway: Gateway
) -> None:
    client = await gateway(cached_config(origin.url))
    path = at("nostore", "Cache-Control: no-store", kind="hold")
    requests = [asyncio.create_task(fetch(client, path)) for _ in range(5)]
    try:
        await eventually(lambda: in_flight(client, 5), what="five requests in")
        origin.gate.set()
        answers = await asyncio.gather(*requests)
    finally:
        origin.gate.set()
        await asyncio.gather(*requests, return_exceptions=True)
    assert [a.cache for a in answers] == ["MISS"] * 5
    assert sorted(a.json()["n"] for a in answers) == [1, 2, 3, 4, 5]
    assert origin.calls("/hold/nostore") == 5


async def test_a_second_client_of_an_endless_stream_is_not_held_behind_the_first(
    origin: Upstream, gateway: Gateway
) -> None:
    client = await gateway(cached_config(origin.url))
    try:
        async with client.get("/sse/events") as first:
            assert await first.content.readline() == b"data: 1\n"
            # Far longer than a loopback round trip; the stream itself never ends by itself.
            async with asyncio.timeout(1.5), client.get("/sse/events") as second:
                assert second.headers["Content-Type"] == "text/event-stream"
                assert await second.content.readline() == b"data: 2\n"
    finally:
        origin.gate.set()


async def test_a_response_cut_off_mid_body_is_not_stored(gateway: Gateway) -> None:
    calls = 0

    async def cut_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        await reader.readuntil(b"\r\n\r\n")
        calls += 1
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
        writer.write(head + b"\r\n5\r\nhello\r\n")  # and never the last chunk
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cut_off, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        client = await gateway(cached_config(f"http://127.0.0.1:{port}"))
        for _ in range(2):
            with pytest.raises(aiohttp.ClientPayloadError):
                await fetch(client, "/cut")
        assert calls == 2
    finally:
        server.close()
        await server.wait_closed()


# --- size ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["length", "chunked"])
@pytest.mark.observes("routes.cache.max_entry_size")
async def test_an_entry_larger_than_max_entry_size_is_not_stored(
    origin: Upstream, gateway: Gateway, mode: str
) -> None:
    client = await gateway(cached_config(origin.url, {"max_entry_size": "1KiB"}))
    first, second = await twice(
        client, at("large", kind="bytes", size="1025", length=str(int(mode == "length")))
    )
    assert (first.cache, second.cache) == ("MISS", "MISS")
    assert first.body == second.body == pattern_bytes(1025)
    assert origin.calls("/bytes/large") == 2


@pytest.mark.parametrize("size", [1000, 1024])
async def test_a_streamed_response_up_to_the_cap_is_stored(
    origin: Upstream, gateway: Gateway, size: int
) -> None:
    client = await gateway(cached_config(origin.url, {"max_entry_size": "1KiB"}))
    first, second = await twice(client, at("small", kind="bytes", size=str(size)))
    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert second.body == first.body == pattern_bytes(size)
    assert origin.calls("/bytes/small") == 1


@pytest.mark.observes("state.max_bytes")
async def test_the_memory_store_evicts_the_least_recently_used_entries_past_max_bytes(
    origin: Upstream, gateway: Gateway
) -> None:
    # Entries of 10 KiB and more: three fit in 32 KiB, while the default (64 MiB) keeps all.
    client = await gateway(cached_config(origin.url, state={"max_bytes": "32KiB"}))
    paths = [at(name, kind="bytes", size=str(10 * 1024)) for name in "abcd"]
    for path in paths:
        assert (await fetch(client, path)).cache == "MISS"
    assert (await fetch(client, paths[-1])).cache == "HIT"
    again = await fetch(client, paths[0])  # the oldest, evicted to make room for the fourth
    assert again.cache == "MISS"
    assert again.body == pattern_bytes(10 * 1024)
    assert origin.calls("/bytes/a") == 2


async def test_a_long_body_relayed_as_a_stream_is_stored_whole(
    origin: Upstream, gateway: Gateway
) -> None:
    size = 300 * 1024  # past what the proxy reads whole, under the default 1 MiB cap
    client = await gateway(cached_config(origin.url))
    first, second = await twice(client, at("long", kind="bytes", size=str(size), length="1"))
    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert second.body == pattern_bytes(size)
    assert second.headers["Content-Length"] == str(size)
    assert origin.calls("/bytes/long") == 1


# --- what the gateway adds per request ---------------------------------------------------------


async def test_a_hit_carries_this_requests_rate_limit_headers_and_request_id(
    origin: Upstream, gateway: Gateway, state: dict[str, Any]
) -> None:
    limit = {"requests": 10, "per": "1m", "key": ["route"]}
    client = await gateway(cached_config(origin.url, route={"rate_limit": limit}, state=state))
    seen = [
        await fetch(client, at("limited"), headers={"X-Request-ID": f"req-{n}"}) for n in range(3)
    ]
    assert [a.cache for a in seen] == ["MISS", "HIT", "HIT"]
    assert [a.headers["X-RateLimit-Remaining"] for a in seen] == ["9", "8", "7"]
    assert [a.headers["X-Request-ID"] for a in seen] == ["req-0", "req-1", "req-2"]
    assert len({a.headers["RateLimit"] for a in seen}) == 3
    assert all(len(a.headers.getall("X-RateLimit-Remaining")) == 1 for a in seen)


async def test_per_request_headers_are_not_in_the_stored_entry(
    origin: Upstream, gateway: Gateway, redis_url: str, redis_client: redis.Redis
) -> None:
    limit = {"requests": 10, "per": "1m", "key": ["route"]}
    state = {"backend": "redis", "url": redis_url}
    client = await gateway(cached_config(origin.url, route={"rate_limit": limit}, state=state))
    first = await fetch(client, at("stored"), headers={"X-Request-ID": "req-stored"})
    stored = redis_client.hget(entry_key(first), "v")
    assert stored is not None and stored.endswith(first.body)
    head = stored[: -len(first.body)].lower()
    for name in (b"ratelimit", b"x-request-id", b"req-stored", b"x-cache", b"server"):
        assert name not in head


# --- looking inside: stats and purge (admin API) ------------------------------------------------


async def test_stats_count_hits_misses_stores_and_entries(
    origin: Upstream, gateway: Gateway, admin_api: AdminApi, state: dict[str, Any]
) -> None:
    client = await gateway(cached_config(origin.url, state=state))
    admin = await admin_api(client)
    for path in (at("one"), at("one"), at("one"), at("two")):
        await fetch(client, path)
    await fetch(client, at("one"), "POST")  # a bypass, and it invalidates /r/one
    await fetch(client, at("three", "Cache-Control: no-store"))  # a miss, nothing stored
    row = await lookups(admin)
    assert row == {
        "route": ROUTE,
        "ttl": 30.0,
        "entries": 2,  # /r/one's entry is still held, never to be served again
        "hits": 2,
        "misses": 3,
        "stale": 0,
        "revalidated": 0,
        "bypasses": 1,
        "stores": 2,
        "invalidations": 1,
        "hit_ratio": 0.4,
    }


async def purge(admin: Client, **params: str) -> int:
    async with admin.post("/api/cache/purge", params=params, json={}) as response:
        assert response.status == 200, await response.text()
        deleted: int = (await response.json())["deleted"]
        return deleted


async def test_purge_by_path_removes_every_variant_of_that_path_only(
    origin: Upstream, gateway: Gateway, admin_api: AdminApi, state: dict[str, Any]
) -> None:
    config = cached_config(
        origin.url,
        {"vary": ["Accept-Language"]},
        route={"auth": "optional"},
        auth=auth_section(),
        state=state,
    )
    client = await gateway(config)
    admin = await admin_api(client)
    alice = bearer(sign(claims(sub="alice")))
    variants = [{"Accept-Language": "en"}, {"Accept-Language": "fr"}, alice]
    for headers in variants:
        await fetch(client, "/r/p?x=1", headers=headers)
    await fetch(client, "/r/p?x=2")
    assert (await lookups(admin))["entries"] == 4
    assert await purge(admin, route=ROUTE, path="/r/p?x=1") == 3
    assert (await fetch(client, "/r/p?x=2")).cache == "HIT"
    for headers in variants:
        assert (await fetch(client, "/r/p?x=1", headers=headers)).cache == "MISS"


async def test_purge_by_key_removes_that_entry_only(
    origin: Upstream, gateway: Gateway, admin_api: AdminApi, state: dict[str, Any]
) -> None:
    client = await gateway(cached_config(origin.url, state=state))
    admin = await admin_api(client)
    doomed = await fetch(client, at("k1"))
    await fetch(client, at("k2"))
    assert await purge(admin, key=doomed.headers["X-Cache-Key"]) == 1
    assert (await fetch(client, at("k1"))).cache == "MISS"
    assert (await fetch(client, at("k2"))).cache == "HIT"


async def test_purge_of_a_route_empties_it_and_keeps_its_counters(
    origin: Upstream, gateway: Gateway, admin_api: AdminApi, state: dict[str, Any]
) -> None:
    client = await gateway(cached_config(origin.url, state=state))
    admin = await admin_api(client)
    for name in ("e1", "e2", "e3"):
        await fetch(client, at(name))
    assert await purge(admin, route=ROUTE) == 3
    row = await lookups(admin)
    assert (row["entries"], row["misses"], row["stores"]) == (0, 3, 3)
    assert [(await fetch(client, at(n))).cache for n in ("e1", "e2", "e3")] == ["MISS"] * 3
    async with admin.post("/api/cache/purge", params={"route": "nope"}, json={}) as response:
        assert response.status == 404


# --- a damaged entry -----------------------------------------------------------------------------


async def test_an_unreadable_stored_entry_is_a_miss_and_is_replaced(
    origin: Upstream, gateway: Gateway, redis_url: str, redis_client: redis.Redis
) -> None:
    client = await gateway(cached_config(origin.url, state={"backend": "redis", "url": redis_url}))
    first = await fetch(client, at("damaged"))
    redis_client.hset(entry_key(first), "v", b"\x00garbage")
    answer = await fetch(client, at("damaged"))
    assert (answer.status, answer.cache) == (200, "MISS")
    assert (await fetch(client, at("damaged"))).cache == "HIT"
    assert origin.calls("/r/damaged") == 2


async def test_a_stored_entry_with_an_impossible_head_is_a_miss(
    origin: Upstream, gateway: Gateway, redis_url: str, redis_client: redis.Redis
) -> None:
    client = await gateway(cached_config(origin.url, state={"backend": "redis", "url": redis_url}))
    first = await fetch(client, at("impossible"))
    redis_client.hset(entry_key(first), "v", b'[1, 5, [], 0]\n{"n": 0}')
    answer = await fetch(client, at("impossible"))
    assert (answer.status, answer.cache) == (200, "MISS")


# --- Redis outages -------------------------------------------------------------------------------

STATE_TIMEOUT = 0.1
SLACK = 0.4  # scheduling on a busy 2-core machine; far below any hang


@pytest.mark.parametrize("policy", ["open", "closed", "local"])
@pytest.mark.observes("routes.cache.on_error")
async def test_redis_outage_follows_on_error_and_comes_back(
    origin: Upstream,
    gateway: Gateway,
    redis_server: RedisServer,
    redis_url: str,
    redis_client: redis.Redis,
    policy: str,
) -> None:
    # The route's own on_error overrides the state's.
    state = {"backend": "redis", "url": redis_url, "timeout": "100ms", "on_error": "open"}
    client = await gateway(cached_config(origin.url, {"on_error": policy}, state=state))

    async def timed() -> tuple[Answer, float]:
        started = time.monotonic()
        answer = await fetch(client, at("outage"))
        return answer, time.monotonic() - started

    assert (await fetch(client, at("outage"))).cache == "MISS"
    assert redis_client.keys("spork:{cache:c}:*:*")
    try:
        redis_server.stop(kill=True)
        during = [await timed() for _ in range(5)]
    finally:
        redis_server.start()
    assert max(seconds for _, seconds in during) < STATE_TIMEOUT + SLACK
    answers = [answer for answer, _ in during]
    if policy == "open":
        assert [(a.status, a.cache) for a in answers] == [(200, "BYPASS")] * 5
        assert origin.calls("/r/outage") == 6
    elif policy == "closed":
        assert {a.status for a in answers} == {503}
        assert all(a.headers["Content-Type"] == "application/problem+json" for a in answers)
        assert all(a.json()["type"].endswith("state-unavailable") for a in answers)
        assert origin.calls("/r/outage") == 1
    else:
        assert [a.cache for a in answers] == ["MISS", "HIT", "HIT", "HIT", "HIT"]
        assert origin.calls("/r/outage") == 2
    # The restarted server is empty: the next miss stores its entry in Redis again.

    async def back() -> bool:
        answer = await fetch(client, at("outage"))
        assert answer.status == 200
        return bool(redis_client.keys("spork:{cache:c}:*:*"))

    await eventually(back, timeout=2, interval=0.05, what="the cache being back on Redis")


# --- Redis Cluster -------------------------------------------------------------------------------


async def test_the_cache_works_on_a_redis_cluster(
    origin: Upstream, gateway: Gateway, admin_api: AdminApi, redis_cluster_url: str
) -> None:
    state = {"backend": "redis", "url": redis_cluster_url, "timeout": "1s"}
    client = await gateway(cached_config(origin.url, state=state))
    admin = await admin_api(client)
    for name in ("x", "y"):
        first, second = await twice(client, at(name))
        assert (first.cache, second.cache, second.body) == ("MISS", "HIT", first.body)
    row = await lookups(admin)
    assert (row["entries"], row["hits"], row["misses"], row["stores"]) == (2, 2, 2, 2)
    assert await purge(admin, route=ROUTE) == 2
    assert (await fetch(client, at("x"))).cache == "MISS"


async def test_a_request_with_headers_only_trusted_proxies_may_send_is_not_shared(
    origin: Upstream, gateway: Gateway
) -> None:
    # From a trusted proxy, X-Original-URL and method overrides reach the upstream and may
    # change its answer: such a request neither fills nor reads the cache.
    config = cached_config(origin.url, server={"trusted_proxies": ["127.0.0.1/32"]})
    client = await gateway(config)
    poisoned = await fetch(client, at("proxied"), headers={"X-Original-URL": "/admin"})
    clean = await fetch(client, at("proxied"))
    assert (poisoned.cache, clean.cache) == ("BYPASS", "MISS")
    assert "x-original-url" not in clean.json()["headers"]
