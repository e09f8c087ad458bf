"""Request ids (``X-Request-ID``) and W3C trace context (``traceparent``)."""

from __future__ import annotations

import re
from random import getrandbits

_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def request_id(incoming: str | None) -> str:
    """The client's id when it is well-formed, else a fresh one."""
    if incoming is not None and _VALID_ID.fullmatch(incoming):
        return incoming
    return f"{getrandbits(128):032x}"


def traceparent(incoming: str | None) -> str:
    """A traceparent for the upstream hop: same trace, new parent span (this gateway)."""
    if incoming is not None:
        match = _TRACEPARENT.fullmatch(incoming.strip())
        if match and match.group(1) != "0" * 32 and match.group(2) != "0" * 16:
            return f"00-{match.group(1)}-{_span()}-{match.group(3)}"
    return f"00-{_nonzero(128)}-{_span()}-01"


def _span() -> str:
    return _nonzero(64)


def _nonzero(bits: int) -> str:
    # Ids need to be unique, not secret; all-zero ids are invalid in trace context.
    value = getrandbits(bits) or 1
    return f"{value:0{bits // 4}x}"
