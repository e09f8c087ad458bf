"""Active health checks: probes of endpoints, shared by the gateway and `spork health`."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from spork_cli import __version__
from spork_cli.config.model import HealthCheck, Service

# What `spork health` runs against a service without `[services.health]`: exactly what an empty
# section would configure (GET /health, 200 expected, 2 s timeout).
DEFAULT_CHECK = HealthCheck()


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
        reason = f"timed out after {seconds(limit)}"
        return ProbeResult(url, False, None, time.perf_counter() - started, reason)
    except aiohttp.ClientError as exc:
        reason = _reason(exc)
        return ProbeResult(url, False, None, time.perf_counter() - started, reason)
    latency = time.perf_counter() - started
    if status in check.expected_status:
        return ProbeResult(url, True, status, latency)
    return ProbeResult(url, False, status, latency, f"unexpected status {status}")


def seconds(value: float) -> str:
    """``"250ms"``, ``"2s"``, ``"1.5s"``: a duration as a person would write it."""
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def _reason(exc: aiohttp.ClientError) -> str:
    """One line saying why no HTTP answer came; TLS, DNS and refusals told apart."""
    # Subclasses first: a certificate error is an SSL error is a connector error.
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
        detail = cause.verify_message if isinstance(cause, ssl.SSLCertVerificationError) else None
        return f"TLS certificate rejected: {detail or cause}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return _tls_reason(exc.os_error)
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, socket.gaierror):
            return f"cannot resolve {exc.host}: {exc.os_error.strerror or exc.os_error}"
        return f"cannot connect: {_os_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"invalid HTTP response: {exc.message}"
    return _one_line(str(exc)) or type(exc).__name__


def _os_reason(error: OSError) -> str:
    # asyncio words a refusal "Connect call failed ('127.0.0.1', 1)"; errno says it plainly.
    if error.errno:
        return os.strerror(error.errno)
    return _one_line(error.strerror or str(error)) or type(error).__name__


def _tls_reason(error: OSError) -> str:
    reason = getattr(error, "reason", None)
    if reason == "WRONG_VERSION_NUMBER":
        # By far the usual cause: an https:// URL for a server speaking plain HTTP.
        return "TLS handshake failed: wrong version number (is the endpoint plain http?)"
    if isinstance(reason, str):
        return f"TLS handshake failed: {reason.lower().replace('_', ' ')}"
    return f"TLS handshake failed: {_one_line(str(error)) or type(error).__name__}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class EndpointHealth:
    """One endpoint's probe, with the check that was run (``configured`` False: the service
    has no ``[services.health]`` and DEFAULT_CHECK was used)."""

    service: str
    endpoint: str
    check: HealthCheck
    configured: bool
    timeout: float
    result: ProbeResult

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "endpoint": self.endpoint,
            "healthy": self.result.ok,
            "http_status": self.result.status,
            "latency_ms": round(self.result.latency * 1000, 3),
            "error": self.result.error,
            "url": self.result.url,
            "check": "configured" if self.configured else "default",
            "path": self.check.path,
            "expected_status": list(self.check.expected_status),
            "timeout": self.timeout,
        }


async def check_services(
    services: Sequence[Service], timeout: float | None = None
) -> list[EndpointHealth]:
    """Probe every endpoint of ``services`` at once, each with its service's check (or
    DEFAULT_CHECK); ``timeout`` overrides every check's own. Results keep the given order."""
    plan = [
        (service, endpoint.url, service.health or DEFAULT_CHECK)
        for service in services
        for endpoint in service.endpoints
    ]
    # No pool limit (a probe waiting for a free connection would time out for nothing) and no
    # keep-alive: each probe is one request, and a run leaves no sockets behind.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        headers={"User-Agent": f"spork-health/{__version__}"},
    ) as session:
        results = await asyncio.gather(
            *(probe(session, url, check, timeout) for _, url, check in plan)
        )
    return [
        EndpointHealth(
            service=service.name,
            endpoint=url,
            check=check,
            configured=service.health is not None,
            timeout=timeout if timeout is not None else check.timeout,
            result=result,
        )
        for (service, url, check), result in zip(plan, results, strict=True)
    ]
