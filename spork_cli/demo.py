"""The built-in demo "users" service that `spork serve` starts beside the gateway.

It exists so the example gateway.toml answers with nothing else running, and so timeouts,
retries, breakers, streaming and auth can be tried against a real upstream.

Routes accept **any path prefix** before their last fixed segment: ``/users``,
``/api/users`` and ``/v1/api/users`` all reach the same handlers. A route such as
``path = "/api/users"`` therefore works with or without ``strip_prefix``, and so does any
other prefix a user picks. ``PREFIX`` below is any run of whole segments, possibly none.

    GET     /health                   200 {"status": "ok"}
    GET     PREFIX/users              every user, a JSON array
    POST    PREFIX/users              {"name": str, "email"?: str|null} -> 201 + Location
    GET     PREFIX/users/me           {"sub", "roles"} from X-User-Id / X-User-Roles; else 401
    GET     PREFIX/me                 the same
    *       PREFIX/admin/...          {"admin": true, "sub", "method", "path"} with the admin
                                      role in X-User-Roles; else 403
    GET     PREFIX/users/{id}         one user
    PUT     PREFIX/users/{id}         replace name (required) and email
    PATCH   PREFIX/users/{id}         change the fields given
    DELETE  PREFIX/users/{id}         204
    *       PREFIX/slow?ms=2000       answers after ms milliseconds (at most 60000)
    *       PREFIX/flaky?rate=0.5     503 with probability rate; &seed=N makes it repeatable
    *       PREFIX/flaky?fail=N       the first N calls fail, later ones succeed (&key=K keeps
                                      separate counts per K)
    GET     PREFIX/time               {"time": now (UTC), "calls": answers so far}, fresh for
                                      30 s (Cache-Control: public, max-age=30); shows caching
    GET     PREFIX/stream?n=5&interval_ms=100   Server-Sent Events, one chunk per event
    GET     PREFIX/ws                 WebSocket echo

Errors are RFC 9457 ``application/problem+json``. Every response, errors and upgrades
included, carries ``X-Demo-Instance`` so a balancer's choice can be seen from outside.
"""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from spork_cli.errors import UsageError

INSTANCE_HEADER = "X-Demo-Instance"
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
MAX_SLOW_MS = 60_000
DEFAULT_SLOW_MS = 2_000
MAX_STREAM_EVENTS = 10_000
# Any run of whole path segments, possibly empty: "", "api/", "v1/api/".
PREFIX = "/{prefix:(?:[^/]+/)*}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class User:
    id: int
    name: str
    email: str | None


@dataclass
class DemoState:
    """Everything one demo instance remembers; lost when the process exits, by design."""

    name: str
    users: dict[int, User]
    next_id: int
    flaky_calls: dict[str, int] = field(default_factory=dict)
    time_calls: int = 0
    rng: random.Random = field(default_factory=random.Random)


DEMO = web.AppKey("demo", DemoState)


class _Invalid(Exception):
    """A request the demo refuses; turned into a problem response by the handler wrapper."""

    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _seed_users() -> dict[int, User]:
    users = [
        User(1, "Ada Lovelace", "ada@example.com"),
        User(2, "Grace Hopper", "grace@example.com"),
        User(3, "Alan Turing", "alan@example.com"),
    ]
    return {user.id: user for user in users}


# --- responses ---------------------------------------------------------------------------------


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # json_response() wants a str encoder; orjson gives bytes, so build the response directly.
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON, headers=headers)


