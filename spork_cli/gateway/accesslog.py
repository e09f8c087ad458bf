"""The access log: one line per request, written without the cost of a logging framework.

JSON lines (same shape as the rest of the logs) when stdout is not a terminal, a readable
line when it is. Lines are kept here and written at least every 100 ms (sooner past
``FLUSH_BYTES``), so a busy gateway does not pay a system call per request, also where the
stream itself is unbuffered (``PYTHONUNBUFFERED=1``, common in containers).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import IO, Any

import orjson

FLUSH_EVERY = 0.1
FLUSH_BYTES = 64 * 1024


class AccessLog:
    def __init__(self, stream: IO[bytes] | None = None, console: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.console = sys.stdout.isatty() if console is None else console
        self._flush_scheduled = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._second = -1
        self._stamp = ""

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1_000_000):06d}Z"

    def write(self, record: dict[str, Any]) -> None:
        now = time.time()
        if self.console:
            line = _readable(record, time.strftime("%H:%M:%S", time.localtime(now))).encode()
        else:
            record["event"] = "request"
            record["level"] = "info"
            record["timestamp"] = self._timestamp(now)
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            try:
                asyncio.get_running_loop().call_later(FLUSH_EVERY, self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        """Write every kept line now (also at shutdown)."""
        self._flush_scheduled = False
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        try:
            if pending:
                self.stream.write(b"".join(pending))
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stdout closed or gone: nothing useful left to do with the line


def _readable(record: dict[str, Any], clock: str) -> str:
    upstream = record.get("upstream_ms")
    target = f" -> {record['service']} {record['endpoint']}" if record.get("endpoint") else ""
    up = f" (upstream {upstream:.1f}ms)" if upstream is not None else ""
    return (
        f"{clock} {record['method']} {record['path']} {record['status']} "
        f"{record['duration_ms']:.1f}ms{up}{target} id={record['request_id']}\n"
    )
