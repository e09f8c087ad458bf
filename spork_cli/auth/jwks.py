"""A JWKS URL, fetched with aiohttp and cached: never blocks start-up, never hangs a request.

Lifecycle: ``cache = JwksCache(url, session=...)``; ``await cache.start()`` begins the first
fetch in the background and returns at once; ``await cache.close()`` cancels a fetch in flight
and closes the client session when the cache created it (a session passed in stays open: its
owner closes it). ``async with JwksCache(...)`` does both.

Policy: a fetched key set is served for ``ttl`` seconds, then refreshed in the background
while the old set keeps serving. A token with an unknown kid triggers at most one refetch per
``cooldown`` (a global budget, so random kids cannot turn requests into fetches). A failed
fetch keeps the last good set. Before the first success, a request waits at most ``timeout``
for the fetch in flight, then fails closed as `jwks_unavailable`; fetches are retried no more
often than every ``retry_after`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable
from types import TracebackType

import aiohttp
import structlog

from spork_cli.auth import KeyLoadError, TokenRejected
from spork_cli.auth.algorithms import ALGORITHMS
from spork_cli.auth.keys import KeySet
from spork_cli.config.model import Auth

log = structlog.get_logger("spork.auth")

MAX_DOCUMENT = 512 * 1024


class _FetchFailed(Exception):
    """One fetch failed; the message is the reason logged and shown in `jwks_unavailable`."""


class JwksCache:
    """The key set at ``url``; see the module docstring for the refresh policy."""

    def __init__(
        self,
        url: str,
        *,
        algorithms: Iterable[str] = ALGORITHMS,
        session: aiohttp.ClientSession | None = None,
        ttl: float = 300.0,
        cooldown: float = 30.0,
        timeout: float = 2.0,
        retry_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.algorithms = frozenset(algorithms)
        self.ttl = ttl
        self.cooldown = cooldown
        self.timeout = timeout
        self.retry_after = retry_after
        self._clock = clock
        self._session = session
        self._owns_session = session is None
        self._keys: KeySet | None = None
        self._error: str | None = None
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._kid_refetch_at: float | None = None
        self._task: asyncio.Task[KeySet | None] | None = None
        self._closed = False
        self.fetches = 0

    @classmethod
    def from_config(
        cls,
        auth: Auth,
        *,
        session: aiohttp.ClientSession | None = None,
        cooldown: float = 30.0,
        timeout: float = 2.0,
        retry_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> JwksCache:
        """A cache of ``auth.jwks_url``, kept for ``auth.jwks_cache_ttl``."""
        if auth.jwks_url is None:
            raise ValueError("auth.jwks_url is not set")
        return cls(
            auth.jwks_url,
            algorithms=auth.algorithms,
            session=session,
            ttl=auth.jwks_cache_ttl,
            cooldown=cooldown,
            timeout=timeout,
            retry_after=retry_after,
            clock=clock,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin the first fetch in the background; returns without waiting for it."""
        self.current()

    async def close(self) -> None:
        self._closed = True
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # A task cancelled before its first step never reaches its own cleanup.
            self._task = None
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> JwksCache:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- state --------------------------------------------------------------------------------

    @property
    def keys(self) -> KeySet | None:
        """The last key set fetched successfully, without starting any fetch."""
        return self._keys

    @property
    def last_error(self) -> str | None:
        """Why the most recent fetch failed; None once a fetch succeeds."""
        return self._error

    @property
    def fetching(self) -> bool:
        return self._task is not None

    def current(self) -> KeySet | None:
        """The last good key set (None before the first success); starts a fetch when due."""
        if not self._closed and self._task is None and self._due():
            self._launch()
        return self._keys

    async def get(self) -> KeySet:
        """The key set, waiting at most ``timeout`` for a first fetch.

        Raises TokenRejected(`jwks_unavailable`) when no key set could be had in that time.
        """
        keys = self.current()
        if keys is not None:
            return keys
        task = self._task
        keys = await self._wait(task) if task is not None else None
        if keys is not None:
            return keys
        if task is not None and not task.done():
            reason = f"the JWKS did not arrive within {self.timeout:g}s"
        elif self._error is not None:
            reason = f"the JWKS could not be fetched: {self._error}"
        else:
            reason = "the JWKS has not been fetched yet"
        raise TokenRejected(reason, "jwks_unavailable")

    async def refresh_unknown_kid(self) -> KeySet | None:
        """Refetch because a token named a kid not in the set: at most once per ``cooldown``.

        Returns the key set of a successful refetch; None when the cooldown holds it back or
        the fetch failed (the previous set stays in use).
        """
        if self._closed:
            return None
        now = self._clock()
        if self._kid_refetch_at is not None and now - self._kid_refetch_at < self.cooldown:
            return None
        self._kid_refetch_at = now
        return await self._wait(self._task or self._launch())

    async def refresh(self) -> KeySet | None:
        """Fetch now (or join the fetch in flight), waiting at most ``timeout``."""
        if self._closed:
            return None
        return await self._wait(self._task or self._launch())

    async def idle(self) -> None:
        """Wait until no fetch is in flight (each is bounded by ``timeout``)."""
        task = self._task
        if task is not None:
            await asyncio.wait({task})

    # -- fetching -----------------------------------------------------------------------------

    def _due(self) -> bool:
        if self._attempted_at is None:
            return True
        now = self._clock()
        if now - self._attempted_at < self.retry_after:
            return False
        return self._fetched_at is None or now - self._fetched_at >= self.ttl

    def _launch(self) -> asyncio.Task[KeySet | None]:
        self._attempted_at = self._clock()
        task = asyncio.get_running_loop().create_task(self._fetch(), name=f"jwks {self.url}")
        self._task = task
        return task

    async def _wait(self, task: asyncio.Task[KeySet | None]) -> KeySet | None:
        # asyncio.wait, unlike wait_for, leaves the shared fetch running when this waiter gives
        # up or is cancelled: other requests may still be waiting on it.
        done, _ = await asyncio.wait({task}, timeout=self.timeout)
        if task not in done or task.cancelled():
            return None
        return task.result()

    async def _fetch(self) -> KeySet | None:
        self.fetches += 1
        try:
            keys = await self._download()
        except _FetchFailed as exc:
            reason = str(exc)
            if reason != self._error:
                log.warning(
                    "JWKS fetch failed; keeping the last good key set",
                    url=self.url,
                    error=reason,
                    have_keys=self._keys is not None,
                )
            self._error = reason
            return None
        finally:
            self._task = None
        if self._error is not None:
            log.info("JWKS fetched again", url=self.url, kids=keys.kids)
        for skipped in keys.skipped:
            log.warning("JWKS key skipped", url=self.url, reason=skipped)
        self._keys = keys
        self._error = None
        self._fetched_at = self._clock()
        return keys

    async def _download(self) -> KeySet:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session.get(
                    self.url, headers={"Accept": "application/json"}
                ) as response:
                    if response.status != 200:
                        raise _FetchFailed(f"HTTP {response.status}")
                    body = await _read_limited(response, MAX_DOCUMENT)
        except TimeoutError as exc:
            raise _FetchFailed(f"no answer within {self.timeout:g}s") from exc
        except aiohttp.ClientError as exc:
            raise _FetchFailed(_client_error(exc)) from exc
        except (OSError, ValueError) as exc:  # TLS setup, a URL aiohttp cannot use
            raise _FetchFailed(str(exc) or type(exc).__name__) from exc
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _FetchFailed("the answer is not JSON") from exc
        try:
            return KeySet.from_jwks(
                document, source=f"jwks_url {self.url}", algorithms=self.algorithms, strict=False
            )
        except KeyLoadError as exc:
            raise _FetchFailed(exc.message) from exc


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise _FetchFailed(f"the document is larger than {limit // 1024} KiB")
        chunks.append(chunk)
    return b"".join(chunks)


def _client_error(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    return str(exc) or type(exc).__name__
