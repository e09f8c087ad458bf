"""Waiting for another process or task: a condition polled against a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

_T = TypeVar("_T")


async def eventually(
    probe: Callable[[], Awaitable[_T] | _T],
    *,
    timeout: float = 5.0,
    interval: float = 0.02,
    what: str = "the condition",
) -> _T:
    """Call ``probe`` until it returns something truthy, and return that; fail after ``timeout``.

    ``probe`` may be sync or async. This is how tests wait for another process: a condition
    polled against a deadline, never a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)
