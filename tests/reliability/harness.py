"""Load for the reliability suite: looping clients against a real `spork serve`, every answer
kept with its time, and the figures each scenario reports (sent, failed, p99, recovery)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Sample:
    """One request: when it started and ended (monotonic seconds), and its outcome."""

    started: float
    ended: float
    status: int | None  # None when the request failed without an HTTP answer
    error: str | None = None
    body: bytes = b""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def p99_ms(samples: list[Sample]) -> float:
    if not samples:
        return 0.0
    ordered = sorted(s.seconds for s in samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


@dataclass
class Load:
    """``clients`` tasks sending requests in a loop until ``stop()``, bounded by ``limit``
    requests in all and ``deadline`` seconds, so a scenario that goes wrong still ends.

    ``request(session, i)`` sends the i-th request and returns its status and body; the
    default GETs ``url``. Use it as ``async with Load(url) as load: ...``.
    """

    url: str = ""
    clients: int = 4
    limit: int = 100_000
    deadline: float = 60.0
    timeout: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict)
    request: Callable[[aiohttp.ClientSession, int], Any] | None = None
    keep_bodies: bool = False
    samples: list[Sample] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _sent: int = 0

    async def __aenter__(self) -> Load:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start(self) -> None:
        self._ends_at = time.monotonic() + self.deadline
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            # One client failing must not leave the others looping until their deadline.
            for task in self._tasks:
                task.cancel()

    @property
    def running(self) -> bool:
        return not self._stop.is_set() and any(not t.done() for t in self._tasks)

    async def answered(self, count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` requests in all have ended (fails after ``timeout``)."""
        async with self._progress:
            await asyncio.wait_for(
                self._progress.wait_for(lambda: len(self.samples) >= count or not self.running),
                timeout,
            )
        assert len(self.samples) >= count, f"the load stopped after {len(self.samples)} requests"

    async def more(self, count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` more requests have ended than have now."""
        await self.answered(len(self.samples) + count, timeout)

    def since(self, moment: float) -> list[Sample]:
        return [s for s in self.samples if s.started >= moment]

    def failed(self, ok: Callable[[Sample], bool] | None = None) -> list[Sample]:
        check = ok or (lambda s: s.status == 200)
        return [s for s in self.samples if not check(s)]

    async def _client(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout, headers=dict(self.headers)) as session:
            while not self._stop.is_set() and self._sent < self.limit:
                if time.monotonic() >= self._ends_at:
                    break
                index = self._sent
                self._sent += 1
                started = time.monotonic()
                try:
                    if self.request is None:
                        async with session.get(self.url) as response:
                            status, body = response.status, await response.read()
                    else:
                        status, body = await self.request(session, index)
                    sample = Sample(
                        started, time.monotonic(), status, body=body if self.keep_bodies else b""
                    )
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    sample = Sample(started, time.monotonic(), None, repr(exc))
                async with self._progress:
                    self.samples.append(sample)
                    self._progress.notify_all()
        async with self._progress:
            self._progress.notify_all()


@dataclass
class Figure:
    scenario: str
    sent: int
    failed: int
    p99_ms: float
    recovery_s: float | None = None
    note: str = ""


@dataclass
class Figures:
    """What each scenario measured; written as a Markdown table at the end of the run when
    SPORK_RELIABILITY_REPORT names a file (see docs/RELIABILITY.md)."""

    rows: list[Figure] = field(default_factory=list)

    def record(
        self,
        scenario: str,
        samples: list[Sample],
        failed: int,
        *,
        recovery_s: float | None = None,
        note: str = "",
    ) -> Figure:
        row = Figure(scenario, len(samples), failed, p99_ms(samples), recovery_s, note)
        self.rows.append(row)
        return row

    def markdown(self) -> str:
        lines = [
            "| scenario | requests | failed | p99 ms | recovery s | note |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in sorted(self.rows, key=lambda r: r.scenario):
            recovery = "" if r.recovery_s is None else f"{r.recovery_s:.2f}"
            lines.append(
                f"| {r.scenario} | {r.sent:,} | {r.failed:,} | {r.p99_ms:.1f} | {recovery} "
                f"| {r.note} |"
            )
        return "\n".join(lines) + "\n"


async def serve_on_free_ports(
    start: Callable[..., Awaitable[Any]],
    config: Path,
    render: Callable[[int, int], str],
    attempts: int = 3,
) -> Any:
    """Write ``render(port, admin_port)`` to ``config`` and start it with ``start`` (the
    `spork_server` fixture), on fresh ports again when another process took one of them
    between choosing and binding: free ports are only known to have been free a moment ago."""
    from tests.support import free_ports

    for attempt in range(attempts):
        port, admin_port = free_ports(2)
        config.write_text(render(port, admin_port))
        try:
            return await start(config, port, admin_port)
        except RuntimeError as exc:
            if "already in use" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