def _problem(status: int, detail: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """An RFC 9457 problem response; ``about:blank`` means the status says it all."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return web.Response(
        body=orjson.dumps(body), status=status, content_type=PROBLEM_JSON, headers=headers
    )


@web.middleware
async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except _Invalid as exc:
        return _problem(exc.status, exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            detail = f"no demo resource at {request.path}"
        elif exc.status == 405:
            detail = f"{request.method} is not allowed on {request.path}"
        else:
            detail = exc.text or exc.reason
        # Keep Allow (405) and similar; the body and its framing are ours now.
        kept = {
            key: value
            for key, value in exc.headers.items()
            if key.lower() not in ("content-type", "content-length")
        }
        return _problem(exc.status, detail, kept)


async def _stamp_instance(request: web.Request, response: web.StreamResponse) -> None:
    # A signal rather than middleware: streamed and WebSocket responses are sent before a
    # middleware could see them.
    response.headers[INSTANCE_HEADER] = request.app[DEMO].name


# --- request parsing ---------------------------------------------------------------------------


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _Invalid(HTTPStatus.BAD_REQUEST, f"{name} must be a number, got {raw!r}") from None
    if value != value or value < low:  # NaN compares unequal to itself
        raise _Invalid(HTTPStatus.BAD_REQUEST, f"{name} must be at least {low:g}, got {raw!r}")
    return min(value, high)


def _user_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    try:
        return int(raw)
    except ValueError:
        raise _Invalid(HTTPStatus.NOT_FOUND, f"no user with id {raw!r}") from None


def _existing(request: web.Request) -> User:
    user_id = _user_id(request)
    user = request.app[DEMO].users.get(user_id)
    if user is None:
        raise _Invalid(HTTPStatus.NOT_FOUND, f"no user with id {user_id}")
    return user


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Invalid(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _Invalid(HTTPStatus.UNPROCESSABLE_ENTITY, "the body must be a JSON object")
    return data


def _name(data: Mapping[str, Any]) -> str:
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _Invalid(HTTPStatus.UNPROCESSABLE_ENTITY, "name must be a non-empty string")
    return name


def _email(data: Mapping[str, Any]) -> str | None:
    email = data.get("email")
    if email is not None and not isinstance(email, str):
        raise _Invalid(HTTPStatus.UNPROCESSABLE_ENTITY, "email must be a string or null")
    return email


# --- handlers ----------------------------------------------------------------------------------


async def _health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def _list_users(request: web.Request) -> web.Response:
    users = request.app[DEMO].users.values()
    return _json([asdict(user) for user in sorted(users, key=lambda user: user.id)])


async def _create_user(request: web.Request) -> web.Response:
    data = await _body(request)
    state = request.app[DEMO]
    user = User(state.next_id, _name(data), _email(data))
    state.users[user.id] = user
    state.next_id += 1
    # The prefix the client used, so the Location works through the gateway unchanged.
    location = f"/{request.match_info['prefix']}users/{user.id}"
    return _json(asdict(user), status=201, headers={"Location": location})


async def _time(request: web.Request) -> web.Response:
    state = request.app[DEMO]
    state.time_calls += 1
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    # Fresh for 30 s, as the origin says: what a shared cache in front may reuse it for.
    return _json(
        {"time": now, "calls": state.time_calls}, headers={"Cache-Control": "public, max-age=30"}
    )


async def _get_user(request: web.Request) -> web.Response:
    return _json(asdict(_existing(request)))


async def _replace_user(request: web.Request) -> web.Response:
    user = _existing(request)
    data = await _body(request)
    user.name, user.email = _name(data), _email(data)
    return _json(asdict(user))


async def _update_user(request: web.Request) -> web.Response:
    user = _existing(request)
    data = await _body(request)
    # Validate everything before changing anything, so a 422 leaves the user as it was.
    name = _name(data) if "name" in data else user.name
    email = _email(data) if "email" in data else user.email
    user.name, user.email = name, email
    return _json(asdict(user))


async def _delete_user(request: web.Request) -> web.Response:
    user = _existing(request)
    del request.app[DEMO].users[user.id]
    return web.Response(status=204)


async def _me(request: web.Request) -> web.Response:
    sub = request.headers.get("X-User-Id")
    if not sub:
        return _problem(
            401,
            "no X-User-Id header: this route needs the gateway to authenticate the caller",
            {"WWW-Authenticate": "Bearer"},
        )
    return _json({"sub": sub, "roles": _roles(request)})


def _roles(request: web.Request) -> list[str]:
    # Roles arrive comma-separated from forward_claims; space-separated scopes work too.
    return request.headers.get("X-User-Roles", "").replace(",", " ").split()


async def _admin(request: web.Request) -> web.Response:
    """Stands in for an admin-only API: says who called and what they asked for. Like a real
    one behind a gateway, it checks the role the gateway verified (X-User-Roles, which the
    gateway never takes from a client), so a route that forwards here without the admin role
    gets nothing: with strip_prefix routes, more paths than `/api/admin/` can reach it."""
    if "admin" not in _roles(request):
        return _problem(403, "this endpoint needs the admin role, verified by the gateway")
    return _json(
        {
            "admin": True,
            "sub": request.headers.get("X-User-Id"),
            "method": request.method,
            "path": request.raw_path,
        }
    )


async def _slow(request: web.Request) -> web.Response:
    delay_ms = _number(request, "ms", DEFAULT_SLOW_MS, 0, MAX_SLOW_MS)
    await asyncio.sleep(delay_ms / 1000)
    return _json({"slept_ms": delay_ms})


async def _flaky(request: web.Request) -> web.Response:
    """Fail on purpose: counter-based with ``fail=N`` (wins over rate), else random."""
    state = request.app[DEMO]
    if "fail" in request.query:
        fail = _number(request, "fail", 0, 0, float("inf"))
        key = request.query.get("key", "")
        call = state.flaky_calls.get(key, 0) + 1
        state.flaky_calls[key] = call
        if call <= fail:
            return _problem(503, f"call {call} of the first {fail:g} fails on purpose")
        return _json({"ok": True, "call": call})
    rate = _number(request, "rate", 0.5, 0, 1)
    seed = request.query.get("seed")
    rng = random.Random(seed) if seed is not None else state.rng
    if rng.random() < rate:
        return _problem(503, f"failed on purpose (failure rate {rate:g})")
    return _json({"ok": True})


async def _stream(request: web.Request) -> web.StreamResponse:
    count = int(_number(request, "n", 5, 0, MAX_STREAM_EVENTS))
    interval = _number(request, "interval_ms", 100, 0, MAX_SLOW_MS) / 1000
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    await response.prepare(request)
    try:
        for i in range(count):
            if i:
                await asyncio.sleep(interval)
            await response.write(b"data: " + orjson.dumps({"i": i}) + b"\n\n")
        await response.write_eof()
    except ConnectionResetError:
        # The client left mid-stream; there is nobody to tell.
        pass
    return response


async def _echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


# --- app and server ----------------------------------------------------------------------------


def build_demo_app(name: str = "demo") -> web.Application:
    """The demo service as an aiohttp app; ``name`` is sent back in ``X-Demo-Instance``."""
    app = web.Application(middlewares=[_problems])
    app[DEMO] = DemoState(name=name, users=_seed_users(), next_id=4)
    app.on_response_prepare.append(_stamp_instance)

    router = app.router
    router.add_get("/health", _health)
    # Registration order decides between routes that share a prefix: the fixed names
    # (me, slow, ...) must win over users/{id}.
    router.add_route("*", PREFIX + "slow", _slow)
    router.add_route("*", PREFIX + "flaky", _flaky)
    router.add_get(PREFIX + "stream", _stream)
    router.add_get(PREFIX + "time", _time)
    router.add_get(PREFIX + "ws", _echo)
    router.add_get(PREFIX + "users/me", _me)
    router.add_get(PREFIX + "me", _me)
    router.add_route("*", PREFIX + "admin/{tail:.*}", _admin)
    users = router.add_resource(PREFIX + "users")
    users.add_route("GET", _list_users)
    users.add_route("POST", _create_user)
    user = router.add_resource(PREFIX + "users/{id}")
    user.add_route("GET", _get_user)
    user.add_route("PUT", _replace_user)
    user.add_route("PATCH", _update_user)
    user.add_route("DELETE", _delete_user)
    return app


async def start_demo(host: str, port: int, name: str = "demo") -> web.AppRunner:
    """Serve the demo on host:port; the caller owns the runner and must ``cleanup()`` it."""
    runner = web.AppRunner(
        build_demo_app(name),
        # The gateway logs every request it forwards; a second access log would double it.
        access_log=None,
        # /slow and /stream outlive impatient clients; cancel them rather than let shutdown
        # wait for sleeps nobody is listening to.
        handler_cancellation=True,
        shutdown_timeout=1.0,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            reason = f"port {port} is already in use; set [demo] port in gateway.toml"
        else:
            reason = exc.strerror or str(exc)
        raise UsageError(f"cannot start the demo service on {host}:{port}: {reason}") from exc
    return runner
