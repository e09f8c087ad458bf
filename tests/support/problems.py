"""The one check of a gateway error: an RFC 9457 problem document, as spork answers them."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

PROBLEM_TYPE = "urn:spork:problem:"
PROBLEM_KEYS = frozenset({"type", "title", "status", "detail", "request_id"})


class Response(Protocol):
    """What aiohttp's client and test client responses both offer."""

    status: int
    content_type: str

    @property
    def headers(self) -> Any: ...

    async def read(self) -> bytes: ...


async def assert_problem(
    response: Response, status: int, type: str | None = None, **fields: Any
) -> dict[str, Any]:
    """Assert ``response`` is spork's problem document for ``status``, and return its body.

    ``type`` is the slug after ``urn:spork:problem:`` (``"body-too-large"``); other keyword
    arguments are members the body must have with those values. Every problem says what
    went wrong (title, detail), carries the request's ID as its header does, shows no
    traceback, and is served by spork.
    """
    raw = await response.read()
    assert response.status == status, raw
    assert response.content_type == "application/problem+json", raw
    assert b"Traceback" not in raw, raw
    body: dict[str, Any] = orjson.loads(raw)
    assert body.keys() >= PROBLEM_KEYS, body
    assert body["status"] == status, body
    assert body["type"].startswith(PROBLEM_TYPE), body
    if type is not None:
        assert body["type"] == PROBLEM_TYPE + type, body
    assert body["title"] and body["detail"], body
    assert body["request_id"] == response.headers["X-Request-ID"], body
    assert response.headers["Server"] == "spork"
    for name, value in fields.items():
        assert body.get(name) == value, body
    return body
