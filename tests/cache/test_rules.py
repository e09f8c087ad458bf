"""The cache's rules without a socket: Cache-Control and HTTP dates as RFC 9110/9111 read
them, what may be stored and how long it is fresh, what a request asks, the key of a request,
the stored form of a response, the capture of a streamed body, and the CLI's view."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from spork_cli.config.model import Cache, GatewayConfig, State
from spork_cli.policies.cache import (
    Asks,
    Capture,
    Entry,
    Freshness,
    Policy,
    age_value,
    cache_control,
    cache_rows,
    cookie_pairs,
    digest,
    freshness,
    http_date,
    purge,
    request_asks,
    url_digest,
)
from spork_cli.state import cache_key, cache_stats_key
from spork_cli.state.memory import MemoryStore

NOW = 1_800_000_000.0  # a fixed "now" (2027-01-15), as the response's Date unless said otherwise
DATE = "Fri, 15 Jan 2027 08:00:00 GMT"


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def policy(**cache: Any) -> Policy:
    return Policy.of(Cache.model_validate({"ttl": "30s", **cache}))


def fresh_for(*pairs: tuple[str, str], status: int = 200, **cache: Any) -> float | None:
    """The freshness lifetime of a response stored now; None when it is not stored."""
    found = freshness(status, headers(*pairs), policy(**cache), http_date(DATE) or 0.0)
    return None if found is None else found.lifetime


# --- Cache-Control ---------------------------------------------------------------------------


def test_cache_control_lowercases_names_and_unquotes_values_across_header_lines() -> None:
    parsed = cache_control(['Public, Max-Age="60"', "S-MAXAGE=5 , no-transform", "max-age=60"])
    assert parsed == {"public": "", "max-age": "60", "s-maxage": "5", "no-transform": ""}


def test_a_comma_inside_a_quoted_value_does_not_split_it() -> None:
    assert cache_control(['no-cache="Set-Cookie, X-A", max-age=5']) == {
        "no-cache": "Set-Cookie, X-A",
        "max-age": "5",
    }


def test_a_directive_given_twice_with_different_values_is_a_conflict() -> None:
    assert "!conflict" in cache_control(["max-age=5", "max-age=10"])


# --- HTTP dates and Age ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"],
)
def test_the_three_date_forms_of_rfc_9110_are_one_time(text: str) -> None:
    assert http_date(text) == 784111777.0


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "-1",
        "",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT trailing",
        "Sun, 06 Foo 1994 08:49:37 GMT",
    ],
)
def test_anything_else_is_no_date(text: str) -> None:
    assert http_date(text) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["5"], 5),
        (["7200, 0"], 7200),  # a list: its first member counts, never a later (younger) one
        (["0, 7200"], 0),
        (["0", "7200"], 0),
        (["7200", "0"], 7200),
        (["soon, 5"], None),  # the first member is not delta-seconds: the field is ignored
        (["", "100"], 100),  # empty members are no members
        ([" , 7200, 0"], 7200),
        (["soon"], None),
        (["-5"], None),
        (["1.5"], None),
        ([], None),
    ],
)
def test_age_is_the_first_member_when_it_is_delta_seconds(
    values: list[str], expected: int | None
) -> None:
    assert age_value(values) == expected


# --- storing and freshness -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("max-age=5", 5.0),
        ("max-age=3600", 30.0),  # capped by the route's ttl
        ("public, max-age=10", 10.0),
        ("s-maxage=3, max-age=60", 3.0),  # s-maxage is the shared cache's own
        ("max-age=3, s-maxage=20", 20.0),
        ("max-age=0", 0.0),
    ],
)
def test_explicit_freshness_comes_from_the_response_capped_by_ttl(
    value: str, expected: float
) -> None:
    assert fresh_for(("Cache-Control", value), ("ETag", '"v"')) == expected


def test_expires_minus_date_is_the_freshness_without_max_age() -> None:
    assert fresh_for(("Date", DATE), ("Expires", "Fri, 15 Jan 2027 08:00:20 GMT")) == 20.0
    # max-age wins over Expires
    pairs = (("Date", DATE), ("Expires", "Fri, 15 Jan 2027 08:00:20 GMT"))
    assert fresh_for(*pairs, ("Cache-Control", "max-age=7")) == 7.0


@pytest.mark.parametrize("expires", ["0", "-1", "yesterday", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_an_invalid_or_past_expires_is_already_stale(expires: str) -> None:
    # Stale at once: kept only because it has a validator, to be revalidated.
    assert fresh_for(("Date", DATE), ("Expires", expires), ("ETag", '"v"')) == 0.0
    assert fresh_for(("Date", DATE), ("Expires", expires)) is None


def test_without_freshness_or_validator_nothing_is_stored_by_default() -> None:
    assert fresh_for() is None
    assert fresh_for(("Content-Type", "text/html")) is None


def test_without_freshness_a_validator_is_stored_to_be_revalidated_each_time() -> None:
    assert fresh_for(("ETag", '"v1"')) == 0.0
    assert fresh_for(("Last-Modified", "Thu, 14 Jan 2027 08:00:00 GMT")) == 0.0


def test_default_ttl_is_the_freshness_of_a_response_that_states_none() -> None:
    assert fresh_for(default_ttl="10s") == 10.0
    assert fresh_for(("Cache-Control", "max-age=3"), default_ttl="10s") == 3.0
    assert fresh_for(default_ttl="1h") == 30.0  # ttl caps it too


def test_heuristic_freshness_is_a_tenth_of_the_age_of_last_modified_when_asked() -> None:
    modified = ("Last-Modified", "Fri, 15 Jan 2027 07:59:00 GMT")  # 60 s before Date
    assert fresh_for(("Date", DATE), modified) == 0.0  # off by default
    assert fresh_for(("Date", DATE), modified, heuristic=True) == 6.0
    old = ("Last-Modified", "Fri, 01 Jan 2027 00:00:00 GMT")
    assert fresh_for(("Date", DATE), old, heuristic=True) == 30.0  # capped
    assert fresh_for(("Date", DATE), modified, heuristic=True, default_ttl="2s") == 2.0


@pytest.mark.parametrize(
    "value",
    ["no-store", "private", 'private="Set-Cookie"', "public, NO-STORE", "no-store, max-age=60"],
)
def test_directives_that_forbid_storing(value: str) -> None:
    assert fresh_for(("Cache-Control", value), ("ETag", '"v"'), default_ttl="10s") is None


def test_no_cache_is_stored_and_revalidated_before_each_reuse() -> None:
    assert fresh_for(("Cache-Control", "no-cache, max-age=60"), ("ETag", '"v"')) == 0.0
    assert fresh_for(("Cache-Control", 'no-cache="Set-Cookie"'), ("ETag", '"v"')) == 0.0
    at = http_date(DATE) or 0.0
    value = "no-cache, stale-if-error=60, stale-while-revalidate=60"
    found = freshness(200, headers(("Cache-Control", value), ("ETag", '"v"')), policy(), at)
    assert found is not None and found.must_revalidate  # never served stale


@pytest.mark.parametrize("value", ["max-age=abc", "max-age=5.5", "max-age=-1", "s-maxage=x"])
def test_a_malformed_age_directive_means_stale(value: str) -> None:
    assert fresh_for(("Cache-Control", value), ("ETag", '"v"'), default_ttl="10s") == 0.0


def test_conflicting_max_age_values_mean_stale() -> None:
    pairs = (("Cache-Control", "max-age=60"), ("Cache-Control", "max-age=5"), ("ETag", '"v"'))
    assert fresh_for(*pairs) == 0.0


def test_set_cookie_is_never_stored() -> None:
    assert fresh_for(("Set-Cookie", "session=1"), ("Cache-Control", "max-age=60")) is None


@pytest.mark.parametrize("status", [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
def test_heuristically_cacheable_statuses_are_stored_with_default_ttl(status: int) -> None:
    assert fresh_for(status=status, default_ttl="10s") == 10.0


@pytest.mark.parametrize("status", [201, 302, 307, 400, 403, 500, 503])
def test_other_statuses_need_explicit_freshness_and_the_filter(status: int) -> None:
    every = list(range(200, 600))
    assert fresh_for(status=status, default_ttl="10s", statuses=every) is None
    assert fresh_for(("Cache-Control", "max-age=5"), status=status, statuses=every) == 5.0
    assert fresh_for(("Cache-Control", "public"), status=status, statuses=every) is None
    assert fresh_for(("Cache-Control", "max-age=5"), status=status) is None  # not in the filter


@pytest.mark.parametrize(
    ("vary", "configured", "stored"),
    [
        ("Accept-Language", ["accept-language"], True),
        ("accept-language", ["Accept-Language"], True),
        ("Accept-Language, Accept-Encoding", ["accept-language", "accept-encoding"], True),
        ("Accept-Encoding", [], False),
        ("Accept-Language, Accept-Encoding", ["accept-language"], False),
        ("*", ["accept-language"], False),
        ("", [], True),
    ],
)
def test_vary_must_be_covered_by_the_configured_headers(
    vary: str, configured: list[str], stored: bool
) -> None:
    found = fresh_for(("Vary", vary), default_ttl="10s", vary=configured)
    assert (found is not None) is stored


def test_the_initial_age_is_the_larger_of_age_and_the_time_since_date() -> None:
    at = http_date(DATE) or 0.0
    p = policy()
    given = freshness(200, headers(("Age", "4"), ("Cache-Control", "max-age=10")), p, at)
    assert given is not None and given.initial_age == 4.0
    late = headers(("Date", "Fri, 15 Jan 2027 07:59:50 GMT"), ("Cache-Control", "max-age=60"))
    found = freshness(200, late, p, at)
    assert found is not None and found.initial_age == 10.0
    delayed = freshness(200, headers(("Age", "2"), ("Cache-Control", "max-age=9")), p, at, 1.5)
    assert delayed is not None and delayed.initial_age == 3.5


def test_revalidation_directives_and_stale_windows_are_kept() -> None:
    at = http_date(DATE) or 0.0
    value = "max-age=5, stale-while-revalidate=30, stale-if-error=60"
    found = freshness(200, headers(("Cache-Control", value)), policy(), at)
    assert found == Freshness(5.0, 0.0, False, 30.0, 60.0, False)
    for must in ("must-revalidate", "proxy-revalidate", "s-maxage=5"):
        got = freshness(200, headers(("Cache-Control", f"max-age=5, {must}")), policy(), at)
        assert got is not None and got.must_revalidate
    routed = freshness(
        200, headers(("Cache-Control", "max-age=5")), policy(stale_if_error="9s"), at
    )
    assert routed is not None and routed.stale_if_error == 9.0


def test_an_entry_is_kept_past_freshness_at_most_the_routes_longest_stale_window() -> None:
    at = http_date(DATE) or 0.0
    long = headers(("Cache-Control", "max-age=5, stale-if-error=86400"), ("ETag", '"v"'))
    found = freshness(200, long, policy(), at)
    assert found is not None and found.retention(policy()) == 5 + 600  # keep: 10 min
    assert found.retention(policy(keep="0s", stale_if_error="1h")) == 5 + 3600
    assert (
        freshness(
            200,
            headers(("Cache-Control", "max-age=0, stale-while-revalidate=60")),
            policy(keep="0s"),
            at,
        )
        is None
    )
    assert policy(keep="0s", stale_if_error="1h").longest == 30 + 3600 + 1


# --- the targeted field (RFC 9213) -----------------------------------------------------------


def test_cdn_cache_control_replaces_cache_control_and_expires() -> None:
    pairs = (("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=20"))
    assert fresh_for(*pairs) == 20.0
    pairs = (("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "no-store"))
    assert fresh_for(*pairs) is None
    dated = (("Date", DATE), ("Expires", "Fri, 15 Jan 2027 08:00:20 GMT"))
    assert fresh_for(*dated, ("CDN-Cache-Control", "must-revalidate"), ("ETag", '"x"')) == 0.0


def test_an_invalid_targeted_field_is_ignored() -> None:
    pairs = (("Cache-Control", "max-age=9"), ("CDN-Cache-Control", "max-age=soon"))
    assert fresh_for(*pairs) == 9.0


def test_the_targeted_fields_are_a_setting() -> None:
    pairs = (("Cache-Control", "max-age=9"), ("Spork-Cache-Control", "max-age=3"))
    pairs += (("CDN-Cache-Control", "max-age=5"),)
    assert fresh_for(*pairs) == 5.0
    assert fresh_for(*pairs, targeted=["Spork-Cache-Control", "CDN-Cache-Control"]) == 3.0
    assert fresh_for(*pairs, targeted=[]) == 9.0


# --- what a request asks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "asks"),
    [
        ((), Asks()),
        ((("Cache-Control", "no-cache"),), Asks(no_cache=True)),
        ((("Cache-Control", "max-age=0"),), Asks(no_cache=True, max_age=0.0)),
        ((("Pragma", "no-cache"),), Asks(no_cache=True)),
        ((("Pragma", "no-cache"), ("Cache-Control", "max-age=5")), Asks(max_age=5.0)),
        ((("Cache-Control", "no-store"),), Asks(no_store=True)),
        ((("Cache-Control", "max-stale"),), Asks(max_stale=float("inf"))),
        ((("Cache-Control", "max-stale=5"),), Asks(max_stale=5.0)),
        ((("Cache-Control", "min-fresh=3"),), Asks(min_fresh=3.0)),
        ((("Cache-Control", "only-if-cached"),), Asks(only_if_cached=True)),
        ((("Cache-Control", "stale-if-error=9"),), Asks(stale_if_error=9.0)),
    ],
)
def test_request_directives(pairs: tuple[tuple[str, str], ...], asks: Asks) -> None:
    assert request_asks(headers(*pairs)) == asks


# --- the key ---------------------------------------------------------------------------------

KEY = re.compile(r"^[0-9a-f]{16}:[0-9a-f]{16}$")


def test_digest_is_a_url_part_and_a_variant_part() -> None:
    key = digest("/r/a?x=1", [("host", "a.test")])
    assert KEY.match(key)
    assert key == digest("/r/a?x=1", [("host", "a.test")])
    assert key.partition(":")[0] == url_digest("/r/a?x=1")


@pytest.mark.parametrize("other", ["/r/a?x=2", "/r/a", "/r/a?x=1&y=", "/r%2Fa?x=1", "/R/a?x=1"])
def test_every_difference_in_raw_path_and_query_is_another_url(other: str) -> None:
    assert url_digest("/r/a?x=1") != url_digest(other)


def test_every_part_changes_the_variant_not_the_url() -> None:
    keys = {
        digest("/p", parts)
        for parts in (
            [],
            [("host", "a.test")],
            [("host", "evil.test")],
            [("host", "a.test"), ("user", "alice")],
            [("host", "a.test"), ("user", "alice"), ("roles", "admin")],
        )
    }
    assert len(keys) == 5
    assert len({k.partition(":")[0] for k in keys}) == 1


def test_parts_cannot_be_shuffled_into_one_key() -> None:
    first = digest("/p", [("vary:a", "1"), ("vary:b", "2")])
    second = digest("/p", [("vary:a", ""), ("vary:b", "12")])
    third = digest("/p", [("vary:a", "1vary:b"), ("", "2")])
    assert len({first, second, third}) == 3


def test_cookie_pairs_read_a_cookie_header() -> None:
    assert cookie_pairs("a=1; b=2;c=3 ; d=") == {"a": "1", "b": "2", "c": "3", "d": ""}
    assert cookie_pairs(None) == {} == cookie_pairs("")


@pytest.mark.parametrize("header", ["a=1; a=2", "a=1; SESSION", "a=1; =x"])
def test_a_cookie_header_servers_read_two_ways_is_none(header: str) -> None:
    # Duplicates: some frameworks keep the first, others the last; a bare name is a
    # cookie to some. Such a request is not shared.
    assert cookie_pairs(header) is None


# --- the stored form -------------------------------------------------------------------------

FRESH = Freshness(10.0, 2.0, False, 0.0, 5.0, True)


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
    entry = Entry.of(200, "OK", upstream, b"hello", FRESH, ("x-ratelimit-remaining", "RATELIMIT"))
    assert entry.headers == (("Content-Type", "text/plain"), ("Link", "<a>"), ("Link", "<b>"))
    assert (entry.status, entry.reason, entry.body, entry.fresh) == (200, "OK", b"hello", FRESH)


def test_a_304_updates_the_stored_headers_but_not_what_describes_the_stored_content() -> None:
    stored = Entry(
        200,
        "OK",
        (
            ("Content-Type", "text/plain"),
            ("ETag", '"v1"'),
            ("Content-MD5", "old"),
            ("X-A", "old"),
            ("X-B", "kept"),
        ),
        b"body",
        FRESH,
    )
    new = Freshness(60.0, 0.0, False, 0.0, 0.0, True)
    update = CIMultiDict([("X-A", "new"), ("X-A", "newer"), ("Content-Type", "text/html")])
    update.add("Content-Length", "0")
    update.add("Content-MD5", "new")
    update.add("Content-Encoding", "gzip")
    updated = stored.updated(update, new)
    assert updated.body == b"body" and updated.fresh == new
    assert updated.headers == (
        ("ETag", '"v1"'),
        ("Content-MD5", "old"),
        ("X-B", "kept"),
        ("X-A", "new"),
        ("X-A", "newer"),
        ("Content-Type", "text/html"),
    )


def test_entry_round_trips_a_body_with_newlines_and_any_bytes() -> None:
    entry = Entry(404, "Not Here", (("A", "1\r"), ("a", "é")), b"line\nline\n\x00\xff", FRESH)
    assert Entry.decode(entry.encode()) == entry


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\n",
        b"not json\nbody",
        b"[2, 200, null, [], [1, 0, false, 0, 0, false]]",  # no newline: the body is missing
        b"[200, null, [], 0]\n",  # the old form: a miss, replaced
        b"[2, 200, null, []]\n",
        b"[2, 200, null, [], [1, 0, false, 0, 0]]\n",
        b'{"status": 200}\n',
        b"[2, 200, null, 5, [1, 0, false, 0, 0, false]]\n",
        b'[2, 200, null, [["only-a-name"]], [1, 0, false, 0, 0, false]]\n',
        b"[3, 200, null, [], [1, 0, false, 0, 0, false]]\n",
        b"\xff\xfe\n",
    ],
)
def test_decode_of_an_unreadable_entry_is_none(raw: bytes) -> None:
    assert Entry.decode(raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"[2, 1, null, [], [1, 0, false, 0, 0, false]]\n",
        b"[2, 200, 5, [], [1, 0, false, 0, 0, false]]\n",
        b"[2, 200, null, [], [-1, 0, false, 0, 0, false]]\n",
        b"[2, 200, null, [], [1, 0, 1, 0, 0, false]]\n",
        b'[2, 200, null, [], [1, "0", false, 0, 0, false]]\n',
    ],
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
SECONDS = st.integers(0, 10**9).map(float) | st.floats(0, 1e9)
ENTRIES = st.builds(
    Entry,
    status=st.integers(200, 599),  # final responses, the only ones stored
    reason=st.none() | TEXT,
    headers=st.lists(st.tuples(TEXT, TEXT), max_size=6).map(tuple),
    body=st.binary(max_size=512),
    fresh=st.builds(Freshness, SECONDS, SECONDS, st.booleans(), SECONDS, SECONDS, st.booleans()),
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
    """An entry of ``path`` per user (None: anonymous), a miss and a hit counted for each."""
    keys = []
    for user in users:
        key = cache_key("spork", route, digest(path, [("user", user)] if user else []))
        await store.cache_set(key, b"entry", 30.0, key + ":marker", 0.0)
        await store.cache_count(cache_stats_key("spork", route), {"misses": 1, "hits": 1})
        await store.cache_count(cache_stats_key("spork", route), {"stores": 1})
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
            "stale": 0,
            "revalidated": 0,
            "bypasses": 0,
            "stores": 2,
            "invalidations": 0,
            "hit_ratio": 0.5,
        },
        {
            "route": "/b/",
            "ttl": 60.0,
            "entries": 0,
            "hits": 0,
            "misses": 0,
            "stale": 0,
            "revalidated": 0,
            "bypasses": 0,
            "stores": 0,
            "invalidations": 0,
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
        assert await store.cache_get(key, "spork:{cache:a}:none") is None
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
    assert await store.cache_get(a, "m") is not None
    assert await store.cache_get(b, "m") is None
    assert await purge(store, CONFIG) == 1
    assert await store.cache_get(a, "m") is None


# --- across reloads ------------------------------------------------------------------------


async def test_an_invalidation_outlives_what_any_earlier_config_stored() -> None:
    # Stored under a long ttl, invalidated under a short one (a reload), asked again under
    # the long one (another reload): the marker must still be there.
    import time

    from spork_cli.config.model import Route
    from spork_cli.middleware.cache import RouteCache
    from spork_cli.state import cache_marker_key
    from spork_cli.state.outage import StateOutage

    now = [NOW]
    store = MemoryStore(State(), clock=lambda: now[0])
    outage = StateOutage(store, "test")

    def route_cache(cache: dict[str, Any]) -> RouteCache:
        route = Route.model_validate({"path": "/m/", "service": "s", "cache": cache})
        return RouteCache(route, "reloaded", "spork", "open", store, None, outage)

    long = {"ttl": "10m", "default_ttl": "10m", "keep": "10m"}
    path = "/m/r"
    key = cache_key("spork", "reloaded", digest(path, []))
    marker = cache_marker_key("spork", "reloaded", url_digest(path))
    entry = Entry(200, "OK", (), b"old", Freshness(600.0, 0.0, False, 0.0, 0.0, True))
    await route_cache(long).keep(store, key, marker, entry, time.monotonic())
    await route_cache({"ttl": "1s", "keep": "0s"}).invalidate(path)
    now[0] += 60
    hit, _ = await route_cache(long).lookup(key, marker)
    assert hit is None
