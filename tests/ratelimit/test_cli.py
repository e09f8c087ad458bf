"""`spork limits`: what each client has left, and reset, from Redis or the running gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support import (
    SporkRunner,
    SporkServer,
    Upstream,
    free_ports,
    gateway_toml,
    reap,
    spork_env,
)

LIMIT = 'rate_limit = { requests = 5, per = "1m", key = ["header:X-Client"] }'


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_limits_show_and_reset(
    tmp_path: Path, upstream: Upstream, run_spork: SporkRunner, redis_url: str, backend: str
) -> None:
    port, admin = free_ports(2)
    state = f'[state]\nbackend = "redis"\nurl = "{redis_url}"' if backend == "redis" else ""
    config = tmp_path / "g.toml"
    config.write_text(
        gateway_toml(
            port, admin, {"svc": upstream.url}, {"/api/": "svc"}, route_extra=LIMIT, extra=state
        )
    )
    server = SporkServer(config, port, admin, tmp_path / "server")
    try:
        await server.start()
        async with aiohttp.ClientSession() as http:
            for client, count in (("alpha", 3), ("beta", 1)):
                for _ in range(count):
                    async with http.get(
                        f"{server.url}/api/x", headers={"X-Client": client}
                    ) as response:
                        assert response.status == 200

        def spork(*args: str) -> str:
            result = run_spork("-c", str(config), "limits", *args)
            assert result.returncode == 0, result.stderr
            return result.stdout

        rows = json.loads(await asyncio.to_thread(spork, "--json"))
        left = {row["client"]: row["remaining"] for row in rows}
        assert left == {"header:x-client=alpha": 2, "header:x-client=beta": 4}
        assert all(row["route"] == "/api/" and row["limit"] == 5 for row in rows)
        only = json.loads(await asyncio.to_thread(spork, "/api/", "--key", "beta", "--json"))
        assert [row["client"] for row in only] == ["header:x-client=beta"]
        # Reading did not take anything.
        again = json.loads(await asyncio.to_thread(spork, "--json"))
        assert {row["client"]: row["remaining"] for row in again} == left
        out = await asyncio.to_thread(spork, "reset", "/api/", "alpha")
        assert out.strip() == "reset 1 limiter key of /api/"
        rows = json.loads(await asyncio.to_thread(spork, "--json"))
        assert [row["client"] for row in rows] == ["header:x-client=beta"]
    finally:
        server.kill()


def test_unknown_route_is_a_usage_error(
    tmp_path: Path, upstream: Upstream, run_spork: SporkRunner
) -> None:
    port, admin = free_ports(2)
    config = tmp_path / "g.toml"
    config.write_text(gateway_toml(port, admin, {"svc": upstream.url}, {"/api/": "svc"}))
    result = run_spork("-c", str(config), "limits", "/api/")
    assert result.returncode == 2
    assert "no rate-limited route is named '/api/'" in result.stderr


def test_watch_refreshes_until_interrupted(tmp_path: Path, redis_url: str) -> None:
    port, admin = free_ports(2)
    config = tmp_path / "g.toml"
    config.write_text(
        gateway_toml(
            port,
            admin,
            {"svc": "http://127.0.0.1:9"},
            {"/api/": "svc"},
            route_extra=LIMIT,
            extra=f'[state]\nbackend = "redis"\nurl = "{redis_url}"',
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "spork_cli", "-c", str(config), "limits", "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=spork_env(),
    )
    try:
        assert proc.stdout is not None
        seen = [proc.stdout.readline() for _ in range(4)]
        # A timestamp and the (empty) view, then the same again a refresh later.
        assert sum("no client has used a rate-limited route yet" in line for line in seen) == 2
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    finally:
        reap(proc)
