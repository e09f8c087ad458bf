"""A route's ``[routes.request_headers]`` and ``[routes.response_headers]``: headers removed,
then set (replacing any of that name), compiled once per table.

Request edits apply to what goes upstream, after the client's hop-by-hop and spoofable headers
are dropped: ``remove`` takes client headers away (a ``Cookie`` an upstream must not see),
``set`` adds or replaces. Headers the gateway itself sends upstream (the identity headers of
``auth.forward_claims``, ``X-Forwarded-*``, ``Forwarded``, ``X-Request-ID``, ``traceparent``)
and framing headers cannot be set: `spork check` refuses them (`spork_cli.headers`), and the
runtime never lets an edit replace them either. Response edits apply to every answer the route
gives, the upstream's (relayed or streamed), one served from the cache, and the gateway's own
problems, last, after the security headers and CORS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from spork_cli.headers import FRAMING

if TYPE_CHECKING:
    from multidict import CIMultiDict

    from spork_cli.config.model import HeaderEdit


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    remove: frozenset[str]  # lower-cased, framing headers left out
    set: tuple[tuple[str, str], ...]  # names a set may not take left out
    replaced: frozenset[str]  # lower-cased names of both: what goes before `set` is added

    def request_items(self, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``items`` (the upstream request's headers, the gateway's own included) with the
        edits made. A name is compared with ``_`` read as ``-`` (with
        ``server.underscores_in_headers`` on, ``X_Secret`` would reach a CGI-style server as
        the ``X-Secret`` an edit removed)."""
        replaced = self.replaced
        kept = [(k, v) for k, v in items if k.lower().replace("_", "-") not in replaced]
        kept.extend(self.set)
        return kept

    def apply(self, headers: CIMultiDict[str]) -> None:
        """Edit a response's headers in place, right before its head is sent."""
        for name in self.remove:
            headers.popall(name, None)
        for name, value in self.set:
            headers[name] = value


def compile_edits(edit: HeaderEdit, protected: frozenset[str]) -> HeaderEdits | None:
    """None when the table is empty: the request path then pays nothing for it. Names in
    ``protected`` are dropped from ``set`` (spork check reports them), framing headers from
    both."""
    remove = frozenset(name.lower() for name in edit.remove) - FRAMING
    pairs = tuple((k, v) for k, v in edit.set.items() if k.lower() not in protected)
    if not remove and not pairs:
        return None
    return HeaderEdits(remove, pairs, remove | {k.lower() for k, _ in pairs})
