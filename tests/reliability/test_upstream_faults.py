"""Upstreams that die, stall, answer garbage or hang up mid-response, under load against a
running `spork serve`: retries, ejection, timeouts and breakers behave as configured, and the
gateway stays healthy (admin /health answers, later requests are fine, no traceback)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson

from tests.conftest import StartSpork
from tests.reliability.harness import Figures, Load, Sample, p99_ms, serve_on_free_ports
from tests.support import (
    LOOPBACK,
    SporkServer,
    Upstream,
    UpstreamFactory,
    eventually,
    gateway_toml,
)

SLACK = 0.4  # scheduling on a busy 2-core machine; far below any hang
PROBLEM = "application/problem+json"


async def start_gateway(
    tmp_path: Path, spork_server: StartSpork, body: str
) -> tuple[SporkServer, str]:
    server: SporkServer = await serve_on_free_ports(
        spork_server,
        tmp_path / "gateway.toml",
        lambda port, admin: gateway_toml(port, admin, {}, {}, extra=body),
    )
    return server, server.url


async def assert_still_serving(server: SporkServer, healthy_url: str) -> None:
    """Admin health answers and a request to a healthy upstream is fine."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(f"{server.admin_url}/health") as health:
            assert health.status == 200
        async with http.get(healthy_url) as response:
            assert response.status == 200
    assert server.running


async def assert_still_healthy(server: SporkServer, healthy_url: str) -> None:
    """Still serving, and nothing in the output of a traceback."""
    await assert_still_serving(server, healthy_url)
    assert "Traceback" not in server.output()


async def services(server: SporkServer) -> dict[str, dict[str, object]]:
    """`/health/services` as {endpoint url: row}."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
        http.get(f"{server.admin_url}/health/services") as response,
    ):
        report = orjson.loads(await response.read())
    return {e["url"]: e for s in report["services"] for e in s["endpoints"]}


async def summarize(response: aiohttp.ClientResponse) -> tuple[int, bytes]:
    """Status and what the body showed: its length, whether it was cut short, the problem
    type of a problem+json answer, and which upstream answered."""
    cut = None
    try:
        body = await response.read()
    except aiohttp.ClientPayloadError as exc:
        body, cut = b"", type(exc).__name__
    problem = None
    if response.content_type == PROBLEM and not cut:
        problem = str(orjson.loads(body)["type"]).rpartition(":")[2]
    summary = {
        "path": response.url.path,
        "length": len(body),
        "promised": response.content_length,
        "cut": cut,
        "problem": problem,
        "upstream": response.headers.get("X-Upstream"),
        "retry_after": response.headers.get("Retry-After"),
    }
    return response.status, orjson.dumps(summary)


def fetching(url_of: Callable[[int], str]) -> Callable[..., object]:
    async def request(session: aiohttp.ClientSession, index: int) -> tuple[int, bytes]:
        async with session.get(url_of(index)) as response:
            return await summarize(response)

    return request


def info(sample: Sample) -> dict[str, object]:
    if sample.status is None:
        return {"error": sample.error}
    summary: dict[str, object] = orjson.loads(sample.body)
    return summary


def is_problem(sample: Sample, status: int, slug: str) -> bool:
    return sample.status == status and info(sample).get("problem") == slug


# --- raw upstreams that break HTTP -------------------------------------------------------------


class RawUpstream:
    """A TCP server that reads one request head per connection, records it, writes whatever
    ``reply(path)`` gives (valid or not) and closes the connection. ``delays`` holds waits
    before answering, one for each of the next requests."""

    def __init__(self, reply: Callable[[str], bytes]) -> None:
        self.reply = reply
        self.hits: list[tuple[float, str]] = []  # (monotonic time, path) of every request
        self.delays: list[float] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._server.wait_closed()

    def hits_between(self, start: float, end: float) -> int:
        return sum(1 for at, _ in self.hits if start < at <= end)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode("latin-1")
            self.hits.append((time.monotonic(), path))
            if self.delays:
                await asyncio.sleep(self.delays.pop(0))
            writer.write(self.reply(path))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


OK_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
    b"Connection: close\r\n\r\nok"
)
GARBAGE = [
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"\x00\xff\xfe\x07 not a response \x1b[0m\r\n\r\n",
    b"HTTP/1.1 2x0 Maybe\r\n\r\n",
    b"hello there, this is no HTTP",  # and then the connection closes
]


# --- (a) an endpoint killed and restarted ------------------------------------------------------


async def test_killed_endpoint_is_retried_around_ejected_and_back_after_restart(
    tmp_path: Path,
    spork_server: StartSpork,
    upstream_factory: UpstreamFactory,
    figures: Figures,
) -> None:
    a, b = await upstream_factory.many("a", "b")
    server, url = await start_gateway(
        tmp_path,
        spork_server,
        f"""
