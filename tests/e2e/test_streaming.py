"""Large bodies stream through the gateway both ways in flat memory; SSE arrives as sent."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import RepoConfig, StartSpork
from tests.support import (
    SporkServer,
    Upstream,
    eventually,
    free_ports,
    gateway_toml,
    pattern_blocks,
    pattern_digest,
    proc_status_kib,
)

GIB = 1024**3
RSS_CEILING_KIB = 150 * 1024
RSS_GROWTH_KIB = 50 * 1024


@pytest.fixture
async def bulk_gateway(tmp_path: Path, upstream: Upstream, spork_server: StartSpork) -> SporkServer:
    port, admin_port = free_ports(2)
    config = tmp_path / "gateway.toml"
    config.write_text(
        gateway_toml(
            port,
            admin_port,
            {"bulk": upstream.url},
            {"/": "bulk"},
            server_extra='max_body = "2GiB"',
            service_extra='timeout = "60s"',
            extra="[logging]\naccess_log = false\n",
        )
    )
    return await spork_server(config, port, admin_port)


class RssWatch:
    """Samples the resident set size of a process while a transfer runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = proc_status_kib(pid)
        self.samples: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.samples.append(proc_status_kib(self.pid))
            await asyncio.sleep(0.05)

    async def __aenter__(self) -> RssWatch:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        self.samples.append(proc_status_kib(self.pid))

    def check(self) -> None:
        peak = max(self.samples)
        summary = f"baseline {self.baseline} kB, peak {peak} kB over {len(self.samples)} samples"
        assert len(self.samples) >= 10, summary
        assert peak < RSS_CEILING_KIB, summary
        assert peak - self.baseline < RSS_GROWTH_KIB, summary


async def warm_up(http: aiohttp.ClientSession, server: SporkServer) -> None:
    """One small request each way first, so the baseline includes a warmed-up proxy."""
    async with http.post(f"{server.url}/upload", data=b"x" * 100_000) as response:
        assert response.status == 200
        await response.read()
    async with http.get(f"{server.url}/bytes", params={"size": "1000000"}) as response:
        assert response.status == 200
        await response.read()


# --- 1 GiB each way ----------------------------------------------------------------------------


async def test_one_gib_upload_streams_through_in_flat_memory(
    bulk_gateway: SporkServer, http: aiohttp.ClientSession
) -> None:
    await warm_up(http, bulk_gateway)
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for chunk in pattern_blocks(GIB):
            sent.update(chunk)
            yield bytes(chunk)

    started = time.monotonic()
    async with RssWatch(bulk_gateway.pid) as rss:
        # No length given: the body goes out chunked, so the gateway cannot buffer by size.
        async with http.post(f"{bulk_gateway.url}/upload", data=body()) as response:
            assert response.status == 200
            result = orjson.loads(await response.read())
    elapsed = time.monotonic() - started

    assert result == {"size": GIB, "sha256": sent.hexdigest(), "chunked": True}
    rss.check()
    assert elapsed < 60


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_one_gib_download_streams_through_in_flat_memory(
    bulk_gateway: SporkServer, http: aiohttp.ClientSession, chunked: bool
) -> None:
    await warm_up(http, bulk_gateway)
    received = hashlib.sha256()
    count = 0

    started = time.monotonic()
    params = {"size": str(GIB), "length": "0" if chunked else "1"}
    async with RssWatch(bulk_gateway.pid) as rss:
        async with http.get(f"{bulk_gateway.url}/bytes", params=params) as response:
            assert response.status == 200
            if chunked:
                assert response.headers.get("Transfer-Encoding") == "chunked"
                assert response.content_length is None
            else:
                assert response.content_length == GIB
            async for chunk in response.content.iter_chunked(1024 * 1024):
                received.update(chunk)
                count += len(chunk)
    elapsed = time.monotonic() - started

    assert count == GIB
    assert received.hexdigest() == pattern_digest(GIB)
    rss.check()
    assert elapsed < 60


# --- server-sent events ------------------------------------------------------------------------


async def test_server_sent_events_arrive_as_they_are_sent(
    repo_config: RepoConfig, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server = await spork_server(repo_config.path, repo_config.port, repo_config.admin_port)
    arrivals: list[tuple[float, dict[str, int]]] = []

    url = f"{server.url}/api/users/stream?n=3&interval_ms=300"
    async with http.get(url) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        async for line in response.content:
            if line.startswith(b"data:"):
                arrivals.append((time.monotonic(), orjson.loads(line[5:])))

    assert [event for _, event in arrivals] == [{"i": 0}, {"i": 1}, {"i": 2}]
    times = [at for at, _ in arrivals]
    # Sent 300 ms apart: buffered events would arrive together at the end.
    assert times[1] - times[0] > 0.2, times
    assert times[2] - times[1] > 0.2, times
    await eventually(
        lambda: [e for e in server.events("request") if e["path"].startswith("/api/users/stream")],
        what="the access log line of the stream",
    )
