"""The access log keeps its lines and writes them together: one write per flush, not one per
request, also to an unbuffered stream (stdout under PYTHONUNBUFFERED=1)."""

from __future__ import annotations

import asyncio
import json

from spork_cli.gateway import accesslog
from spork_cli.gateway.accesslog import AccessLog


class Unbuffered:
    """A stream like an unbuffered stdout: every write is a write of its own."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.flushes = 0
        self.written = asyncio.Event()

    def write(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        self.written.set()
        return len(data)

    def flush(self) -> None:
        self.flushes += 1


def record(n: int) -> dict[str, object]:
    return {"method": "GET", "path": f"/r/{n}", "status": 200, "request_id": f"id{n}"}


async def test_lines_of_a_busy_moment_go_out_in_one_write() -> None:
    stream = Unbuffered()
    log = AccessLog(stream, console=False)  # type: ignore[arg-type]
    for n in range(50):
        log.write(record(n))
    assert stream.writes == []  # kept, not written line by line
    await asyncio.wait_for(stream.written.wait(), accesslog.FLUSH_EVERY * 20)
    assert len(stream.writes) == 1
    lines = stream.writes[0].splitlines()
    assert [json.loads(line)["path"] for line in lines] == [f"/r/{n}" for n in range(50)]
    assert json.loads(lines[0])["event"] == "request"


async def test_a_full_buffer_is_written_at_once() -> None:
    stream = Unbuffered()
    log = AccessLog(stream, console=False)  # type: ignore[arg-type]
    n = 0
    while not stream.writes:
        log.write(record(n))
        n += 1
    written = len(stream.writes[0])
    assert accesslog.FLUSH_BYTES <= written < accesslog.FLUSH_BYTES + 200
    assert len(stream.writes[0].splitlines()) == n


def test_flush_writes_what_is_kept_and_nothing_twice() -> None:
    stream = Unbuffered()
    log = AccessLog(stream, console=False)  # type: ignore[arg-type]
    log.write(record(1))  # no running loop: written at once
    assert len(stream.writes) == 1
    log.flush()
    assert len(stream.writes) == 1  # nothing was kept
    assert stream.flushes == 2


def test_console_lines_are_kept_the_same_way() -> None:
    stream = Unbuffered()
    log = AccessLog(stream, console=True)  # type: ignore[arg-type]

    async def two() -> None:
        log.write({**record(1), "duration_ms": 1.5})
        log.write({**record(2), "duration_ms": 2.5})
        log.flush()

    asyncio.run(two())
    assert len(stream.writes) == 1
    assert [line.split()[2] for line in stream.writes[0].decode().splitlines()] == ["/r/1", "/r/2"]
