"""A reload storm under load: valid and invalid files in turn while clients loop, and not one
request fails or reaches an upstream the table in force does not name.

Every valid file moves the one service the load goes through to the other upstream (a new
connection pool, the old one retired with requests in flight) and adds one route while
removing another. Every invalid file would do the same if any of it were applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.conftest import StartSpork
from tests.reliability.harness import Figures, Load, Sample
from tests.support import (
    SporkServer,
    Upstream,
    UpstreamFactory,
    eventually,
    free_ports,
    gateway_toml,
    replace_file,
)

RELOADS = 60  # valid and invalid in turn
CLIENTS = 6

# Appended to a file that is valid on its own; each makes the whole file invalid.
INVALID_TAILS = {
    "toml syntax": "[[routes]\n",
    "unknown service": '[[routes]]\npath = "/x"\nservice = "ghost"\n',
    "unknown key": '[[routes]]\npath = "/x"\nservice = "a"\nbogus = 1\n',
    "bad duration": '[[routes]]\npath = "/x"\nservice = "a"\ntimeout = "soon"\n',
    "relative path": '[[routes]]\npath = "x"\nservice = "a"\n',
    "table twice": "[admin]\nenabled = true\n",
    "unterminated string": '[[routes]]\npath = "/x\nservice = "a"\n',
}


@dataclass(frozen=True)
class Window:
    """From the moment a valid reload was seen recorded until the next valid file was
    written: every request that started and ended inside it must have been served by
    ``upstream``, invalid files written meanwhile notwithstanding."""

    opened: float
    closed: float
    upstream: str

    def holds(self, sample: Sample) -> bool:
        return self.opened <= sample.started and sample.ended <= self.closed


class Storm:
    """The config file and the two upstreams the load's service moves between."""

    def __init__(self, config: Path, a: Upstream, b: Upstream) -> None:
        self.config = config
        self.a, self.b = a, b
        self.port, self.admin_port = free_ports(2)

    def text(self, target: Upstream, generation: int) -> str:
        """Generation ``generation``: /api goes to ``target``, and /gen<generation> exists."""
        services = {"api": target.url, "a": self.a.url, "b": self.b.url}
        routes = {"/api": "api", f"/gen{generation}": "b"}
        if generation % 3 == 0:
            routes["/extra"] = "a"
        return gateway_toml(self.port, self.admin_port, services, routes)


async def reloads_after(
    http: aiohttp.ClientSession, server: SporkServer, since: float
) -> list[dict[str, Any]]:
    """Reload results the gateway recorded at or after wall-clock ``since``, oldest first."""
    async with http.get(f"{server.admin_url}/api/reloads") as response:
        assert response.status == 200
        body = orjson.loads(await response.read())
    return [r for r in reversed(body["reloads"]) if r["at"] >= since]


async def write_and_wait(
    http: aiohttp.ClientSession, server: SporkServer, config: Path, text: str
) -> dict[str, Any]:
    """Write ``text`` as editors do and return the first reload the gateway recorded after."""
    since = time.time()
    replace_file(config, text)

    async def probe() -> dict[str, Any] | None:
        found = await reloads_after(http, server, since)
        return found[0] if found else None

    return await eventually(probe, timeout=10, what="a reload after the write")


async def status_of(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        await response.read()
        return response.status, response.headers.get("X-Upstream", "")


def served(sample: Sample) -> bool:
    """A 200 from one of the two upstreams (which one is checked against the windows)."""
    return sample.status == 200 and sample.body in (b"a", b"b")


async def test_reload_storm_under_load_fails_no_request(
    tmp_path: Path,
    upstream_factory: UpstreamFactory,
    spork_server: StartSpork,
    http: aiohttp.ClientSession,
    figures: Figures,
) -> None:
    a, b = await upstream_factory.many("a", "b")
    storm = Storm(tmp_path / "gateway.toml", a, b)
    storm.config.write_text(storm.text(a, 0))
    server = await spork_server(storm.config, storm.port, storm.admin_port)
    url = f"{server.url}/api/storm"

    async def request(session: aiohttp.ClientSession, _index: int) -> tuple[int, bytes]:
        async with session.get(url) as response:
            await response.read()
            return response.status, response.headers.get("X-Upstream", "").encode()

    windows: list[Window] = []
    tails = list(INVALID_TAILS.items())
    target, generation = a, 0
    results: list[str] = []
    started = opened = time.monotonic()
    async with Load(clients=CLIENTS, request=request, keep_bodies=True, deadline=45) as load:
        await load.answered(CLIENTS * 5)
        for i in range(RELOADS):
            after = b if target is a else a
            if i % 2 == 0:
                windows.append(Window(opened, time.monotonic(), target.name))
                text = storm.text(after, generation + 1)
                result = await write_and_wait(http, server, storm.config, text)
                assert result["result"] == "applied", (i, result)
                target, generation = after, generation + 1
                opened = time.monotonic()
            else:
                # An invalid file changes nothing: the window stays open across it.
                name, tail = tails[(i // 2) % len(tails)]
                # The broken file would move /api and swap /gen routes: any part of it
                # applied shows on the wire.
                text = storm.text(after, generation + 1) + tail
                result = await write_and_wait(http, server, storm.config, text)
                assert result["result"] == "invalid", (i, name, result)
                assert result["errors"], (i, name, result)
            results.append(result["result"])
            # What the record says is what is served: this generation's route and no other.
            assert await status_of(http, f"{server.url}/gen{generation}/x") == (200, "b"), i
            assert (await status_of(http, f"{server.url}/gen{generation + 1}/x"))[0] == 404, i
            if generation > 0:
                assert (await status_of(http, f"{server.url}/gen{generation - 1}/x"))[0] == 404
            extra = (await status_of(http, f"{server.url}/extra/x"))[0]
            assert extra == (200 if generation % 3 == 0 else 404), (i, generation, extra)
            assert not load.failed(served), load.failed(served)[:5]
            # Each client has at most one request that started before the window opened: the
            # rest of these started and ended inside it.
            await load.more(CLIENTS * 4)
        windows.append(Window(opened, time.monotonic(), target.name))
    elapsed = time.monotonic() - started

    failed = load.failed(served)
    misrouted = [
        (w.upstream, s.body)
        for w in windows
        for s in load.samples
        if w.holds(s) and s.body != w.upstream.encode()
    ]
    inside = [sum(1 for s in load.samples if w.holds(s)) for w in windows]
    figures.record(
        "reload storm",
        load.samples,
        len(failed) + len(misrouted),
        note=f"{RELOADS} reloads ({results.count('applied')} valid, "
        f"{results.count('invalid')} invalid) under {CLIENTS} clients in {elapsed:.1f} s",
    )
    assert failed == [], failed[:10]
    assert misrouted == [], misrouted[:10]
    assert results.count("applied") == RELOADS // 2
    assert results.count("invalid") == RELOADS // 2
    # Every table in force served requests that the window check covered.
    assert min(inside) >= CLIENTS, inside
    served_by = {name: sum(1 for s in load.samples if s.body == name) for name in (b"a", b"b")}
    assert min(served_by.values()) > RELOADS, served_by
    assert server.running
    assert "Traceback" not in server.output()
