"""The in-process backend (the embedded default): bounded, expiring, one process only."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from spork_cli.config.model import State
from spork_cli.state import instance_key, revoked_key


class MemoryStore:
    backend = "memory"

    def __init__(self, config: State, clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = config.prefix
        self.max_keys = config.max_keys
        self.clock = clock
        # key -> (expires_at or None, value); insertion order gives eviction order
        self._data: OrderedDict[str, tuple[float | None, bytes]] = OrderedDict()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()

    async def ping(self) -> None:
        return None

    def _get(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires is not None and expires <= self.clock():
            del self._data[key]
            return None
        return value

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        expires = self.clock() + ttl if ttl is not None else None
        self._data.pop(key, None)
        self._data[key] = (expires, value)
        while len(self._data) > self.max_keys:
            self._data.popitem(last=False)

    async def revoke(self, jti: str, ttl: float) -> None:
        if ttl > 0:
            self._set(revoked_key(self.prefix, jti), b"1", ttl)

    async def is_revoked(self, jti: str) -> bool:
        return self._get(revoked_key(self.prefix, jti)) is not None

    async def heartbeat(self, instance: str, info: bytes, ttl: float) -> None:
        self._set(instance_key(self.prefix, instance), info, ttl)

    async def instances(self) -> dict[str, bytes]:
        head = instance_key(self.prefix, "")
        found: dict[str, bytes] = {}
        for key in list(self._data):
            if key.startswith(head):
                value = self._get(key)
                if value is not None:
                    found[key[len(head) :]] = value
        return found
