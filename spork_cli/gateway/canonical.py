"""The one canonical form of a request path, which the route table matches and the upstream is
sent, so what the gateway checked is what the upstream serves.

Percent-encoded unreserved characters are decoded (``%61dmin`` is ``admin``), the hex of the
other escapes is upper-cased, characters a path may not hold raw are encoded, dot segments are
resolved (RFC 3986 5.2.4) and, when ``merge_slashes`` is on, runs of slashes become one (as
nginx's ``merge_slashes`` and Envoy's option of that name). What cannot be made unambiguous is
refused with a reason (`BadPath`): an encoded ``/`` or ``\\`` (which some servers decode and
some do not), a raw backslash, a raw ``#``, an encoded NUL or control character, a ``%`` that
starts no escape, and dot segments that servers read in different ways (``..;x``). The query
is kept as it was sent.
"""

from __future__ import annotations

import re

# RFC 3986 pchar without "%" plus "/": a path made of these alone, with no dot segment and no
# empty segment, is canonical already (the common case, decided by one regex).
_PLAIN = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# What stays raw in the canonical form; anything else (a quote, a space, "|", "{"...) is
# percent-encoded, which every upstream decodes to the same character.
_RAW = _UNRESERVED | frozenset(b"!$&'()*+,;=:@")
_HEX = frozenset("0123456789abcdefABCDEF")
_SEPARATORS = re.compile("%2F|%5C")  # as _segment spells them
_FORBIDDEN_BYTES = {
    0x2F: "an encoded slash (%2F)",
    0x5C: "an encoded backslash (%5C)",
}


class BadPath(ValueError):
    """A path the gateway refuses (400): ``slug`` names the problem type."""

    def __init__(self, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.slug = slug


def is_canonical(path: str) -> bool:
    """Cheap, and it runs on every request: True only if ``canonical_path`` would return
    ``path`` (no query) unchanged. False for some canonical paths too (``/.well-known``),
    which then take the full check."""
    return (
        _PLAIN.fullmatch(path) is not None
        and "//" not in path
        and "/." not in path
        and path[:1] == "/"
    )


def split_target(raw_path: str) -> tuple[str, str]:
    """``raw_path`` as (path, "?query" or ""); a raw ``#`` in the target is refused, since the
    upstream would drop what follows it while the gateway routed on it."""
    if "#" in raw_path:
        raise BadPath("bad-path", "a raw '#' in the request target (a fragment is never sent)")
    path, mark, query = raw_path.partition("?")
    return path, mark + query


def canonical_target(
    raw: str, *, merge_slashes: bool = True, keep_encoded_slashes: bool = False
) -> str | None:
    """None when the origin-form target ``raw`` is canonical already (the common case, cheap),
    else its canonical form with the query kept; raises BadPath."""
    path = raw.partition("?")[0]
    if is_canonical(path) and "#" not in raw:
        return None
    path, rest = split_target(raw)
    canonical = canonical_path(
        path, merge_slashes=merge_slashes, keep_encoded_slashes=keep_encoded_slashes
    )
    return canonical + rest


def canonical_path(
    path: str, *, merge_slashes: bool = True, keep_encoded_slashes: bool = False
) -> str:
    """The canonical form of ``path`` (no query); raises BadPath. See the module docstring.
    With ``keep_encoded_slashes`` an encoded ``/`` or ``\\`` stays encoded inside its segment
    (``server.encoded_slashes = "keep"``) instead of being refused."""
    if path[:1] != "/":
        raise BadPath("bad-path", "the path must start with '/'")
    segments = [_segment(s, keep_encoded_slashes) for s in path.split("/")[1:]]
    kept: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and kept:
                kept.pop()
            if index == last:
                kept.append("")  # "/a/b/.." is "/a/": the last segment is a directory
            continue
        if _dots(segment):
            raise BadPath(
                "ambiguous-path",
                f"the path segment {segment[:60]!r} is a dot segment to some servers",
            )
        if merge_slashes and not segment and index != last:
            continue
        kept.append(segment)
    resolved = "/" + "/".join(kept)
    if resolved.startswith("//"):
        # "/a/..//b" (slashes kept) resolves to "//b", which reads as a host name.
        resolved = "/" + resolved.lstrip("/")
    return resolved


def _dots(segment: str) -> bool:
    """A segment that some server reads as a dot segment: ``..;x`` (Java's path parameters)
    and, where encoded separators are kept, ``..%2F`` (a server that decodes first)."""
    for piece in _SEPARATORS.split(segment):
        if piece.split(";", 1)[0] in (".", ".."):
            return True
    return False


def _segment(raw: str, keep_encoded_slashes: bool) -> str:
    if _PLAIN.fullmatch(raw):
        return raw
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        char = raw[i]
        if char == "%":
            hexdigits = raw[i + 1 : i + 3]
            if len(hexdigits) != 2 or not _HEX.issuperset(hexdigits):
                raise BadPath("bad-path", f"'%' starts no escape at {raw[i : i + 3]!r}")
            byte = int(hexdigits, 16)
            if byte in _FORBIDDEN_BYTES and not keep_encoded_slashes:
                raise BadPath("ambiguous-path", f"{_FORBIDDEN_BYTES[byte]} in the path")
            if byte < 0x20 or byte == 0x7F:
                raise BadPath(
                    "bad-path", f"an encoded control character (%{hexdigits}) in the path"
                )
            out.append(chr(byte) if byte in _UNRESERVED else "%" + hexdigits.upper())
            i += 3
            continue
        code = ord(char)
        if char == "\\":
            raise BadPath("ambiguous-path", "a backslash in the path")
        if code < 0x20 or code == 0x7F:
            raise BadPath("bad-path", "a control character in the path")
        if code < 0x80 and code in _RAW:
            out.append(char)
        else:
            out.extend(f"%{b:02X}" for b in char.encode("utf-8", "surrogateescape"))
        i += 1
    return "".join(out)