[[services]]
name = "svc"
endpoints = ["{a.url}", "{b.url}"]
retries = {{ attempts = 2, backoff = "1ms", max_backoff = "5ms" }}
passive = {{ failures = 3, cooldown = "1h" }}
health = {{ interval = "100ms", timeout = "500ms", healthy_threshold = 1, unhealthy_threshold = 2 }}

[[routes]]
path = "/"
service = "svc"
""",
    )

    def served(upstream_name: str) -> int:
        up = a if upstream_name == "a" else b
        return sum(1 for r in up.requests if r.path != "/health")

    load = Load(
        clients=4,
        limit=20_000,
        deadline=20.0,
        keep_bodies=True,
        request=fetching(lambda i: f"{url}/x"),
    )
    async with load:
        await load.answered(100)
        assert served("a") > 0 and served("b") > 0
        killed = time.monotonic()
        await a.stop()
        stopped = time.monotonic()
        # Passive ejection: consecutive connect failures on real traffic take it out (the
        # active checks would too, later). Each failure is retried on the other endpoint
        # within the retry budget (a fifth of recent requests, at least 3 per 10 s), which
        # the few failures before the ejection stay well inside: no client sees one.
        await eventually(
            lambda: _ejected(server, a.url), timeout=5.0, what="the dead endpoint ejected"
        )
        ejected_after = time.monotonic() - killed
        await load.more(200)
        before = served("a")
        # The passive cooldown is an hour: only a passing health check can bring it back.
        restarted = time.monotonic()
        await a.start()
        await eventually(
            lambda: served("a") > before, timeout=5.0, what="traffic to the restarted endpoint"
        )
        back = time.monotonic() - restarted
        await load.more(100)

    failed = load.failed(lambda s: s.status == 200 and info(s).get("upstream") in ("a", "b"))
    during = [s for s in load.since(stopped) if s.ended < restarted]
    figures.record(
        "upstream endpoint killed (1 of 2)",
        load.samples,
        len(failed),
        recovery_s=back,
        note=f"ejected after {ejected_after:.2f}s; retries attempts=2",
    )
    assert not failed, [info(s) for s in failed[:5]]
    assert len(during) >= 200 and all(info(s)["upstream"] == "b" for s in during)
    assert back < 1.0, f"the restarted endpoint got traffic after {back:.2f}s"
    rows = await services(server)
    assert rows[a.url]["available"] is True and rows[a.url]["ejected"] is False
    await assert_still_healthy(server, f"{url}/after")


async def _ejected(server: SporkServer, endpoint: str) -> bool:
    return (await services(server))[endpoint]["ejected"] is True


# --- (b) a slow endpoint -----------------------------------------------------------------------

ROUTE_TIMEOUT = 0.3


async def test_slow_endpoint_gives_504_within_the_timeout_and_others_are_unaffected(
    tmp_path: Path,
    spork_server: StartSpork,
    upstream_factory: UpstreamFactory,
    figures: Figures,
) -> None:
    slow, fast = await upstream_factory.many("slow", "fast")
    server, url = await start_gateway(
        tmp_path,
        spork_server,
        f"""
