"""The response cache as RFC 9111 defines a shared cache, through `spork serve` with a real
upstream, on the memory and the Redis backends: freshness from the response, operator
defaults, strict dates and Age, cacheable statuses, the targeted field, what is in the key,
what requests ask, conditional requests, revalidation, invalidation by unsafe requests, and
stale answers when they help.

One gateway per backend serves the whole module (routes below, one per setting under test);
each test uses resources of its own (``name``), so tests do not see each other's entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.cache.conftest import Answer, fetch
from tests.conftest import StartSpork
from tests.support import (
    Relay,
    SporkRunner,
    SporkServer,
    ThreadedUpstream,
    Upstream,
    eventually,
    free_ports,
    replace_file,
    upstream_in_thread,
)

SECRET = "http-caching-suite-secret-" + "c" * 40
APP = "http://app.test"

ROUTES = {
    # prefix: the route's [routes.cache] (inline table) and other route lines
    "d": "{}",  # the defaults: RFC 9111 alone
    "t": '{ default_ttl = "30s" }',
    "h": "{ heuristic = true }",
    "k": '{ default_ttl = "30s", cookies = ["lang"] }',
    "i": '{ default_ttl = "30s", request_directives = false }',
    "g": '{ targeted = ["Spork-Cache-Control", "CDN-Cache-Control"] }',
    "x": "{ statuses = [200] }",
    "n": '{ keep = "0s" }',
    "s": '{ stale_if_error = "60s" }',
    "v": '{ stale_while_revalidate = "60s" }',
    "m": "{}",  # as /d, for the counting test alone: no other test's counts come in
    "o": '{ default_ttl = "30s" }',  # auth = "optional"
    "a": '{ default_ttl = "30s" }',
}


def config_text(port: int, admin_port: int, upstream: str, state: str) -> str:
    lines = [
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n',
        f'[admin]\nhost = "127.0.0.1"\nport = {admin_port}\n',
        f'[auth]\nalgorithms = ["HS256"]\nsecret = "{SECRET}"\n'
        # A claim of its own goes upstream: entries are kept apart by it too.
        'forward_claims = { sub = "X-User-Id", roles = "X-User-Roles", tenant = "X-Tenant" }\n',
        "[logging]\naccess_log = false\n",
        # Answers to this origin carry CORS headers for its client alone: never stored.
        f'[cors]\nallow_origins = ["{APP}"]\n',
        state,
        f'[[services]]\nname = "origin"\nendpoints = ["{upstream}"]\n'
        "retries = { attempts = 0 }\n",
        # A write-only route under /t/: its successful writes invalidate what /t/ holds.
        '[[routes]]\npath = "/t/w"\nservice = "origin"\nmethods = ["POST"]\nstrip_prefix = true\n',
    ]
    for prefix, cache in ROUTES.items():
        auth = {"a": "required", "o": "optional"}.get(prefix, "none")
        lines.append(
            f'[[routes]]\npath = "/{prefix}"\nname = "{prefix}"\nservice = "origin"\n'
            f'strip_prefix = true\nauth = "{auth}"\ncache = {cache}\n'
        )
    return "\n".join(lines)


@dataclass
class Caching:
    """The module's gateway on one backend, and its upstream."""

    backend: str
    server: SporkServer
    origin: Upstream
    threaded: ThreadedUpstream
    config: Path

    def url(self, route: str, path: str) -> str:
        return f"{self.server.url}/{route}{path}"


@pytest.fixture(scope="module")
def caching_origin() -> Iterator[ThreadedUpstream]:
    with upstream_in_thread("origin") as threaded:
        yield threaded


@pytest.fixture(scope="module", params=["memory", "redis"])
def caching(
    request: pytest.FixtureRequest,
    caching_origin: ThreadedUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Caching]:
    state = ""
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")
        if not redis.running:
            redis.start()
        state = f'[state]\nbackend = "redis"\nurl = "{redis.url}"\nprefix = "httpcache"\n'
    work = tmp_path_factory.mktemp(f"caching-{request.param}")
    port, admin_port = free_ports(2)
    config = work / "gateway.toml"
    config.write_text(config_text(port, admin_port, caching_origin.upstream.url, state))
    server = SporkServer(config, port, admin_port, work / "server")
    asyncio.run(server.start())
    try:
        yield Caching(request.param, server, caching_origin.upstream, caching_origin, config)
    finally:
        server.kill()


@pytest.fixture
def name() -> str:
    """A resource of the test's own: ``/r/<name>`` at the upstream."""
    return uuid.uuid4().hex[:12]


async def ask(
    http: aiohttp.ClientSession, caching: Caching, route: str, path: str, **headers: str
) -> Answer:
    method = headers.pop("method", "GET")
    return await fetch(http, caching.url(route, path), method, headers)


@contextlib.contextmanager
def held(caching: Caching) -> Iterator[None]:
    """The upstream's ``/hold`` answers nothing until the block ends."""
    gate = caching.origin.gate
    caching.threaded.call(gate.clear)
    try:
        yield
    finally:
        caching.threaded.call(gate.set)


def date(offset: float = 0.0) -> str:
    return formatdate(time.time() + offset, usegmt=True)


def served(*answers: Answer) -> list[str | None]:
    return [a.cache for a in answers]


# --- freshness from the response -------------------------------------------------------------


