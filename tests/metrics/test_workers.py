"""`/metrics` with `--workers N`: the supervisor's admin listener adds up every worker's series."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartSpork
from tests.e2e.test_workers import WORKERS, fresh_connection_traffic, start_workers, worker_pids
from tests.support import SporkServer, Upstream, eventually, socket_inodes, tcp_sockets

REQUESTS = 120


async def scrape(http: aiohttp.ClientSession, server: SporkServer) -> dict[str, float]:
    async with http.get(f"{server.admin_url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "spork_requests_total" and sample.labels.get("route") == "/":
                totals[sample.labels["status"]] = (
                    totals.get(sample.labels["status"], 0) + sample.value
                )
            if sample.name == "spork_requests_in_flight":
                totals["in_flight"] = sample.value
    return totals


async def complete(
    http: aiohttp.ClientSession, server: SporkServer, expected: int
) -> dict[str, float] | None:
    totals = await scrape(http, server)
    return totals if totals.get("200") == expected else None


async def test_the_supervisor_serves_the_sum_of_every_workers_series(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server, _ = await start_workers(tmp_path, upstream, spork_server)
    workers = await worker_pids(server)
    statuses = await fresh_connection_traffic(server.url, REQUESTS)
    assert statuses == [200] * REQUESTS
    # Both workers took part (each keeps a connection to the upstream), so the sum below
    # can only come out right by adding up more than one process.
    to_upstream = {inode for _l, remote, _s, inode in tcp_sockets() if remote == upstream.port}
    assert all(socket_inodes(pid) & to_upstream for pid in workers), "a worker served nothing"

    # Workers write their numbers once a second: the sum is complete within that.
    totals = await eventually(
        lambda: complete(http, server, REQUESTS), timeout=5, what=f"{REQUESTS} requests counted"
    )
    assert totals.get("in_flight") == 0, totals
    assert len(workers) == WORKERS
    assert await server.stop(signal.SIGTERM, timeout=20) == 0, server.output()


async def test_a_dead_workers_counts_are_kept(
    tmp_path: Path, upstream: Upstream, spork_server: StartSpork, http: aiohttp.ClientSession
) -> None:
    server, _ = await start_workers(tmp_path, upstream, spork_server)
    workers = await worker_pids(server)
    assert await fresh_connection_traffic(server.url, 40) == [200] * 40
    await eventually(lambda: complete(http, server, 40), timeout=5, what="40 requests counted")
    victim = min(workers)

    os.kill(victim, signal.SIGKILL)
    await worker_pids(server, without=victim)
    await eventually(
        lambda: len(server.events("spork is serving")) == WORKERS + 1,
        timeout=15,
        what="the replacement serving",
    )
    # The counts of the dead worker are not lost (a SIGKILL loses at most its last second).
    totals = await scrape(http, server)
    assert totals.get("200") == 40, totals
    assert totals.get("in_flight") == 0, totals
    assert await server.stop(signal.SIGTERM, timeout=20) == 0, server.output()
