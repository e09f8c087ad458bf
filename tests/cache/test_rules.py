"""The cache's rules without a socket: what may be stored and for how long, the key of a
request, the stored form of a response, the capture of a streamed body, and the CLI's view."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from spork_cli.cache import (
    Capture,
    Entry,
    cache_control,
    cache_rows,
    digest,
    lifetime,
    purge,
    url_digest,
)
from spork_cli.config.model import GatewayConfig, State
from spork_cli.state import cache_key, cache_stats_key
from spork_cli.state.memory import MemoryStore

NOTHING: frozenset[str] = frozenset()


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


# --- Cache-Control ---------------------------------------------------------------------------


def test_cache_control_lowercases_names_and_unquotes_values_across_header_lines() -> None:
    parsed = cache_control(['Public, Max-Age="60"', "S-MAXAGE=5 , no-transform", "max-age=1"])
    assert parsed == {"public": "", "max-age": "60", "s-maxage": "5", "no-transform": ""}


# --- lifetime ----------------------------------------------------------------------------------


def test_lifetime_without_directives_is_the_route_ttl() -> None:
    assert lifetime(headers(), 30.0, NOTHING) == 30.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("max-age=5", 5.0),  # shorter than the route ttl: it wins
        ("max-age=3600", 30.0),  # longer: the route ttl is the maximum
        ("public, max-age=10", 10.0),
        ("s-maxage=3, max-age=60", 3.0),  # s-maxage is the shared cache's own
        ("max-age=3, s-maxage=20", 20.0),  # ... even when it is the longer one
        ("s-maxage=3600, max-age=1", 30.0),
        ("must-revalidate", 30.0),
    ],
)
def test_max_age_and_s_maxage_only_shorten_the_route_ttl(value: str, expected: float) -> None:
    assert lifetime(headers(("Cache-Control", value)), 30.0, NOTHING) == expected


@pytest.mark.parametrize(
    "value",
    [
        "no-store",
        "private",
        "no-cache",
        'private="Set-Cookie"',
        'no-cache="Set-Cookie"',
        "public, NO-STORE",
        "max-age=0",
        "s-maxage=0, max-age=60",
    ],
)
def test_directives_that_forbid_storing(value: str) -> None:
    assert lifetime(headers(("Cache-Control", value)), 30.0, NOTHING) is None


@pytest.mark.parametrize("value", ["max-age=abc", "max-age=5.5", "max-age=-1", "s-maxage=x"])
def test_a_malformed_age_directive_means_stale(value: str) -> None:
    assert lifetime(headers(("Cache-Control", value)), 30.0, NOTHING) is None


def test_upstream_age_counts_against_the_lifetime() -> None:
    given_age = headers(("Cache-Control", "max-age=10"), ("Age", "4"))
    assert lifetime(given_age, 30.0, NOTHING) == 6.0
    assert lifetime(headers(("Age", "12")), 30.0, NOTHING) == 18.0
    assert lifetime(headers(("Cache-Control", "max-age=10"), ("Age", "10")), 30, NOTHING) is None
    assert lifetime(headers(("Age", "31")), 30.0, NOTHING) is None


def test_a_malformed_upstream_age_is_ignored() -> None:
    assert lifetime(headers(("Age", "soon")), 30.0, NOTHING) == 30.0


def test_set_cookie_is_never_stored() -> None:
    assert lifetime(headers(("set-cookie", "session=1")), 30.0, NOTHING) is None


@pytest.mark.parametrize(
    ("vary", "configured", "stored"),
    [
        ("Accept-Language", {"accept-language"}, True),
        ("accept-language", {"accept-language"}, True),
        ("Accept-Language, Accept-Encoding", {"accept-language", "accept-encoding"}, True),
        ("Accept-Encoding", set(), False),
        ("Accept-Language, Accept-Encoding", {"accept-language"}, False),
        ("*", {"accept-language"}, False),
        ("Accept-Language, *", {"accept-language"}, False),
        ("", set(), True),
    ],
)
def test_vary_must_be_covered_by_the_configured_headers(
    vary: str, configured: set[str], stored: bool
) -> None:
    found = lifetime(headers(("Vary", vary)), 30.0, frozenset(configured))
    assert (found is not None) is stored


@pytest.mark.parametrize("expires", ["0", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_an_expires_in_the_past_keeps_a_response_out(expires: str) -> None:
    assert lifetime(headers(("Expires", expires)), 30.0, NOTHING) is None


# --- the key -----------------------------------------------------------------------------------

KEY = re.compile(r"^[0-9a-f]{16}:[0-9a-f]{16}$")


def test_digest_is_a_url_part_and_a_variant_part() -> None:
    key = digest("/r/a?x=1", CIMultiDict(), (), None)
    assert KEY.match(key)
    assert key == digest("/r/a?x=1", CIMultiDict(), (), None)
    assert key.partition(":")[0] == url_digest("/r/a?x=1")


@pytest.mark.parametrize("other", ["/r/a?x=2", "/r/a", "/r/a?x=1&y=", "/r%2Fa?x=1", "/R/a?x=1"])
def test_every_difference_in_raw_path_and_query_is_another_url(other: str) -> None:
    assert url_digest("/r/a?x=1") != url_digest(other)


def test_the_user_changes_the_variant_not_the_url() -> None:
    anonymous = digest("/p", CIMultiDict(), (), None)
    alice = digest("/p", CIMultiDict(), (), "alice")
    bob = digest("/p", CIMultiDict(), (), "bob")
    empty = digest("/p", CIMultiDict(), (), "")
    assert len({anonymous, alice, bob, empty}) == 4
    assert len({k.partition(":")[0] for k in (anonymous, alice, bob, empty)}) == 1


def test_only_the_configured_vary_headers_change_the_variant() -> None:
    vary = ("Accept-Language",)
    en = digest("/p", CIMultiDict({"accept-language": "en", "X-Other": "1"}), vary, None)
    en_again = digest("/p", CIMultiDict({"Accept-Language": "en", "X-Other": "2"}), vary, None)
    fr = digest("/p", CIMultiDict({"Accept-Language": "fr"}), vary, None)
    assert en == en_again
    assert en != fr
    assert en.partition(":")[0] == fr.partition(":")[0]


def test_user_and_vary_values_cannot_be_shuffled_into_one_key() -> None:
    vary = ("A", "B")
    first = digest("/p", CIMultiDict({"A": "1", "B": "2"}), vary, "u")
    second = digest("/p", CIMultiDict({"A": "", "B": "2"}), vary, "u\0a=1")
    third = digest("/p", CIMultiDict({"A": "12", "B": ""}), vary, "u")
    assert len({first, second, third}) == 3


# --- the stored form ---------------------------------------------------------------------------


def test_entry_of_drops_hop_by_hop_per_request_and_skipped_headers() -> None:
    upstream = CIMultiDict(
        [
            ("Content-Type", "text/plain"),
            ("Link", "<a>"),
            ("Link", "<b>"),
            ("Connection", "close"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "5"),
            ("Age", "7"),
            ("Server", "origin"),
            ("X-Request-ID", "abc"),
            ("X-Cache", "MISS"),
            ("X-Cache-Key", "k"),
            ("X-RateLimit-Remaining", "4"),
            ("RateLimit", "limit=5"),
        ]
    )
    entry = Entry.of(200, "OK", upstream, b"hello", skip=("x-ratelimit-remaining", "RATELIMIT"))
    assert entry.headers == (("Content-Type", "text/plain"), ("Link", "<a>"), ("Link", "<b>"))
    assert (entry.status, entry.reason, entry.body, entry.age) == (200, "OK", b"hello", 7)


def test_entry_round_trips_a_body_with_newlines_and_any_bytes() -> None:
    entry = Entry(404, "Not Here", (("A", "1\r"), ("a", "é")), b"line\nline\n\x00\xff", 3)
    assert Entry.decode(entry.encode()) == entry


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\n",
        b"not json\nbody",
        b"[200, null, [], 0]",  # no newline: the body is missing
        b"[200, null, []]\n",
        b"[200, null, [], 0, 1]\n",
        b'{"status": 200}\n',
        b"[200, null, 5, 0]\n",
        b'[200, null, [["only-a-name"]], 0]\n',
        b'["ok", null, [], 0]\n',
        b"[200, null, [], []]\n",
        b"\xff\xfe\n",
    ],
)
def test_decode_of_an_unreadable_entry_is_none(raw: bytes) -> None:
    assert Entry.decode(raw) is None


@pytest.mark.parametrize(
    "raw", [b"[1, null, [], 0]\n", b"[200, 5, [], 0]\n", b"[200, null, [], -5]\n"]
)
def test_decode_refuses_a_head_that_cannot_be_served(raw: bytes) -> None:
    assert Entry.decode(raw) is None


@given(st.binary(max_size=512))
def test_decode_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    decoded = Entry.decode(raw)
    assert decoded is None or isinstance(decoded, Entry)


# Text orjson can carry: no lone surrogates (an upstream header never holds one: h1 decodes
# latin-1).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
ENTRIES = st.builds(
    Entry,
    status=st.integers(200, 599),  # final responses, the only ones stored
    reason=st.none() | TEXT,
    headers=st.lists(st.tuples(TEXT, TEXT), max_size=6).map(tuple),
    body=st.binary(max_size=512),
    age=st.integers(0, 10**9),
)


@given(ENTRIES)
def test_encode_then_decode_is_the_same_entry(entry: Entry) -> None:
    assert Entry.decode(entry.encode()) == entry


@given(ENTRIES, st.binary(max_size=64))
def test_decode_never_raises_on_a_damaged_entry(entry: Entry, noise: bytes) -> None:
    raw = entry.encode()
    cut = len(noise) % (len(raw) + 1)
    for damaged in (raw[:cut], noise + raw, raw[:cut] + noise + raw[cut:]):
        decoded = Entry.decode(damaged)
        assert decoded is None or isinstance(decoded, Entry)


# --- capturing a streamed body -----------------------------------------------------------------


def test_capture_keeps_a_complete_body_up_to_the_limit() -> None:
    capture = Capture(10)
    for chunk in (b"hello", b"", b"worl", b"d"):
        capture.add(chunk)
    assert capture.body() is None  # not complete yet
    capture.complete = True
    assert capture.body() == b"helloworld"


def test_capture_gives_up_past_the_limit_for_good() -> None:
    capture = Capture(10)
    capture.add(b"hello")
    capture.add(b"world!")
    capture.add(b"")
    capture.complete = True
    assert capture.body() is None
    assert capture.chunks is None  # nothing held on to


# --- the CLI's view: rows and purge (memory store, no socket) ----------------------------------


def config_with(*routes: dict[str, Any]) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "services": [{"name": "svc", "endpoints": ["http://127.0.0.1:9"]}],
            "routes": [{"service": "svc", **route} for route in routes],
        }
    )


CONFIG = config_with(
    {"path": "/a/", "name": "a", "cache": {"ttl": "30s"}},
    {"path": "/b/", "cache": {"ttl": "1m"}},
    {"path": "/plain/"},
)


async def fill(store: MemoryStore, route: str, path: str, *users: str | None) -> list[str]:
    keys = []
    stats = cache_stats_key("spork", route)
    for user in users:
        key = cache_key("spork", route, digest(path, CIMultiDict(), (), user))
        await store.cache_get(key, stats)
        await store.cache_set(key, stats, b"entry", 30.0)
        await store.cache_get(key, stats)
        keys.append(key)
    return keys


async def test_cache_rows_count_entries_and_lookups_of_cached_routes_only() -> None:
    store = MemoryStore(State())
    await fill(store, "a", "/a/x", None, "alice")
    rows = await cache_rows(store, CONFIG)
    assert rows == [
        {
            "route": "a",
            "ttl": 30.0,
            "entries": 2,
            "hits": 2,
            "misses": 2,
            "stores": 2,
            "hit_ratio": 0.5,
        },
        {
            "route": "/b/",
            "ttl": 60.0,
            "entries": 0,
            "hits": 0,
            "misses": 0,
            "stores": 0,
            "hit_ratio": None,
        },
    ]
    assert [r["route"] for r in await cache_rows(store, CONFIG, "/b/")] == ["/b/"]
    assert [r["route"] for r in await cache_rows(store, CONFIG, "/a/")] == ["a"]


async def test_purge_by_path_takes_every_variant_and_keeps_other_paths_and_counters() -> None:
    store = MemoryStore(State())
    doomed = await fill(store, "a", "/a/x?q=1", None, "alice", "bob")
    kept = await fill(store, "a", "/a/x?q=2", None)
    assert await purge(store, CONFIG, "a", path="/a/x?q=1") == 3
    assert await store.scan("spork:[{]cache:a}:*:*") == kept
    for key in doomed:
        assert await store.cache_get(key, "elsewhere") is None
    assert (await store.cache_stats(cache_stats_key("spork", "a")))["stores"] == 4


async def test_purge_by_key_takes_one_entry_of_any_cached_route() -> None:
    store = MemoryStore(State())
    alice, bob = await fill(store, "/b/", "/b/y", "alice", "bob")
    x_cache_key = alice.rpartition("}:")[2]
    assert await purge(store, CONFIG, key=x_cache_key) == 1
    assert await store.scan("spork:[{]cache:*") == [bob, cache_stats_key("spork", "/b/")]


async def test_purge_of_everything_spares_routes_not_named() -> None:
    store = MemoryStore(State())
    [a] = await fill(store, "a", "/a/x", None)
    [b] = await fill(store, "/b/", "/b/x", None)
    assert await purge(store, CONFIG, "/b/") == 1
    assert await store.cache_get(a, "s") is not None
    assert await store.cache_get(b, "s") is None
    assert await purge(store, CONFIG) == 1
    assert await store.cache_get(a, "s") is None
