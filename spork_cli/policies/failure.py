"""What a route does when its state store fails a call (``on_error``), in one place for the
limiter, the cache, the breaker and the revocation check:

- ``closed``: the request is refused, 503 ``state-unavailable``;
- ``local``: the same call goes to this process's own store (the fallback of a Redis store);
- ``open``: the request goes on without the feature.

Every failure is told to the store's `StateOutage` (one log line per outage, a counter).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from spork_cli.config.model import OnError
from spork_cli.errors import StateError
from spork_cli.problems import HTTPProblem
from spork_cli.state.outage import StateOutage

Fallback = TypeVar("Fallback")


class StoreFailure(Generic[Fallback]):
    """The ``on_error`` policy of one feature (``op``) of one route; ``local`` is what the
    feature uses when the policy is ``local`` (None: there is no local store, as open)."""

    def __init__(
        self,
        on_error: OnError,
        outage: StateOutage,
        local: Fallback | None,
        op: str,
        doing: str,
    ) -> None:
        self.on_error = on_error
        self.outage = outage
        self.local = local if on_error == "local" else None
        self.op = op  # ratelimit, cache, breaker, revocation: the outage counter's label
        self.doing = doing  # "apply its rate limit": what the 503 says the gateway cannot do

    def fallback(self, exc: StateError) -> Fallback | None:
        """After the store failed with ``exc``: raise the 503 problem (closed), or what to use
        instead (local), or None (open: go on without it)."""
        self.outage.failed(self.op, exc)
        if self.on_error == "closed":
            raise HTTPProblem(
                503, "state-unavailable", f"the gateway cannot {self.doing} right now"
            ) from exc
        return self.local