async def test_without_freshness_or_validator_nothing_is_reused(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    first = await ask(http, caching, "d", f"/r/{name}")
    second = await ask(http, caching, "d", f"/r/{name}")
    assert served(first, second) == ["MISS", "MISS"]
    assert (first.json()["n"], second.json()["n"]) == (1, 2)


async def test_one_users_cookie_session_page_is_never_served_to_another(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    # The page of the report: no Cache-Control; even where the operator set a default
    # freshness (/t/), a request with a cookie neither reads nor fills the cache.
    for route in ("d", "t"):
        alice = await ask(http, caching, route, f"/r/{name}", Cookie="session=alice")
        bob = await ask(http, caching, route, f"/r/{name}", Cookie="session=bob")
        assert served(alice, bob) == ["BYPASS", "BYPASS"]
        assert alice.json()["headers"]["cookie"] == "session=alice"
        assert bob.json()["headers"]["cookie"] == "session=bob"
        anonymous = await ask(http, caching, route, f"/r/{name}")
        assert anonymous.cache == "MISS"
        assert "cookie" not in anonymous.json()["headers"]
    assert caching.origin.calls(f"/r/{name}") == 6


@pytest.mark.parametrize(
    ("headers", "hit"),
    [
        (("Cache-Control: max-age=60",), True),
        (("Cache-Control: max-age=0, s-maxage=60",), True),  # s-maxage is a shared cache's
        (("Cache-Control: s-maxage=0, max-age=60",), False),
        (("Cache-Control: public",), False),  # public alone gives no freshness
        (("Cache-Control: max-age=60", "Age: 7200, 0"), False),  # a list: its first member
        (("Cache-Control: max-age=60", "Age: 0, 7200"), True),
        (("Cache-Control: max-age=60", "Age: soon"), True),  # not delta-seconds: ignored
        (("Cache-Control: max-age=60", "Age: 10"), True),
        (("Cache-Control: max-age=60", "Age: 40"), False),  # past the route's ttl (30 s)
        (("Cache-Control: max-age=60", "Age: 90"), False),
        (("Cache-Control: max-age=60, private",), False),
        (("Cache-Control: max-age=60, no-store",), False),
        (("Cache-Control: max-age=60", "Set-Cookie: id=1"), False),
        (("Cache-Control: max-age=60", "Vary: Accept-Language"), False),  # not in the key
        # Surrogate-Control is targeted after CDN-Cache-Control.
        (("Cache-Control: max-age=60", "Surrogate-Control: no-store"), False),
        (("Cache-Control: max-age=0", "Surrogate-Control: max-age=60"), True),
        # Cache-Control's no-store and private still hold: a blanket Surrogate-Control for a
        # CDN tier comes with them on pages that must not be shared.
        (("Cache-Control: no-store", "Surrogate-Control: max-age=60"), False),
        (("Cache-Control: private", "Surrogate-Control: max-age=60"), False),
        # Targeted at a surrogate named in Surrogate-Capability: not the gateway's.
        (("Cache-Control: no-store", "Surrogate-Control: max-age=60;edge"), False),
        (("CDN-Cache-Control: max-age=60", "Surrogate-Control: no-store"), True),
    ],
)
async def test_freshness_comes_from_the_response(
    http: aiohttp.ClientSession,
    caching: Caching,
    name: str,
    headers: tuple[str, ...],
    hit: bool,
) -> None:
    caching.origin.respond(f"/r/{name}", *headers)
    first = await ask(http, caching, "d", f"/r/{name}")
    second = await ask(http, caching, "d", f"/r/{name}")
    assert served(first, second) == ["MISS", "HIT" if hit else "MISS"]
    assert second.json()["n"] == (1 if hit else 2)


@pytest.mark.parametrize(
    ("expires", "hit"),
    [(60, True), (-60, False), ("0", False), ("not a date", False), ("Tue, 15 Nov 94", False)],
)
async def test_expires_counts_from_date_and_an_invalid_one_is_stale(
    http: aiohttp.ClientSession, caching: Caching, name: str, expires: Any, hit: bool
) -> None:
    value = date(expires) if isinstance(expires, int) else expires
    caching.origin.respond(f"/r/{name}", f"Expires: {value}")
    answers = [await ask(http, caching, "d", f"/r/{name}") for _ in range(2)]
    assert served(*answers) == ["MISS", "HIT" if hit else "MISS"]


async def test_the_age_served_includes_the_upstreams_age(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    caching.origin.respond(f"/r/{name}", "Cache-Control: max-age=600", "Age: 20")
    await ask(http, caching, "d", f"/r/{name}")
    hit = await ask(http, caching, "d", f"/r/{name}")
    assert hit.cache == "HIT"
    assert hit.age is not None and 20 <= hit.age <= 22


# --- operator settings -----------------------------------------------------------------------


@pytest.mark.observes("routes.cache.default_ttl")
async def test_default_ttl_gives_freshness_to_a_response_that_states_none(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    answers = [await ask(http, caching, "t", f"/r/{name}") for _ in range(2)]
    assert served(*answers) == ["MISS", "HIT"]
    # ... but never overrides what the response says.
    caching.origin.respond(f"/r/{name}-0", "Cache-Control: max-age=0")
    answers = [await ask(http, caching, "t", f"/r/{name}-0") for _ in range(2)]
    assert served(*answers) == ["MISS", "MISS"]


@pytest.mark.observes("routes.cache.heuristic")
async def test_heuristic_freshness_needs_last_modified_and_the_setting(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    caching.origin.respond(f"/r/{name}", f"Last-Modified: {date(-86400)}")
    on = [await ask(http, caching, "h", f"/r/{name}") for _ in range(2)]
    off = [await ask(http, caching, "d", f"/r/{name}-off") for _ in range(2)]
    plain = [await ask(http, caching, "h", f"/r/{name}-plain") for _ in range(2)]
    assert served(*on) == ["MISS", "HIT"]  # a tenth of a day, capped by ttl (30 s)
    assert served(*off) == ["MISS", "MISS"]
    assert served(*plain) == ["MISS", "MISS"]


@pytest.mark.parametrize(
    ("status", "route", "hit"),
    [
        (200, "d", True),
        (204, "d", True),
        (404, "d", True),
        (410, "d", True),
        (301, "d", True),
        (302, "d", False),  # not in RFC 9110 15.1's list, nor in the default statuses
        (500, "d", False),
        (404, "x", False),  # statuses = [200]: a filter
        (200, "x", True),
    ],
)
@pytest.mark.observes("routes.cache.statuses")
async def test_cacheable_statuses_and_the_statuses_filter(
    http: aiohttp.ClientSession, caching: Caching, name: str, status: int, route: str, hit: bool
) -> None:
    caching.origin.respond(f"/r/{name}", "Cache-Control: max-age=60")
    path = f"/r/{name}?respond-status={status}"
    answers = [await ask(http, caching, route, path) for _ in range(2)]
    assert [a.status for a in answers] == [status, status]
    assert served(*answers) == ["MISS", "HIT" if hit else "MISS"]


async def test_cdn_cache_control_is_the_field_for_the_gateway(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    origin = caching.origin
    origin.respond(f"/r/{name}", "Cache-Control: no-store", "CDN-Cache-Control: max-age=60")
    origin.respond(f"/r/{name}-n", "Cache-Control: max-age=60", "CDN-Cache-Control: no-store")
    stored = [await ask(http, caching, "d", f"/r/{name}") for _ in range(2)]
    refused = [await ask(http, caching, "d", f"/r/{name}-n") for _ in range(2)]
    assert served(*stored) == ["MISS", "HIT"]
    assert served(*refused) == ["MISS", "MISS"]
    # The field is kept for caches further down: it is not the gateway's to remove.
    assert stored[1].headers["CDN-Cache-Control"] == "max-age=60"


@pytest.mark.observes("routes.cache.targeted")
async def test_the_targeted_fields_are_a_setting(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    caching.origin.respond(
        f"/r/{name}", "CDN-Cache-Control: no-store", "Spork-Cache-Control: max-age=60"
    )
    on_g = [await ask(http, caching, "g", f"/r/{name}") for _ in range(2)]
    on_d = [await ask(http, caching, "d", f"/r/{name}") for _ in range(2)]
    assert served(*on_g) == ["MISS", "HIT"]  # Spork-Cache-Control comes first on /g
    assert served(*on_d) == ["MISS", "MISS"]  # CDN-Cache-Control alone on /d


# --- the key ---------------------------------------------------------------------------------


async def test_the_host_is_part_of_the_key(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    evil = await ask(http, caching, "t", f"/r/{name}", Host="evil.example")
    normal = await ask(http, caching, "t", f"/r/{name}")
    again = await ask(http, caching, "t", f"/r/{name}")
    assert served(evil, normal, again) == ["MISS", "MISS", "HIT"]
    assert evil.json()["headers"]["x-forwarded-host"] == "evil.example"
    assert again.json()["headers"]["x-forwarded-host"] != "evil.example"


@pytest.mark.observes("routes.cache.cookies")
async def test_configured_cookies_are_keyed_and_any_other_bypasses(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    path = f"/r/{name}"
    en = [await ask(http, caching, "k", path, Cookie="lang=en") for _ in range(2)]
    fr = await ask(http, caching, "k", path, Cookie="lang=fr")
    other = await ask(http, caching, "k", path, Cookie="lang=en; session=alice")
    assert served(*en, fr, other) == ["MISS", "HIT", "MISS", "BYPASS"]
    assert other.json()["headers"]["cookie"] == "lang=en; session=alice"
    assert fr.json()["headers"]["cookie"] == "lang=fr"


def token(sub: str, *roles: str, scope: str = "", **more: str) -> str:
    claims = {"sub": sub, "roles": list(roles), "scope": scope, "exp": int(time.time()) + 600}
    return "Bearer " + jwt.encode({**claims, **more}, SECRET, "HS256")


async def test_entries_are_per_user_and_per_roles_and_scopes(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    path = f"/r/{name}"
    viewer, admin = token("alice", "viewer"), token("alice", "admin")
    scoped = token("alice", "viewer", scope="write")
    first = await ask(http, caching, "a", path, Authorization=viewer)
    again = await ask(http, caching, "a", path, Authorization=token("alice", "viewer"))
    as_admin = await ask(http, caching, "a", path, Authorization=admin)
    with_scope = await ask(http, caching, "a", path, Authorization=scoped)
    bob = await ask(http, caching, "a", path, Authorization=token("bob", "viewer"))
    assert served(first, again, as_admin, with_scope, bob) == [
        "MISS",
        "HIT",
        "MISS",
        "MISS",
        "MISS",
    ]
    assert caching.origin.calls(path) == 4


async def test_entries_are_per_claim_sent_upstream(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    # auth.forward_claims sends the tenant upstream, so the answer may depend on it.
    path = f"/r/{name}"
    one = await ask(http, caching, "a", path, Authorization=token("alice", tenant="one"))
    two = await ask(http, caching, "a", path, Authorization=token("alice", tenant="two"))
    again = await ask(http, caching, "a", path, Authorization=token("alice", tenant="one"))
    assert served(one, two, again) == ["MISS", "MISS", "HIT"]
    assert two.json()["headers"]["x-tenant"] == "two"
    assert again.json()["headers"]["x-tenant"] == "one"


async def test_credentials_the_gateway_did_not_read_are_never_shared(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    path = f"/r/{name}"
    basic = await ask(http, caching, "o", path, Authorization="Basic YWxpY2U6cHc=")
    plain = await ask(http, caching, "o", path)
    assert served(basic, plain) == ["BYPASS", "MISS"]
    assert "authorization" not in plain.json()["headers"]


@pytest.mark.parametrize("cookie", ["lang=en; lang=fr", "lang=en; VICTIMSESSION"])
async def test_a_cookie_header_read_two_ways_is_not_shared(
    http: aiohttp.ClientSession, caching: Caching, name: str, cookie: str
) -> None:
    odd = await ask(http, caching, "k", f"/r/{name}", Cookie=cookie)
    clean = await ask(http, caching, "k", f"/r/{name}", Cookie="lang=en")
    assert served(odd, clean) == ["BYPASS", "MISS"]


async def test_a_no_cache_response_is_never_served_stale(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    origin = caching.origin
    path = f"/r/{name}"
    origin.respond(path, "Cache-Control: no-cache, stale-if-error=60", 'ETag: "n"')
    await ask(http, caching, "s", path)
    stale = await ask(http, caching, "s", path, **{"Cache-Control": "max-stale"})
    origin.answer(503, path)
    try:
        failing = await ask(http, caching, "s", path)
    finally:
        origin.answer(200, path)
    assert stale.cache == "MISS"  # revalidated (no validate=1 here: a whole answer)
    assert (failing.status, failing.cache) == (503, "MISS")


# --- what a request asks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "asks", [{"Cache-Control": "no-cache"}, {"Cache-Control": "max-age=0"}, {"Pragma": "no-cache"}]
)
async def test_a_hard_reload_fetches_again_and_refreshes_the_entry(
    http: aiohttp.ClientSession, caching: Caching, name: str, asks: dict[str, str]
) -> None:
    path = f"/r/{name}"
    await ask(http, caching, "t", path)
    assert (await ask(http, caching, "t", path)).cache == "HIT"
    reload = await ask(http, caching, "t", path, **asks)
    after = await ask(http, caching, "t", path)
    assert served(reload, after) == ["MISS", "HIT"]
    assert reload.json()["n"] == 2 == after.json()["n"]


async def test_a_hard_reload_revalidates_an_entry_with_a_validator(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    caching.origin.respond(f"/r/{name}", "Cache-Control: max-age=60", 'ETag: "v1"')
    path = f"/r/{name}?validate=1"
    first = await ask(http, caching, "d", path)
    reload = await ask(http, caching, "d", path, **{"Cache-Control": "no-cache"})
    assert served(first, reload) == ["MISS", "REVALIDATED"]
    assert reload.status == 200 and reload.body == first.body
    asked = caching.origin.requests[-1]
    assert asked.headers["If-None-Match"] == '"v1"'


async def test_no_store_neither_serves_nor_stores(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    path = f"/r/{name}"
    first = await ask(http, caching, "t", path, **{"Cache-Control": "no-store"})
    second = await ask(http, caching, "t", path)
    third = await ask(http, caching, "t", path, **{"Cache-Control": "no-store"})
    assert served(first, second, third) == ["BYPASS", "MISS", "BYPASS"]
    assert third.json()["n"] == 3


async def test_only_if_cached_is_a_504_when_nothing_may_be_used(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    path = f"/r/{name}"
    only = {"Cache-Control": "only-if-cached"}
    empty = await ask(http, caching, "t", path, **only)
    assert empty.status == 504
    assert empty.headers["Content-Type"] == "application/problem+json"
    assert empty.json()["type"] == "urn:spork:problem:not-cached"
    assert caching.origin.calls(path) == 0
    await ask(http, caching, "t", path)
    stored = await ask(http, caching, "t", path, **only)
    assert (stored.status, stored.cache) == (200, "HIT")


async def test_max_age_min_fresh_and_max_stale_of_a_request(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    origin = caching.origin
    # 10 s old on arrival, fresh for 30 (the route's ttl): 20 s left. A request may want it
    # younger, or with more time left.
    origin.respond(f"/r/{name}", "Cache-Control: max-age=60", "Age: 10")
    path = f"/r/{name}"
    await ask(http, caching, "d", path)
    young = await ask(http, caching, "d", path, **{"Cache-Control": "max-age=5"})
    fresher = await ask(http, caching, "d", path, **{"Cache-Control": "min-fresh=25"})
    fine = await ask(http, caching, "d", path, **{"Cache-Control": "max-age=15, min-fresh=10"})
    assert served(young, fresher, fine) == ["MISS", "MISS", "HIT"]
    # Stale on arrival (Age past max-age) but kept for its validator: only max-stale takes it.
    origin.respond(f"/r/{name}-s", "Cache-Control: max-age=10", "Age: 20", 'ETag: "s"')
    stale = f"/r/{name}-s"
    await ask(http, caching, "d", stale)
    taken = await ask(http, caching, "d", stale, **{"Cache-Control": "max-stale=60"})
    too_stale = await ask(http, caching, "d", stale, **{"Cache-Control": "max-stale=5"})
    assert served(taken, too_stale) == ["STALE", "MISS"]
    assert taken.json()["n"] == 1


@pytest.mark.observes("routes.cache.request_directives")
async def test_a_route_can_ignore_what_requests_ask(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    path = f"/r/{name}"
    await ask(http, caching, "i", path)
    reload = await ask(http, caching, "i", path, **{"Cache-Control": "no-cache"})
    no_store = await ask(http, caching, "i", path, **{"Cache-Control": "no-store"})
    assert served(reload, no_store) == ["HIT", "HIT"]


# --- conditional requests and revalidation ---------------------------------------------------


async def test_a_clients_conditional_request_is_answered_304_from_a_fresh_entry(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    modified = date(-3600)
    caching.origin.respond(
        f"/r/{name}", "Cache-Control: max-age=60", 'ETag: "e1"', f"Last-Modified: {modified}"
    )
    path = f"/r/{name}"
    # The first one, a miss, asks the upstream for the whole response to store it.
    first = await ask(http, caching, "d", path, **{"If-None-Match": '"e1"'})
    assert (first.status, first.cache) == (304, "MISS")
    assert "If-None-Match" not in caching.origin.requests[-1].headers
    tag = await ask(http, caching, "d", path, **{"If-None-Match": 'W/"e1", "e0"'})
    since = await ask(http, caching, "d", path, **{"If-Modified-Since": date()})
    other = await ask(http, caching, "d", path, **{"If-None-Match": '"e2"'})
    older = await ask(http, caching, "d", path, **{"If-Modified-Since": date(-7200)})
    assert [a.status for a in (tag, since, other, older)] == [304, 304, 200, 200]
    assert served(tag, since, other, older) == ["HIT"] * 4
    assert tag.body == b"" and tag.headers["ETag"] == '"e1"'
    assert caching.origin.calls(path) == 1


async def test_a_stale_entry_is_revalidated_and_a_304_updates_it(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    origin = caching.origin
    # No freshness, a validator: stored, and revalidated before each use.
    origin.respond(f"/r/{name}", 'ETag: "v1"', "X-Version: 1", "Content-MD5: old")
    path = f"/r/{name}?validate=1"
    first = await ask(http, caching, "d", path)
    second = await ask(http, caching, "d", path)
    assert served(first, second) == ["MISS", "REVALIDATED"]
    assert second.body == first.body  # the stored body, after the upstream's 304
    assert origin.requests[-1].headers["If-None-Match"] == '"v1"'
    # The upstream now gives it freshness: its 304 updates the stored headers (RFC 9111 3.2,
    # 4.3.4), Content-Type among them; a digest of the content it did not send is kept.
    origin.respond(
        f"/r/{name}",
        'ETag: "v1"',
        "Cache-Control: max-age=60",
        "Content-Type: text/plain; charset=utf-8",
        "Content-MD5: new",
    )
    third = await ask(http, caching, "d", path)
    fourth = await ask(http, caching, "d", path)
    assert served(third, fourth) == ["REVALIDATED", "HIT"]
    for answer in (third, fourth):
        assert answer.headers["Cache-Control"] == "max-age=60"
        assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert answer.headers["Content-MD5"] == "old"
        assert answer.headers["X-Version"] == "1"  # not in the 304: kept
    assert origin.calls(f"/r/{name}") == 3


async def test_a_changed_resource_replaces_the_entry(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    origin = caching.origin
    origin.respond(f"/r/{name}", 'ETag: "v1"')
    path = f"/r/{name}?validate=1"
    await ask(http, caching, "d", path)
    origin.respond(f"/r/{name}", 'ETag: "v2"')
    changed = await ask(http, caching, "d", path)
    assert changed.cache == "MISS"
    assert changed.headers["ETag"] == '"v2"' and changed.json()["n"] == 2
    assert origin.requests[-1].headers["If-None-Match"] == '"v1"'
    again = await ask(http, caching, "d", path)
    assert again.cache == "REVALIDATED" and again.headers["ETag"] == '"v2"'


async def test_a_heads_answer_refreshes_the_stored_get_or_drops_it(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    # RFC 9111 4.3.5: the same validators and length: the entry's headers are updated (here,
    # fresh again); another ETag, or another type (a client decides when a HEAD is asked: it
    # must not retype what others are served): the stored GET is out of date and goes.
    origin = caching.origin
    same, changed, retyped = f"/bytes/{name}", f"/bytes/{name}-c", f"/bytes/{name}-t"
    for path in (same, changed, retyped):
        origin.respond(path, "Cache-Control: max-age=0", 'ETag: "v1"')
        first = await ask(http, caching, "d", f"{path}?size=100&length=1")
        assert first.cache == "MISS"
    origin.respond(same, "Cache-Control: max-age=60", 'ETag: "v1"')
    origin.respond(changed, "Cache-Control: max-age=60", 'ETag: "v2"')
    origin.respond(retyped, "Cache-Control: max-age=60", 'ETag: "v1"', "Content-Type: text/html")
    for path in (same, changed, retyped):
        head = await ask(http, caching, "d", f"{path}?size=100&length=1", method="HEAD")
        assert head.status == 200
    kept = await ask(http, caching, "d", f"{same}?size=100&length=1")
    # A stale answer would do for this client; none is left to give.
    stale_ok = {"Cache-Control": "max-stale=600"}
    gone = await ask(http, caching, "d", f"{changed}?size=100&length=1", **stale_ok)
    untyped = await ask(http, caching, "d", f"{retyped}?size=100&length=1", **stale_ok)
    assert served(kept, gone, untyped) == ["HIT", "MISS", "MISS"]
    assert origin.calls(same) == 2 and origin.calls(changed) == 3 and origin.calls(retyped) == 3


async def test_what_the_gateway_added_for_one_client_is_never_stored(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    """An answer streamed to a client (its head already finished for it: CORS for its origin,
    its request id) and a HEAD that refreshes a stored GET both leave the entry as the origin
    said it: the next client, from no origin, gets no other client's CORS answer."""
    origin = caching.origin
    streamed, refreshed = f"/bytes/{name}", f"/bytes/{name}-h"
    origin.respond(streamed, "Cache-Control: max-age=60")
    first = await ask(http, caching, "d", f"{streamed}?size=300000", Origin=APP)
    assert first.cache == "MISS" and first.headers["Access-Control-Allow-Origin"] == APP
    origin.respond(refreshed, "Cache-Control: max-age=0", 'ETag: "v1"')
    assert (await ask(http, caching, "d", f"{refreshed}?size=100&length=1")).cache == "MISS"
    origin.respond(refreshed, "Cache-Control: max-age=60", 'ETag: "v1"')
    head = await ask(
        http, caching, "d", f"{refreshed}?size=100&length=1", method="HEAD", Origin=APP
    )
    assert head.status == 200 and head.headers["Access-Control-Allow-Origin"] == APP
    for path in (f"{streamed}?size=300000", f"{refreshed}?size=100&length=1"):
        again = await ask(http, caching, "d", path)
        assert again.cache == "HIT", path
        assert "Access-Control-Allow-Origin" not in again.headers, path
        assert again.headers["X-Request-ID"] != first.headers["X-Request-ID"]


@pytest.mark.observes("routes.cache.keep")
async def test_keep_bounds_how_long_a_stale_entry_waits_for_revalidation(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    caching.origin.respond(f"/r/{name}", 'ETag: "v1"')
    path = f"/r/{name}?validate=1"
    await ask(http, caching, "n", path)  # keep = "0s": not kept at all
    second = await ask(http, caching, "n", path)
    assert second.cache == "MISS"
    assert "If-None-Match" not in caching.origin.requests[-1].headers


@pytest.mark.parametrize(
    "condition", [{"If-Match": '"v1"'}, {"If-Unmodified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"}]
)
async def test_conditions_on_the_resources_state_go_to_the_upstream(
    http: aiohttp.ClientSession, caching: Caching, name: str, condition: dict[str, str]
) -> None:
    # If-Match and If-Unmodified-Since are for the origin to evaluate (RFC 9111 4.3.2).
    first = await ask(http, caching, "t", f"/r/{name}")
    conditional = await ask(http, caching, "t", f"/r/{name}", **condition)
    assert served(first, conditional) == ["MISS", "BYPASS"]
    ((header, value),) = condition.items()
    assert conditional.json()["headers"][header.lower()] == value


# --- invalidation ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_a_successful_unsafe_request_invalidates_its_target(
    http: aiohttp.ClientSession, caching: Caching, name: str, method: str
) -> None:
    path = f"/r/{name}"
    await ask(http, caching, "t", path)
    assert (await ask(http, caching, "t", path)).cache == "HIT"
    write = await ask(http, caching, "t", path, method=method)
    assert (write.status, write.cache) == (200, "BYPASS")
    after = await ask(http, caching, "t", path)
    assert after.cache == "MISS" and after.json()["n"] == 3


async def test_location_and_content_location_on_the_same_authority_are_invalidated(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    for other in ("a", "b", "c"):
        await ask(http, caching, "t", f"/r/{name}-{other}")
    host = caching.server.url.removeprefix("http://")
    caching.origin.respond(
        f"/r/{name}",
        f"Location: /t/r/{name}-a",
        f"Content-Location: http://{host}/t/r/{name}-b",
    )
    await ask(http, caching, "t", f"/r/{name}", method="POST")
    after = [await ask(http, caching, "t", f"/r/{name}-{other}") for other in ("a", "b", "c")]
    assert served(*after) == ["MISS", "MISS", "HIT"]


async def test_another_authority_in_location_is_not_invalidated(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    await ask(http, caching, "t", f"/r/{name}-a")
    caching.origin.respond(f"/r/{name}", f"Location: http://elsewhere.example/t/r/{name}-a")
    await ask(http, caching, "t", f"/r/{name}", method="POST")
    assert (await ask(http, caching, "t", f"/r/{name}-a")).cache == "HIT"


async def test_a_failed_unsafe_request_invalidates_nothing(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    path = f"/r/{name}"
    await ask(http, caching, "t", path)
    for status, method in ((500, "POST"), (409, "PUT"), (404, "DELETE")):
        caching.origin.answer(status, path)
        try:
            failed = await ask(http, caching, "t", path, method=method)
        finally:
            caching.origin.answer(200, path)
        assert failed.status == status
        assert (await ask(http, caching, "t", path)).cache == "HIT"


async def test_a_write_through_another_route_invalidates_the_cached_one(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    # POST /t/w/<name> is the write-only route /t/w; GET /t/w/<name> is cached by /t.
    await ask(http, caching, "t", f"/w/{name}")
    assert (await ask(http, caching, "t", f"/w/{name}")).cache == "HIT"
    write = await ask(http, caching, "t", f"/w/{name}", method="POST")
    assert write.status == 200 and write.cache is None  # not a cached route
    assert (await ask(http, caching, "t", f"/w/{name}")).cache == "MISS"


# --- stale when it helps ---------------------------------------------------------------------


async def test_an_answer_asked_before_a_write_is_not_stored_after_it(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    # The GET reaches the upstream, a write to the same resource succeeds, then the GET's
    # answer (from before the write) comes back: it is relayed, not stored.
    origin = caching.origin
    origin.respond(f"/r/{name}-w", f"Location: /t/hold/{name}")
    with held(caching):
        pending = asyncio.ensure_future(ask(http, caching, "t", f"/hold/{name}"))
        await eventually(lambda: origin.calls(f"/hold/{name}") == 1)
        write = await ask(http, caching, "t", f"/r/{name}-w", method="POST")
        assert write.status == 200
    before = await pending
    after = await ask(http, caching, "t", f"/hold/{name}")
    assert served(before, after) == ["MISS", "MISS"]
    assert after.json()["n"] == 2
    assert (await ask(http, caching, "t", f"/hold/{name}")).cache == "HIT"


async def test_stale_while_revalidate_serves_stale_and_refreshes_in_the_background(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    origin = caching.origin
    origin.respond(f"/r/{name}", "Cache-Control: max-age=1, stale-while-revalidate=60")
    path = f"/r/{name}"
    first = await ask(http, caching, "d", path)

    async def stale() -> Answer | None:
        answer = await ask(http, caching, "d", path)
        return answer if answer.cache == "STALE" else None

    # Fresh for a second; then the next request is answered stale at once...
    served_stale = await eventually(stale, timeout=5, interval=0.1, what="a stale answer")
    assert served_stale.body == first.body
    # ... while one request in the background brings the entry up to date.
    await eventually(lambda: origin.calls(path) == 2, what="the background refresh")
    refreshed = await ask(http, caching, "d", path)
    assert refreshed.cache in ("HIT", "STALE")
    assert refreshed.json()["n"] == 2


async def test_background_refreshes_are_bounded(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    # 40 stale entries asked at once while the upstream holds every answer: each is served
    # stale, and only REFRESHES of them are refreshed (the rest on a later request).
    from spork_cli.middleware.cache import REFRESHES

    origin = caching.origin
    paths = [f"/hold/{name}-{n}" for n in range(40)]
    for path in paths:
        origin.respond(path, "Cache-Control: max-age=0")  # the route's swr (60 s) applies
        assert (await ask(http, caching, "v", path)).cache == "MISS"
    with held(caching):
        stale = await asyncio.gather(*(ask(http, caching, "v", path) for path in paths))
        assert served(*stale) == ["STALE"] * 40

        def refreshes() -> int:
            return sum(origin.calls(path) for path in paths) - 40

        await eventually(lambda: refreshes() >= REFRESHES, what="the refreshes upstream")
    # A request sent after them all has its answer: any other refresh would be in by now.
    assert (await ask(http, caching, "v", f"/r/{name}")).status == 200
    assert refreshes() == REFRESHES


@pytest.mark.observes("routes.cache.stale_while_revalidate")
async def test_the_routes_stale_while_revalidate_for_responses_without_their_own(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    origin = caching.origin
    origin.respond(f"/r/{name}", "Cache-Control: max-age=1")
    path = f"/r/{name}"
    await ask(http, caching, "v", path)
    await ask(http, caching, "d", path)

    async def stale_on_v() -> bool:
        return (await ask(http, caching, "v", path)).cache == "STALE"

    await eventually(stale_on_v, timeout=5, interval=0.1, what="a stale answer on /v")
    # /d has no such setting: the same stale response is fetched again.
    assert (await ask(http, caching, "d", path)).cache == "MISS"


async def test_stale_if_error_serves_the_entry_when_the_upstream_fails(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    origin = caching.origin
    path = f"/r/{name}"
    origin.respond(path, "Cache-Control: max-age=0, stale-if-error=60", 'ETag: "x"')
    first = await ask(http, caching, "d", path)
    origin.answer(503, path)
    try:
        during = await ask(http, caching, "d", path)
    finally:
        origin.answer(200, path)
    assert (during.status, during.cache) == (200, "STALE")
    assert during.body == first.body


@pytest.mark.observes("routes.cache.stale_if_error")
async def test_the_routes_stale_if_error_and_must_revalidate(
    http: aiohttp.ClientSession, caching: Caching, name: str
) -> None:
    origin = caching.origin
    origin.respond(f"/r/{name}", "Cache-Control: max-age=0", 'ETag: "x"')
    origin.respond(f"/r/{name}-m", "Cache-Control: max-age=0, must-revalidate", 'ETag: "x"')
    for path in (f"/r/{name}", f"/r/{name}-m"):
        await ask(http, caching, "s", path)
        origin.answer(502, path)
    try:
        kept = await ask(http, caching, "s", f"/r/{name}")
        must = await ask(http, caching, "s", f"/r/{name}-m")
        plain = await ask(http, caching, "d", f"/r/{name}")  # /d: no stale_if_error
    finally:
        origin.answer(200, f"/r/{name}")
        origin.answer(200, f"/r/{name}-m")
    assert (kept.status, kept.cache) == (200, "STALE")
    assert (must.status, must.cache) == (502, "MISS")  # must-revalidate: never stale
    assert plain.status == 502


# --- counting --------------------------------------------------------------------------------


async def test_cache_stats_count_what_clients_were_answered(
    http: aiohttp.ClientSession, caching: Caching, name: str, run_spork: SporkRunner
) -> None:
    import json

    async def row() -> dict[str, Any]:
        result = await asyncio.to_thread(
            run_spork, "-c", str(caching.config), "cache", "stats", "m", "--json"
        )
        assert result.returncode == 0, result.stderr
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows[0]

    before = await row()
    origin = caching.origin
    origin.respond(f"/r/{name}", 'ETag: "v"', "Cache-Control: max-age=0")
    seen: Counter[str | None] = Counter()
    for _ in range(3):  # a miss, then two revalidations
        seen[(await ask(http, caching, "m", f"/r/{name}?validate=1")).cache] += 1
    origin.respond(f"/r/{name}-f", "Cache-Control: max-age=60")
    for _ in range(4):  # a miss, then three hits
        seen[(await ask(http, caching, "m", f"/r/{name}-f")).cache] += 1
    seen[(await ask(http, caching, "m", f"/r/{name}-f", Cookie="a=1")).cache] += 1
    seen[(await ask(http, caching, "m", f"/r/{name}-f", method="POST")).cache] += 1
    assert seen == {"MISS": 2, "REVALIDATED": 2, "HIT": 3, "BYPASS": 2}
    wanted = {
        "misses": 2,
        "revalidated": 2,
        "hits": 3,
        "bypasses": 2,
        "stores": 4,  # the two misses and the two 304s
        "invalidations": 1,
    }

    async def counted() -> bool:
        now = await row()
        return all(now[field] - before[field] == n for field, n in wanted.items())

    await eventually(counted, timeout=10, interval=0.2, what="the counters")


# --- across instances and against a failing service ------------------------------------------


async def test_an_invalidation_reaches_every_instance_sharing_redis(
    spork_server: StartSpork, redis_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    servers = []
    for n in range(2):
        port, admin_port = free_ports(2)
        state = f'[state]\nbackend = "redis"\nurl = "{redis_url}"\n'
        config = tmp_path / f"gateway-{n}.toml"
        config.write_text(config_text(port, admin_port, upstream.url, state))
        servers.append(await spork_server(config, port, admin_port))
    one, two = servers
    # As behind a load balancer: one name for both instances (the Host is in the key).
    host = {"Host": "api.example"}
    async with aiohttp.ClientSession() as http:
        first = await fetch(http, f"{one.url}/t/r/shared", headers=host)
        shared = await fetch(http, f"{two.url}/t/r/shared", headers=host)
        assert served(first, shared) == ["MISS", "HIT"]
        await fetch(http, f"{one.url}/t/r/shared", "POST", headers=host)
        after = await fetch(http, f"{two.url}/t/r/shared", headers=host)
    assert after.cache == "MISS" and after.json()["n"] == 3


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_stale_if_error_when_the_upstream_is_gone_or_its_breaker_open(
    spork_server: StartSpork,
    redis_server: Any,
    upstream: Upstream,
    tmp_path: Path,
    backend: str,
) -> None:
    port, admin_port = free_ports(2)
    state = (
        f'[state]\nbackend = "redis"\nurl = "{redis_server.url}"\nprefix = "{uuid.uuid4().hex}"\n'
    )
    text = config_text(port, admin_port, upstream.url, state if backend == "redis" else "")
    text = text.replace(
        "retries = { attempts = 0 }\n",
        'retries = { attempts = 0 }\nbreaker = { failures = 2, cooldown = "60s" }\n',
    )
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    server = await spork_server(config, port, admin_port)
    upstream.respond("/r/kept", "Cache-Control: max-age=0, stale-if-error=300", 'ETag: "k"')
    async with aiohttp.ClientSession() as http:
        first = await fetch(http, f"{server.url}/d/r/kept")
        await upstream.stop()
        gone = [await fetch(http, f"{server.url}/d/r/kept") for _ in range(3)]
        fresh = await fetch(http, f"{server.url}/d/r/never-stored")
    assert first.cache == "MISS"
    # Unreachable twice (502 each time the entry stands in), then the breaker is open (503).
    assert [(a.status, a.cache) for a in gone] == [(200, "STALE")] * 3
    assert all(a.body == first.body for a in gone)
    assert fresh.status == 503  # nothing stored: the breaker's own answer


async def test_an_invalidation_the_store_could_not_take_is_applied_once_it_can(
    spork_server: StartSpork, redis_server: Any, upstream: Upstream, tmp_path: Path
) -> None:
    # The link to Redis fails while a write succeeds; Redis keeps the old entry. Once the
    # link is back, that entry is never served: the marker is set as soon as it can be, and
    # until then this instance does not answer that URL from the cache.
    if not redis_server.running:
        redis_server.start()
    relay = Relay(redis_server.host, redis_server.port)
    await relay.start()
    try:
        port, admin_port = free_ports(2)
        state = (
            f'[state]\nbackend = "redis"\nurl = "redis://{relay.address}"\n'
            f'prefix = "{uuid.uuid4().hex}"\n'
        )
        config = tmp_path / "gateway.toml"
        config.write_text(config_text(port, admin_port, upstream.url, state))
        server = await spork_server(config, port, admin_port)
        url = f"{server.url}/t/r/kept"
        async with aiohttp.ClientSession() as http:
            stored = [await fetch(http, url) for _ in range(2)]
            assert served(*stored) == ["MISS", "HIT"]
            await relay.cut()
            write = await fetch(http, url, "POST")
            assert write.status == 200
            await relay.mend()
            answers: list[Answer] = []

            async def probe() -> bool:
                answers.append(await fetch(http, url))
                return answers[-1].cache == "MISS"

            await eventually(probe, interval=0.1, what="a miss once the marker is set")
        assert "HIT" not in served(*answers)
        assert answers[-1].json()["n"] > stored[0].json()["n"] + 1
    finally:
        await relay.close()


async def test_a_reload_that_lowers_the_ttl_applies_to_what_is_stored(
    spork_server: StartSpork, upstream: Upstream, tmp_path: Path
) -> None:
    port, admin_port = free_ports(2)
    config = tmp_path / "gateway.toml"
    text = config_text(port, admin_port, upstream.url, "")
    config.write_text(text)
    server = await spork_server(config, port, admin_port)
    url = f"{server.url}/t/r/kept"
    async with aiohttp.ClientSession() as http:
        stored = [await fetch(http, url) for _ in range(2)]
        assert served(*stored) == ["MISS", "HIT"]  # fresh for 30 s (default_ttl)
        since = time.time()
        route_t = 'path = "/t"\nname = "t"'
        lowered = text.replace(
            f'{route_t}\nservice = "origin"\nstrip_prefix = true\nauth = "none"\n'
            'cache = { default_ttl = "30s" }',
            f'{route_t}\nservice = "origin"\nstrip_prefix = true\nauth = "none"\n'
            'cache = { ttl = "1s", default_ttl = "1s" }',
        )
        assert lowered != text
        replace_file(config, lowered)
        assert (await server.reloaded_since(since))["result"] == "applied"

        async def refetched() -> bool:
            return (await fetch(http, url)).cache == "MISS"

        # Within the new ttl of its storing, not the old one's 30 s.
        await eventually(refetched, timeout=5.0, interval=0.2, what="the entry stale at 1 s")
