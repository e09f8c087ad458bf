"""The dashboard: the page as served, and the page in a real browser against `spork serve`.

The browser test drives headless Chromium over the DevTools Protocol (`tests.admin.browser`),
sends traffic through the gateway (a 5xx among it) and waits, polling the page's DOM, until
the page shows what `/api/routes`, `/api/services` and `/metrics` say.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest

from tests.admin.browser import Chromium
from tests.admin.conftest import Admin, StartAdmin
from tests.conftest import StartSpork
from tests.support import LOOPBACK, SporkServer, Upstream, eventually, free_port, free_ports

TOKEN = "dashboard-admin-token-5f2a9c"
_T = TypeVar("_T")

# What the page shows, read from its DOM in one evaluation.
READ_PAGE = """(() => {
  if (!document.body || !document.getElementById("token-form")) {
    // Still navigating: nothing shown yet (the probes keep polling).
    return { polls: 0, status: "", rates: { requests: null, errors: null },
             totals: { requests: null, errors: null }, routes: [], endpoints: [],
             breakers: {}, reloads: [], tokenForm: false, hash: location.hash, html: "" };
  }
  const num = (id) => {
    const v = document.getElementById(id).dataset.value;
    return v === undefined || v === "" ? null : Number(v);
  };
  const rows = (selector) => [...document.querySelectorAll(selector)];
  return {
    polls: Number(document.body.dataset.polls || 0),
    status: document.getElementById("status").textContent,
    rates: { requests: num("rate-requests"), errors: num("rate-errors") },
    totals: { requests: num("total-requests"), errors: num("total-errors") },
    routes: rows("#routes tbody tr").map((tr) => [...tr.cells].map((td) => td.textContent)),
    endpoints: rows("#services tbody tr").map((tr) => ({
      service: tr.dataset.service,
      url: tr.dataset.endpoint,
      state: tr.dataset.state,
      error: tr.querySelector("td.error").textContent,
    })),
    breakers: Object.fromEntries(
      rows("#services td.breaker").map((td) => [td.closest("tr").dataset.service,
                                                 td.dataset.breaker])),
    reloads: rows("#reloads ol > li").map((li) => ({
      result: li.dataset.result, text: li.textContent })),
    tokenForm: !document.getElementById("token-form").hidden,
    hash: location.hash,
    html: document.documentElement.outerHTML,
  };
})()"""


# --- the page as served ------------------------------------------------------------------------


async def test_the_page_is_self_contained_and_carries_no_data(
    start_admin: StartAdmin, upstream: Upstream
) -> None:
    toml = f'[[services]]\nname = "u"\nendpoints = ["{upstream.url}"]\n'
    admin: Admin = await start_admin(toml + '[[routes]]\npath = "/"\nservice = "u"\n', TOKEN)

    async with admin.admin.get("/") as response:
        page = await response.text()
        policy = response.headers["Content-Security-Policy"]
    assets = {}
    for name in ("dashboard.js", "dashboard.css"):
        async with admin.admin.get(f"/dashboard/{name}") as asset:
            assert asset.status == 200
            assets[name] = await asset.text()
    async with admin.admin.get("/dashboard/../admin.py") as escape:
        assert escape.status == 404

    assert TOKEN not in page
    assert upstream.url not in page  # data comes from the API, never in the HTML
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    for text in (page, *assets.values()):
        # Every reference is to this listener: no CDN, nothing fetched from elsewhere.
        assert not re.search(r"""(src|href)=["'](https?:)?//""", text)
        assert "https://" not in text and "http://" not in text


# --- in a browser ------------------------------------------------------------------------------


def dashboard_config(port: int, admin_port: int, upstream: Upstream, dead: str) -> str:
    return f"""
[server]
host = "{LOOPBACK}"
port = {port}

[admin]
host = "{LOOPBACK}"
port = {admin_port}
token = "{TOKEN}"

[[services]]
name = "users"
endpoints = ["{upstream.url}"]

[[services]]
name = "flaky"
endpoints = ["{upstream.url}"]
breaker = {{ failures = 100000 }}

[[services]]
name = "ghost"
endpoints = ["{upstream.url}", "{dead}"]
health = {{ path = "/health", interval = "100ms", healthy_threshold = 1, unhealthy_threshold = 1 }}

[[routes]]
path = "/api"
name = "api"
service = "users"

[[routes]]
path = "/status"
service = "flaky"

[[routes]]
path = "/ghost"
service = "ghost"
"""