[[services]]
name = "slow"
endpoints = ["{slow.url}"]

[[services]]
name = "fast"
endpoints = ["{fast.url}"]

[[routes]]
path = "/slow"
service = "slow"
timeout = "{int(ROUTE_TIMEOUT * 1000)}ms"

[[routes]]
path = "/fast"
service = "fast"
""",
    )
    stalled = Load(
        clients=6,
        limit=5_000,
        deadline=20.0,
        keep_bodies=True,
        request=fetching(lambda i: url + "/slow?ms=3000"),
    )
    # Quick requests to another service, and to the same endpoint through the same route.
    quick_paths = ("/fast", "/slow/echo")
    quick = Load(
        clients=2,
        limit=20_000,
        deadline=20.0,
        keep_bodies=True,
        request=fetching(lambda i: url + quick_paths[i % 2]),
    )
    async with stalled, quick:
        await stalled.answered(24)
        await quick.answered(100)

    def timed_out(s: Sample) -> bool:
        return is_problem(s, 504, "upstream-timeout") and s.seconds <= ROUTE_TIMEOUT + SLACK

    slow_failed = stalled.failed(timed_out)

    def answered(s: Sample) -> bool:
        seen = info(s)
        expected = "fast" if seen.get("path") == "/fast" else "slow"
        return s.status == 200 and seen["upstream"] == expected

    quick_failed = quick.failed(answered)
    figures.record(
        "upstream slow beyond the route timeout",
        stalled.samples,
        len(slow_failed),
        note=f"504 after {ROUTE_TIMEOUT * 1000:g} ms route timeout",
    )
    figures.record(
        "upstream slow: quick requests beside it",
        quick.samples,
        len(quick_failed),
        note="other service, and the same endpoint, while the slow requests timed out",
    )
    assert not slow_failed, [(s.seconds, info(s)) for s in slow_failed[:5]]
    # The gateway gave each one the whole timeout: a 504, not an early error.
    assert min(s.seconds for s in stalled.samples) >= ROUTE_TIMEOUT * 0.9
    assert not quick_failed, [info(s) for s in quick_failed[:5]]
    assert p99_ms(quick.samples) < ROUTE_TIMEOUT * 1000, "fast requests waited on slow ones"
    await assert_still_healthy(server, f"{url}/fast")


# --- (c) garbage: 502, the breaker opens, probes, closes -----------------------------------------

FAILURES = 5
COOLDOWN = 1.0
FAST_503 = 0.1  # p99 of answers the open breaker gives without calling the upstream
PROBE_DELAY = 0.15  # the probe is held this long: no other request may reach the upstream


async def test_garbage_is_502_then_the_breaker_opens_and_closes_after_a_probe(
    tmp_path: Path,
    spork_server: StartSpork,
    upstream_factory: UpstreamFactory,
    figures: Figures,
) -> None:
    healthy = await upstream_factory("healthy")
    garbage = True
    sent = 0

    def reply(path: str) -> bytes:
        nonlocal sent
        sent += 1
        return GARBAGE[sent % len(GARBAGE)] if garbage else OK_REPLY

    async with RawUpstream(reply) as raw:
        server, url = await start_gateway(
            tmp_path,
            spork_server,
            f"""
[[services]]
name = "raw"
endpoints = ["{raw.url}"]
retries = {{ attempts = 0 }}
breaker = {{ failures = {FAILURES}, cooldown = "{COOLDOWN:g}s", half_open_probes = 1 }}

[[services]]
name = "healthy"
endpoints = ["{healthy.url}"]

[[routes]]
path = "/"
service = "raw"

