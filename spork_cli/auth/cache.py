"""A bounded, per-process cache of verified tokens: a repeated token costs a lookup."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from spork_cli.auth.claims import Identity


@dataclass(slots=True)
class _Entry:
    identity: Identity
    until: float
    checked_until: float = 0.0  # the revocation check holds until then


class TokenCache:
    """A bounded LRU of verified tokens. An entry is never served at or past its token's exp,
    nor past ``max_age`` (so a key dropped from a JWKS stops verifying within that time).
    """

    def __init__(self, size: int, max_age: float = 300.0) -> None:
        self.size = size
        self.max_age = max_age
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> Identity | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if now >= entry.until:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return entry.identity

    def put(self, token: str, identity: Identity, now: float, checked_until: float = 0.0) -> None:
        if self.size <= 0:
            return
        until = now + self.max_age
        if identity.exp is not None:
            until = min(until, identity.exp)
        self._entries[token] = _Entry(identity, until, checked_until)
        self._entries.move_to_end(token)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def checked(self, token: str, now: float) -> bool:
        """Whether the token's last revocation check still holds at ``now``."""
        entry = self._entries.get(token)
        return entry is not None and now < entry.checked_until

    def mark_checked(self, token: str, until: float) -> None:
        entry = self._entries.get(token)
        if entry is not None:
            entry.checked_until = until

    def forget(self, jti: str) -> int:
        """Drop every entry of the token with this jti; how many there were."""
        # A scan, not an index: revocations are rare and the cache is bounded.
        doomed = [token for token, e in self._entries.items() if e.identity.jti == jti]
        for token in doomed:
            del self._entries[token]
        return len(doomed)

    def clear(self) -> None:
        self._entries.clear()
