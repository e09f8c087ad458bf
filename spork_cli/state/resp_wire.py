"""The RESP2 wire format: the client's errors, reply readers (hiredis, or pure Python with
the same results) and command encoding.

    RespError                  anything the client raises on purpose
     ├── ReplyError            the server answered a command with an error reply
     ├── ProtocolError         the server sent bytes that are not RESP2
     └── ConnectionError       cannot connect or authenticate, the connection was lost with
                               the call in flight, or the client is closed (also an OSError)
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

try:
    import hiredis
except ImportError:  # the optional extra `fast`
    hiredis = None  # type: ignore[assignment, unused-ignore]

HAVE_HIREDIS = hiredis is not None
Arg = bytes | str | int | float


class RespError(Exception):
    """Root of every error this client raises on purpose."""


class ReplyError(RespError):
    """An error reply; the message is the server's, e.g. ``NOSCRIPT No matching script``."""


class ProtocolError(RespError):
    """The byte stream is not RESP2; the connection is dropped."""


class ConnectionError(RespError, builtins.ConnectionError):
    """No usable connection; the call may or may not have run on the server."""


class Reader(Protocol):
    def feed(self, data: bytes, /) -> None: ...
    def gets(self) -> Any: ...


NEED_MORE = object()  # what gets() returns until a whole reply has arrived


class _Incomplete(Exception):
    pass


class PythonReader:
    """A pure-Python RESP2 reader with hiredis.Reader's interface and results."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes, /) -> None:
        self._buf += data

    def gets(self) -> Any:
        try:
            reply, self._pos = self._parse(self._pos)
        except _Incomplete:
            # A busy pipeline may never drain to empty, so drop what was parsed already.
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            return NEED_MORE
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        return reply

    def _parse(self, pos: int) -> tuple[Any, int]:
        buf = self._buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            raise _Incomplete
        kind, line, pos = buf[pos], bytes(buf[pos + 1 : end]), end + 2
        if kind == 0x24:  # $ bulk string
            size = self._length(line)
            if size < 0:
                return None, pos
            if len(buf) < pos + size + 2:
                raise _Incomplete
            return bytes(buf[pos : pos + size]), pos + size + 2
        if kind == 0x2A:  # * array
            count = self._length(line)
            if count < 0:
                return None, pos
            items = []
            for _ in range(count):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        if kind == 0x3A:  # : integer
            return self._int(line), pos
        if kind == 0x2B:  # + simple string; hiredis cannot tell it from a bulk string
            return line, pos
        if kind == 0x2D:  # - error
            return ReplyError(line.decode("utf-8", "replace")), pos
        raise ProtocolError(f"unexpected RESP type byte {bytes([kind])!r}")

    @staticmethod
    def _int(line: bytes) -> int:
        # int() alone would also take " 5", "+5" and "1_0", which hiredis refuses.
        if not (line.isdigit() or (line[:1] == b"-" and line[1:].isdigit())):
            raise ProtocolError(f"bad RESP integer {line!r}")
        return int(line)

    @classmethod
    def _length(cls, line: bytes) -> int:
        size = cls._int(line)
        if size < -1:
            raise ProtocolError(f"bad RESP length {size}")
        return size


def new_reader(*, use_hiredis: bool | None = None) -> Reader:
    """A hiredis.Reader when asked for (the default when it is installed), else PythonReader."""
    if use_hiredis is None:
        use_hiredis = HAVE_HIREDIS
    if use_hiredis and hiredis is not None:
        reader: Reader = hiredis.Reader(
            protocolError=ProtocolError, replyError=ReplyError, notEnoughData=NEED_MORE
        )
        return reader
    return PythonReader()


def encode(args: Sequence[Arg]) -> bytes:
    """One command as a RESP array of bulk strings; bool is refused (send 0/1), like hiredis."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int) and not isinstance(arg, bool):
            data = b"%d" % arg
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)


# The same bytes as encode() (a test checks), three times faster.
pack = (
    cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)
    if hiredis is not None
    else encode
)