[[routes]]
path = "/healthy"
service = "healthy"
""",
        )
        clients = 3
        load = Load(
            clients=clients,
            limit=20_000,
            deadline=20.0,
            keep_bodies=True,
            request=fetching(lambda i: f"{url}/g"),
        )
        async with load:

            def first(check: Callable[[Sample], bool]) -> Sample | None:
                return next((s for s in load.samples if check(s)), None)

            opened = await eventually(
                lambda: first(lambda s: s.status == 503), timeout=5.0, what="the breaker open"
            )
            hits_to_open = raw.hits_between(0.0, opened.ended)
            await load.more(100)
            state = await _breaker(server, "raw")
            switched = time.monotonic()
            # No probe before the cooldown counted from the failure that opened the breaker.
            cooldown_over = raw.hits[FAILURES - 1][0] + COOLDOWN
            stragglers = raw.hits_between(opened.ended, min(switched, cooldown_over))
            garbage = False
            raw.delays = [PROBE_DELAY]
            closed = await eventually(
                lambda: first(lambda s: s.status == 200),
                timeout=COOLDOWN * 2 + 3,
                what="the breaker closed",
            )
            recovered = closed.ended - switched
            probe_at = next(at for at, _ in raw.hits if at > switched)
            await load.more(100)

    def as_configured(s: Sample) -> bool:
        if s.ended < opened.ended:
            return is_problem(s, 502, "upstream-error")
        if s.started >= closed.ended:
            return s.status == 200
        # Open or half-open: 503 at once; a probe may have met garbage before the switch, and
        # a request decided once the probe had closed the breaker passes.
        return (
            (is_problem(s, 503, "breaker-open") and info(s)["retry_after"] is not None)
            or (s.started < switched and is_problem(s, 502, "upstream-error"))
            or s.status == 200
        )

    failed = load.failed(as_configured)
    denied = [s for s in load.samples if s.status == 503]
    figures.record(
        "upstream garbage, breaker",
        load.samples,
        len(failed),
        recovery_s=recovered,
        note=(
            f"opened after {hits_to_open} upstream calls (failures={FAILURES}); "
            f"{len(denied)} answered 503; closed by a probe {recovered:.2f}s after the upstream "
            f"was healthy (cooldown {COOLDOWN:g}s, probe held {PROBE_DELAY:g}s)"
        ),
    )
    assert not failed, [(s.seconds, info(s)) for s in failed[:5]]
    # The breaker opens on the FAILURES-th failure; only requests already past it then (one
    # per other client at most) still reach the upstream, until the cooldown is over.
    assert hits_to_open >= FAILURES
    assert hits_to_open + stragglers <= FAILURES + clients - 1
    assert state == "open"
    assert p99_ms(denied) < FAST_503 * 1000
    # Half-open: one probe goes through; while it is out, others are denied, not let through.
    probing = [s for s in load.samples if probe_at < s.started and s.ended < probe_at + PROBE_DELAY]
    assert raw.hits_between(probe_at, probe_at + PROBE_DELAY) == 0
    assert probing and all(is_problem(s, 503, "breaker-open") for s in probing)
    # Its success closes the breaker.
    assert recovered <= COOLDOWN + PROBE_DELAY + SLACK
    assert await _breaker(server, "raw") == "closed"
    await assert_still_healthy(server, f"{url}/healthy")


async def _breaker(server: SporkServer, service: str) -> str:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
        http.get(f"{server.admin_url}/api/breakers") as response,
    ):
        rows = orjson.loads(await response.read())["breakers"]
    return str(next(r for r in rows if r["service"] == service)["state"])


# --- (d) the upstream hangs up mid-response ------------------------------------------------------

PROMISED = 1_000_000  # streamed: above what the gateway reads whole before answering
SENT = 300_000


def cut_reply(path: str) -> bytes:
    if path.endswith("/short"):  # small: read whole by the gateway before it answers
        return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"s" * 100
    if path.endswith("/large"):
        return f"HTTP/1.1 200 OK\r\nContent-Length: {PROMISED}\r\n\r\n".encode() + b"l" * SENT
    if path.endswith("/chunked"):
        chunk = b"c" * 4096
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"1000\r\n" + chunk + b"\r\n") * 20
            + b"1000\r\n"
            + chunk[:100]
        )
    return OK_REPLY


VARIANTS = ("short", "large", "chunked", "ok")
NO_HANG = 2.0  # the upstream closes at once: any answer slower than this is stuck somewhere


async def cutting_gateway(
    tmp_path: Path, spork_server: StartSpork, raw: RawUpstream, healthy: Upstream
) -> tuple[SporkServer, str]:
    return await start_gateway(
        tmp_path,
        spork_server,
        f"""
