"""Redis client benchmark: the GCRA script via redis-py asyncio vs spork's RespClient.

    python bench/redis_client.py [--url redis://127.0.0.1:6379/0] [--duration 2] [--rounds 3]

Starts its own redis-server on a free loopback port unless --url is given. For each client,
concurrency (1 and 50) and event loop (asyncio, uvloop when installed) it runs EVALSHA calls
for --duration seconds after a short warm-up, and prints calls/s, wall-clock µs per call
(1 / throughput), mean latency and client CPU µs per call (this process only, so the server's
share is excluded); each figure is the median of --rounds interleaved rounds. Bounded:
rounds x cells x (duration + warm-up), about 90 s by default.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spork_cli.state.resp import HAVE_HIREDIS, RespClient, Script  # noqa: E402

GCRA = (ROOT / "spork_cli" / "state" / "lua" / "gcra.lua").read_text()
# 100 requests/s with a large burst, so every call takes the full "allowed" path (a SET).
ARGS = (10_000, 1_000_000_000, 1)
KEYS = [f"bench:{{gcra}}:{i}" for i in range(64)]
WARMUP = 0.3

Call = Callable[[int], Awaitable[Any]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", workdir, "--logfile", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("redis-server did not start")


@asynccontextmanager
async def redis_py(url: str, concurrency: int) -> Any:
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max(concurrency, 1))
    client = aioredis.Redis(connection_pool=pool)
    script = client.register_script(GCRA)

    async def call(i: int) -> Any:
        return await script(keys=[KEYS[i % len(KEYS)]], args=ARGS)

    try:
        yield call
    finally:
        await client.aclose()
        await pool.disconnect()


@asynccontextmanager
async def resp(url: str, concurrency: int, use_hiredis: bool = True) -> Any:
    client = RespClient.from_url(url, connect_timeout=5, use_hiredis=use_hiredis)
    script = Script(GCRA)

    async def call(i: int) -> Any:
        return await client.evalsha(script, [KEYS[i % len(KEYS)]], ARGS)

    try:
        yield call
    finally:
        await client.aclose()


CLIENTS: dict[str, Callable[[str, int], AbstractAsyncContextManager[Call]]] = {
    "redis-py": redis_py,
    "RespClient": resp,
    "Resp/pyread": partial(resp, use_hiredis=False),
}


@dataclass
class Result:
    calls: int
    wall: float
    cpu: float
    concurrency: int

    @staticmethod
    def median(results: list[Result]) -> Result:
        """The round with the median rate: loopback figures on a busy box are noisy."""
        return sorted(results, key=lambda r: r.rate)[len(results) // 2]

    @property
    def rate(self) -> float:
        return self.calls / self.wall

    def row(self) -> str:
        per_call = self.wall / self.calls * 1e6
        latency = per_call * self.concurrency
        cpu = self.cpu / self.calls * 1e6
        return f"{self.rate:>10,.0f} {per_call:>9.1f} {latency:>11.1f} {cpu:>9.1f}"


async def measure(client: str, url: str, concurrency: int, duration: float) -> Result:
    async with CLIENTS[client](url, concurrency) as call:
        counts = [0] * concurrency
        stop = False

        async def worker(n: int) -> None:
            i = n
            while not stop:
                await call(i)
                i += concurrency
                counts[n] += 1

        tasks = [asyncio.create_task(worker(n)) for n in range(concurrency)]
        await asyncio.sleep(WARMUP)
        start_calls, wall, cpu = sum(counts), time.perf_counter(), time.process_time()
        await asyncio.sleep(duration)
        calls = sum(counts) - start_calls
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stop = True
        await asyncio.gather(*tasks)
    return Result(calls, wall, cpu, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing Redis (loopback please); default: start one")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()

    loops: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop

        loops["uvloop"] = uvloop.new_event_loop
    except ImportError:
        print("uvloop not installed: asyncio only")

    with tempfile.TemporaryDirectory() as workdir:
        proc, url = (None, options.url) if options.url else start_redis(workdir)
        try:
            print(f"Redis at {url}; hiredis {'on' if HAVE_HIREDIS else 'off'}; "
                  f"median of {options.rounds} interleaved rounds")  # fmt: skip
            print(f"{'loop':<8} {'client':<12} {'conc':>4} {'calls/s':>10} {'µs/call':>9} "
                  f"{'latency µs':>11} {'cpu µs':>9}")  # fmt: skip
            cells = [
                (loop_name, concurrency, client)
                for loop_name in loops
                for concurrency in options.concurrency
                for client in CLIENTS
            ]
            results: dict[tuple[str, int, str], list[Result]] = {cell: [] for cell in cells}
            for _ in range(options.rounds):
                for cell in cells:
                    loop_name, concurrency, client = cell
                    with asyncio.Runner(loop_factory=loops[loop_name]) as runner:
                        results[cell].append(
                            runner.run(measure(client, url, concurrency, options.duration))
                        )
            for cell in cells:
                loop_name, concurrency, client = cell
                row = Result.median(results[cell]).row()
                print(f"{loop_name:<8} {client:<12} {concurrency:>4} {row}")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)


if __name__ == "__main__":
    main()