@contextlib.asynccontextmanager
async def traffic(http: aiohttp.ClientSession, server: SporkServer) -> AsyncIterator[list[int]]:
    """Requests through the gateway until the block ends: 200s, and 500s from the upstream."""
    statuses: list[int] = []

    async def send() -> None:
        while True:
            for path in ("/api/x", "/status/500", "/ghost/y"):
                async with http.get(f"{server.url}{path}") as response:
                    await response.read()
                    statuses.append(response.status)
            await asyncio.sleep(0.01)  # pacing, so the browser keeps a share of the CPU

    task = asyncio.create_task(send())
    try:
        yield statuses
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def scrape(http: aiohttp.ClientSession, server: SporkServer) -> dict[str, float]:
    """Sums of spork_requests_total from /metrics: all, the 5xx part, and per route."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(f"{server.admin_url}/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        text = await response.text()
    sums: dict[str, float] = {"total": 0.0, "5xx": 0.0}
    pattern = re.compile(r"^spork_requests_total\{(.*)\} (\S+)$", re.M)
    for labels, value in pattern.findall(text):
        route = re.search(r'route="([^"]*)"', labels)
        status = re.search(r'status="([^"]*)"', labels)
        assert route is not None and status is not None
        sums["total"] += float(value)
        key = f"route:{route.group(1)}"
        sums[key] = sums.get(key, 0.0) + float(value)
        if status.group(1).startswith("5"):
            sums["5xx"] += float(value)
            sums[f"5xx:{route.group(1)}"] = sums.get(f"5xx:{route.group(1)}", 0.0) + float(value)
    return sums


async def api(http: aiohttp.ClientSession, server: SporkServer, path: str) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(f"{server.admin_url}{path}", headers=headers) as response:
        assert response.status == 200
        return orjson.loads(await response.read())


class Dashboard:
    """The dashboard page in the browser; a failed wait reports what the page last showed."""

    def __init__(self, browser: Chromium) -> None:
        self.browser = browser
        self.last: dict[str, Any] = {}

    async def read(self) -> dict[str, Any]:
        self.last = await self.browser.evaluate(READ_PAGE)
        return self.last

    async def until(
        self, probe: Callable[[], Awaitable[_T | None]], what: str, timeout: float = 8
    ) -> _T:
        try:
            return await eventually(probe, timeout=timeout, interval=0.05, what=what)
        except AssertionError as exc:
            shown = {k: v for k, v in self.last.items() if k != "html"}
            console = self.browser.console
            raise AssertionError(f"{exc}\npage: {shown}\nconsole: {console}") from None


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    """Headless Chromium, killed (its whole process group) after the test."""
    async with Chromium(tmp_path / "chromium") as chromium:
        yield chromium


@pytest.mark.timeout(30)
async def test_the_dashboard_shows_live_state_in_a_browser(
    tmp_path: Path,
    upstream: Upstream,
    spork_server: StartSpork,
    http: aiohttp.ClientSession,
    browser: Chromium,
) -> None:
    port, admin_port = free_ports(2)
    config = tmp_path / "gateway.toml"
    good = dashboard_config(port, admin_port, upstream, f"http://{LOOPBACK}:{free_port()}")
    config.write_text(good)
    # Reloads on SIGHUP only, so the one edit below makes exactly one reload.
    server = await spork_server(config, port, admin_port, "--no-reload")

    # A rejected edit, so the page has a failed reload (with its place) to show.
    bad = good.replace('name = "api"', 'name = "api"\nstrip_prefix = "sometimes"')
    bad_line = bad.splitlines().index('strip_prefix = "sometimes"') + 1
    config.write_text(bad)
    server.send(signal.SIGHUP)

    dashboard = Dashboard(browser)
    # The token travels in the fragment, which never reaches the server or its logs.
    await browser.navigate(f"{server.admin_url}/#token={TOKEN}")

    async with traffic(http, server) as statuses:

        async def busy() -> dict[str, Any] | None:
            state = await dashboard.read()
            rates = state["rates"]
            moving = (rates["requests"] or 0) > 0 and (rates["errors"] or 0) > 0
            return state if moving and state["reloads"] else None

        shown = await dashboard.until(busy, "rates on the page")
    assert 500 in statuses and 200 in statuses
    assert shown["rates"]["errors"] < shown["rates"]["requests"]
    assert not shown["tokenForm"] and shown["hash"] == ""
    assert TOKEN not in shown["html"]

    # Traffic has stopped: the totals settle on what /metrics says, and the rates fall to 0.
    # (The last request may still be finishing, so /metrics is read again on every try.)
    async def settled() -> tuple[dict[str, Any], dict[str, float]] | None:
        state, metrics = await dashboard.read(), await scrape(http, server)
        totals, rates = state["totals"], state["rates"]
        same = totals == {"requests": metrics["total"], "errors": metrics["5xx"]}
        return (state, metrics) if same and rates == {"requests": 0, "errors": 0} else None

    shown, metrics = await dashboard.until(settled, "totals equal to /metrics")
    assert metrics["5xx"] > 0

    routes = (await api(http, server, "/api/routes"))["routes"]
    assert shown["routes"] == [
        [
            r["route"],
            r["path"],
            " ".join(r["methods"]),
            r["service"],
            r["auth"],
            ", ".join(r["features"]),
            f"{metrics.get('route:' + r['route'], 0):g}",
            f"{metrics.get('5xx:' + r['route'], 0):g}",
        ]
        for r in routes
    ]

    services = (await api(http, server, "/api/services"))["services"]
    expected = [
        {
            "service": s["service"],
            "url": e["url"],
            "state": "up" if e["available"] else "ejected" if e["ejected"] else "down",
            "error": e["last_error"] or "",
        }
        for s in services
        for e in s["endpoints"]
    ]
    assert shown["endpoints"] == expected
    assert [e["state"] for e in expected if e["service"] == "ghost"] == ["up", "down"]
    assert shown["breakers"] == {"users": "", "flaky": "closed", "ghost": ""}

    [reload] = shown["reloads"]
    assert reload["result"] == "invalid"
    assert f"{config}:{bad_line}:" in reload["text"]

    # Live: a breaker forced open shows without reloading the page.
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{server.admin_url}/api/breakers?service=flaky&action=open"
    async with http.post(url, json={}, headers=headers) as forced:
        assert forced.status == 200

    async def opened() -> bool:
        return bool((await dashboard.read())["breakers"]["flaky"] == "open")

    await dashboard.until(opened, "the breaker shown open", timeout=5)

    shot = await browser.screenshot(tmp_path / "dashboard.png")
    print(f"dashboard screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert not [line for line in browser.console if line.startswith("exception")]
    assert browser.requests and all(
        u.startswith(server.admin_url + "/") for u in browser.requests
    ), browser.requests
