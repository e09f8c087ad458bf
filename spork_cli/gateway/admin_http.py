"""What every admin API handler answers with: JSON, problem+json, and the state store's
failures as one 503 problem (raised by a handler, answered here)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from spork_cli.errors import StateError
from spork_cli.gateway.keys import GATEWAY_TABLE, TableHolder
from spork_cli.problems import problem_response
from spork_cli.state import StateStore


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def problem(status: int, slug: str, detail: str) -> web.Response:
    return problem_response(status, slug, detail)


class NoStore(StateError):
    """The gateway was built without a state store (an app under test)."""


def state_of(request: web.Request) -> tuple[TableHolder, StateStore]:
    """The table switch of the gateway this admin app looks into, and its state store."""
    holder = request.app[GATEWAY_TABLE]
    store = holder.resources.store
    if store is None:
        raise NoStore("this gateway has no state store")
    return holder, store


@web.middleware
async def state_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """A state store that fails a handler's call: 503 ``state-unavailable`` with its reason."""
    try:
        response: web.StreamResponse = await handler(request)
    except StateError as exc:
        return problem(503, "state-unavailable", str(exc))
    return response
