"""Why the state store failed, in a few words a person can act on (refused, wrong password,
TLS, a denied key), and the check `spork serve` runs against the store as it starts."""

from __future__ import annotations

import socket
import ssl

from spork_cli.errors import StateError
from spork_cli.state import StateStore
from spork_cli.state.resp import ReplyError

# The start-up check waits this long for a connection (and its TLS and AUTH) and one answer.
CHECK_TIMEOUT = 1.0

# Redis's error replies, by their first word, that say what is wrong with the login or the user.
_REPLIES = {
    "WRONGPASS": "wrong password (or user) in the state URL",
    "NOAUTH": "the server requires a password and the state URL has none",
    "NOPERM": "the Redis user may not do this",
}


def describe(exc: BaseException) -> str:
    """One line saying why a store call failed, from the most telling cause in its chain."""
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate rejected: {cause.verify_message or cause.reason}"
        if isinstance(cause, ssl.SSLError):
            reason = cause.reason or str(cause)
            return f"TLS handshake failed: {reason.lower().replace('_', ' ')}"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host: {cause.strerror or cause}"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ReplyError):
            message = str(cause)
            word = message.partition(" ")[0]
            if word in _REPLIES:
                return _REPLIES[word]
            if "password" in message.lower():  # Redis before 6: "ERR invalid password"
                return f"wrong password: {message}"
    return " ".join(str(exc).split()) or type(exc).__name__


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


async def check(store: StateStore, timeout: float = CHECK_TIMEOUT) -> str | None:
    """None when ``store`` answers (a connection, its login and one command within
    ``timeout``); else why not, as `describe` says it."""
    try:
        await store.ping(timeout)
    except StateError as exc:
        return describe(exc)
    return None