[[services]]
name = "cut"
endpoints = ["{raw.url}"]
timeout = "2s"

[[services]]
name = "healthy"
endpoints = ["{healthy.url}"]

[[routes]]
path = "/cut"
service = "cut"

[[routes]]
path = "/ok"
service = "healthy"
""",
    )


async def test_upstream_closing_mid_response_fails_the_answer_never_hangs(
    tmp_path: Path,
    spork_server: StartSpork,
    upstream_factory: UpstreamFactory,
    figures: Figures,
) -> None:
    healthy = await upstream_factory("healthy")
    async with RawUpstream(cut_reply) as raw:
        server, url = await cutting_gateway(tmp_path, spork_server, raw, healthy)

        def path(index: int) -> str:
            variant = VARIANTS[index % len(VARIANTS)]
            return f"{url}/ok" if variant == "ok" else f"{url}/cut/{variant}"

        load = Load(
            clients=4,
            limit=400,
            deadline=20.0,
            timeout=5.0,
            keep_bodies=True,
            request=fetching(path),
        )
        async with load:
            await load.answered(400)

    def as_designed(s: Sample) -> bool:
        if s.status is None or s.seconds > NO_HANG:
            return False
        seen = info(s)
        variant = str(seen["path"]).rpartition("/")[2]
        if variant == "short":
            # Cut before the gateway answered: it still can, with a 502.
            return is_problem(s, 502, "upstream-error")
        if variant == "large":
            # The head went out already: the client's response is cut short, never complete.
            return s.status == 200 and seen["cut"] is not None and seen["promised"] == PROMISED
        if variant == "chunked":
            return s.status == 200 and seen["cut"] is not None
        return s.status == 200 and seen["length"] > 0 and seen["cut"] is None

    failed = load.failed(as_designed)
    figures.record(
        "upstream closes mid-response",
        load.samples,
        len(failed),
        note="short body: 502; streamed (length, chunked): cut; 1 in 4 to a healthy route",
    )
    assert not failed, [(s.seconds, info(s)) for s in failed[:8]]
    variants = {str(info(s)["path"]).rpartition("/")[2] for s in load.samples}
    assert variants == set(VARIANTS)
    await assert_still_serving(server, f"{url}/ok")


async def test_upstream_closing_mid_response_logs_a_warning_and_the_request_not_a_traceback(
    tmp_path: Path, spork_server: StartSpork, upstream_factory: UpstreamFactory
) -> None:
    healthy = await upstream_factory("healthy")
    async with (
        RawUpstream(cut_reply) as raw,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=NO_HANG)) as http,
    ):
        server, url = await cutting_gateway(tmp_path, spork_server, raw, healthy)
        for variant in ("large", "chunked"):
            async with http.get(f"{url}/cut/{variant}") as response:
                status, summary = await summarize(response)
            assert status == 200 and orjson.loads(summary)["cut"] is not None
        await eventually(
            lambda: len(server.events("upstream broke off mid-response")) == 2,
            what="a warning for each response cut off",
        )

        # Each cut request still has its access-log line, with the status that went out.
        def cut_lines() -> dict[str, int]:
            events = server.events("request")
            return {e["path"]: e["status"] for e in events if str(e["path"]).startswith("/cut/")}

        await eventually(lambda: len(cut_lines()) == 2, what="the cut requests' access-log lines")
        assert cut_lines() == {"/cut/large": 200, "/cut/chunked": 200}
        await assert_still_healthy(server, f"{url}/ok")
