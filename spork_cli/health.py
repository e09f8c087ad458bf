"""Active health checks: one probe of one endpoint, shared by the gateway and `spork health`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from spork_cli.config.model import HealthCheck


@dataclass(frozen=True)
class ProbeResult:
    url: str
    ok: bool
    status: int | None
    latency: float
    error: str | None = None


async def probe(
    session: aiohttp.ClientSession, base_url: str, check: HealthCheck, timeout: float | None = None
) -> ProbeResult:
    """GET ``check.path`` on ``base_url``; healthy when the status is an expected one."""
    url = base_url.rstrip("/") + check.path
    started = time.perf_counter()
    limit = timeout if timeout is not None else check.timeout
    try:
        async with asyncio.timeout(limit):
            async with session.get(url, allow_redirects=False) as response:
                await response.read()
                status = response.status
    except TimeoutError:
        return ProbeResult(url, False, None, time.perf_counter() - started, "timed out")
    except aiohttp.ClientError as exc:
        reason = _reason(exc)
        return ProbeResult(url, False, None, time.perf_counter() - started, reason)
    latency = time.perf_counter() - started
    if status in check.expected_status:
        return ProbeResult(url, True, status, latency)
    return ProbeResult(url, False, status, latency, f"unexpected status {status}")


def _reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    return str(exc) or type(exc).__name__
