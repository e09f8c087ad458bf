"""10,000 fuzzed requests over raw sockets against a real `spork serve`: malformed request
lines and headers, headers over the limit, bad JSON bodies to a validated route, bad tokens to
an authenticated one, odd paths. No answer is a 5xx, every client error is problem+json, no
traceback is logged, and the process ends as healthy and as large as it was after warm-up.

The inputs come from a seeded generator: SPORK_FUZZ_SEED=N replays (or varies) a run, and
every failure message names the seed.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import jwt
import orjson

from tests.conftest import StartSpork
from tests.reliability.harness import Figures, Sample
from tests.support import (
    LOOPBACK,
    Upstream,
    free_ports,
    gateway_toml,
    proc_status_kib,
)

SEED = int(os.environ.get("SPORK_FUZZ_SEED", "20240611"))
TOTAL = 10_000
WARM_UP = 1_000
CONCURRENCY = 48
ANSWER_TIMEOUT = 5.0
# Once warm (pools, caches, allocator arenas), answering must not keep memory: a leak of even
# 2 KiB per request would add 18 MiB over the 9,000 requests after warm-up. The bounded caches
# are kept small below (auth cache 64 tokens), so what remains is allocator noise, a few MiB.
RSS_GROWTH_LIMIT_KIB = 16 * 1024

SECRET = "reliability-fuzz-secret-" + "s" * 40
OTHER_SECRET = "reliability-fuzz-other-" + "o" * 41
ISSUER = "https://issuer.reliability.test"
AUDIENCE = "spork-reliability"
MAX_BODY = 4096
SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}
ROUTES = f"""
[auth]
algorithms = ["HS256"]
secret = "{SECRET}"
issuer = "{ISSUER}"
audience = ["{AUDIENCE}"]
cache_size = 64

[[routes]]
path = "/open"
service = "svc"

[[routes]]
path = "/private"
service = "svc"
auth = "required"

[[routes]]
path = "/users"
service = "svc"
methods = ["POST"]
body_schema = "user.json"
max_body = {MAX_BODY}
"""

# --- cases -------------------------------------------------------------------------------------

ANY = frozenset(range(200, 500))
# Over a size limit: aiohttp's parser answers 400; 431 and 414 would say more and are right too.
TOO_LARGE = frozenset({400, 414, 431})


@dataclass(frozen=True)
class Case:
    """One request as bytes, and the statuses that are right for it."""

    kind: str
    payload: bytes
    allowed: AbstractSet[int] = ANY
    echo_path: bytes | None = None  # when 200: the raw path the upstream must have seen
    echo_body: bytes | None = None  # when 200: the body the upstream must have seen

    @property
    def head(self) -> bytes:
        return self.payload.partition(b"\r\n\r\n")[0]

    @property
    def method(self) -> bytes:
        return self.payload.split(b" ", 1)[0]

    @property
    def target(self) -> bytes:
        parts = self.payload.split(b"\r\n", 1)[0].split(b" ")
        return parts[1] if len(parts) > 2 else b""


def request(
    method: bytes,
    target: bytes,
    headers: Sequence[bytes] = (),
    body: bytes = b"",
    *,
    length: bool = True,
) -> bytes:
    """An HTTP/1.1 request; ``Connection: close`` so each answer ends with the connection."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: spork.test", *headers]
    if length and (body or method == b"POST"):
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


WORDS = ["users", "x", "a b", "api", "v1", "item", "ü", "€", "日本", "null", "CON", "~me", "é"]
PCHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@"
ODD_TARGETS = [
    b"*", b"", b"open", b"http://spork.test/open/x", b"http://spork.test", b"//open",
    b"spork.test:80", b"/open/x?y=1", b"/open/\x00", b"/open/ x", b"/open/\xff", b"?q",
    b"/open/x#frag", b"https://[::1/open", b"/open/%", b"\\open\\x",
]  # fmt: skip
METHODS = [
    b"GET", b"POST", b"get", b"G\x00T", b"GE T", b"", b"X" * 300, b"PATCH", b"DELETE",
    b"PROPFIND", b"BREW", b"GET\x7f", b"\xc3\xa9", b"M-SEARCH", b"OPTIONS", b"TRACE",
    b"CONNECT", b"PRI",
]  # fmt: skip
VERSIONS = [
    b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/9.9", b"http/1.1",
    b"HTTP/1.1 x", b"HTTP/1", b"HTTP/1.1\x00", b"", b"HTTP/11", b"HTTPS/1.1", b"HTTP/1.01",
]  # fmt: skip
TLS_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64))
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def random_bytes(rng: random.Random, size: int, alphabet: bytes | None = None) -> bytes:
    if alphabet is None:
        return rng.randbytes(size)
    return bytes(rng.choice(alphabet) for _ in range(size))


def request_line_case(rng: random.Random) -> Case:
    roll = rng.random()
    if roll < 0.1:
        junk = random_bytes(rng, rng.randint(1, 200))
        return Case("request line", junk.replace(b"\r\n\r\n", b"") + b"\r\n\r\n")
    if roll < 0.14:
        return Case("request line", rng.choice([TLS_HELLO + b"\r\n\r\n", H2_PREFACE]))
    method = rng.choice(METHODS)
    target = rng.choice(ODD_TARGETS) if rng.random() < 0.5 else odd_path(rng)[0]
    version = rng.choice(VERSIONS)
    space = rng.choice([b" ", b" ", b"  ", b"\t"])
    end = rng.choice([b"\r\n", b"\r\n", b"\n"])
    lead = rng.choice([b"", b"", b"\r\n", b"\n"])
    line = space.join(part for part in (method, target, version) if part or rng.random() < 0.5)
    head = [lead + line, b"Host: spork.test", b"Connection: close"]
    return Case("request line", end.join(head) + end + end)


def random_header(rng: random.Random) -> bytes:
    name = random_bytes(rng, rng.randint(1, 20), b"abcdefghijklmnopqrstuvwxyz-_.!#$%&'*+^`|~XY0")
    value = random_bytes(rng, rng.randint(0, 80), bytes(range(0x20, 0x7F)) + b"\t\x80\xa0\xff")
    return name + b": " + value


MALFORMED_HEADERS = [
    [b"Bad Header"], [b"X-A : b"], [b": empty-name"], [b" folded"], [b"X-A: b", b"\tfolded"],
    [b"X-A: \x00b"], [b"X\x00A: b"], [b"X-A: b\rc"], [b"X(A): b"], [b"X-A"], [b"X-\xff: b"],
    [b"Content-Length: -1"], [b"Content-Length: 1e3"], [b"Content-Length: 0x10"],
    [b"Content-Length: 99999999999999999999999"], [b"Content-Length: 1", b"Content-Length: 2"],
    [b"Transfer-Encoding: chunked", b"Content-Length: 3"], [b"Transfer-Encoding: gzip"],
    [b"Transfer-Encoding: chunked, identity"], [b"Host: other.test"], [b"Expect: nonsense"],
    [b"Connection: keep-alive, Upgrade", b"Upgrade: h2c"], [b"Upgrade: \x01"],
    [b"X-Request-ID: " + b"r" * 500], [b"X-Request-ID: \x7f"], [b"X-Request-ID: <script>"],
    [b"X-User-Id: mallory", b"X-User-Roles: admin"], [b"X-Forwarded-For: ::zz, 1.2.3.4.5"],
    [b'Forwarded: for="[zz;proto=gopher'], [b"Range: bytes=-1-2"], [b"Accept-Encoding: \x7f"],
    [b"If-Modified-Since: yesterday"], [b"Content-Type: \x01"], [b"Cookie: ;;;=;a"],
    [b"Content-Encoding: gzip"], [b"X-A: caf\xc3\xa9"], [b"X-A: \xff\xfe"], [b"Cookie: a=\xff"],
    [b"User-Agent: \x80"],
]  # fmt: skip


def header_case(rng: random.Random) -> Case:
    headers: list[bytes] = []
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.6:
            headers += rng.choice(MALFORMED_HEADERS)
        else:
            headers.append(random_header(rng))
    body = b"hi" if rng.random() < 0.3 else b""
    if any(h.lower().startswith(b"transfer-encoding") for h in headers):
        # Always a whole body: the gateway would rightly wait for the rest of a cut one.
        body = rng.choice([b"zz\r\n", b"5\r\nhello\r\n0\r\n\r\n"])
    if body == b"hi" and b"Content-Encoding: gzip" in headers:
        # Forwarded as sent: the upstream inflates it, so it must be what it says it is.
        body = gzip.compress(body)
    # A declared length longer than the body would only make the gateway wait for the rest.
    length = not any(h.lower().startswith((b"content-length", b"transfer")) for h in headers)
    return Case("headers", request(b"GET", b"/open/x", headers, body, length=length))


def huge_header_case(rng: random.Random) -> Case:
    roll = rng.random()
    if roll < 0.3:
        value = random_bytes(rng, rng.randint(16_385, 24_000), b"abcdefghij0123456789")
        return Case("huge headers", request(b"GET", b"/open/x", [b"X-Big: " + value]), TOO_LARGE)
    if roll < 0.4:
        name = b"X-" + random_bytes(rng, rng.randint(16_385, 20_000), b"abcdefgh")
        return Case("huge headers", request(b"GET", b"/open/x", [name + b": v"]), TOO_LARGE)
    if roll < 0.55:
        many = [b"X-H%d: %d" % (i, i) for i in range(rng.randint(129, 400))]
        return Case("huge headers", request(b"GET", b"/open/x", many), TOO_LARGE)
    if roll < 0.7:
        target = b"/open/" + random_bytes(rng, rng.randint(8_200, 20_000), b"abcdef")
        return Case("huge headers", request(b"GET", target), TOO_LARGE)
    if roll < 0.8:
        token = random_bytes(rng, rng.randint(16_400, 24_000), b"abcXYZ012-_.")
        auth = [b"Authorization: Bearer " + token]
        return Case("huge headers", request(b"GET", b"/private/x", auth), TOO_LARGE)
    # Just under the limits: answered as usual.
    if roll < 0.9:
        value = random_bytes(rng, rng.randint(4_000, 8_000), b"abcdefghij")
        return Case("huge headers", request(b"GET", b"/open/x", [b"X-Big: " + value]), {200})
    target = b"/open/" + random_bytes(rng, rng.randint(4_000, 8_100), b"abcdef")
    return Case("huge headers", request(b"GET", target), frozenset({200}), echo_path=target)


def json_case(rng: random.Random) -> Case:
    json_type = [b"Content-Type: application/json"]
    valid: dict[str, Any] = {"name": rng.choice(WORDS)}
    if rng.random() < 0.5:
        valid["age"] = rng.randint(0, 120)
    if rng.random() < 0.3:
        valid["tags"] = rng.sample(WORDS, 2)
    good = json.dumps(valid).encode()
    roll = rng.random()

    def case(body: bytes, allowed: set[int], headers: list[bytes] = json_type) -> Case:
        echo = body if allowed == {200} else None
        return Case("json body", request(b"POST", b"/users", headers, body), allowed, None, echo)

    if roll < 0.1:
        return case(good, {200})
    if roll < 0.3:
        wrong = rng.choice(
            [{}, [], "name", 1, None, True, {"name": 5}, {"name": "x", "extra": 1},
             {"name": "x", "age": -1}, {"name": "x" * 41}, {"name": "x", "age": 1.5},
             {"name": "x", "tags": [1, 2]}, {"NAME": "x"}, [valid] * 3]
        )  # fmt: skip
        return case(json.dumps(wrong).encode(), {422})
    if roll < 0.45:
        return case(good[: rng.randint(0, len(good) - 1)], {400})
    if roll < 0.55:
        return case(b"{" + random_bytes(rng, rng.randint(0, 60)).replace(b"}", b""), {400})
    if roll < 0.7:
        broken = rng.choice(
            [b'{"name": "\xff"}', b'{"name": NaN}', b"{'name': 'x'}", b'{"name": "x",}',
             b'{"name": "x"} trailing', b'{"name": "x" /* c */}', b"", b" ", b'{"name": "\x00"}',
             b'{"name": "x"}{"name": "y"}', b'{"name": "\\ud800"}', b"\xef\xbb\xbf{}"]
        )  # fmt: skip
        return case(broken, {400})
    if roll < 0.75:
        depth = rng.randint(100, 2000)  # orjson refuses more than 1024 levels
        return case(b"[" * depth + b"]" * depth, {400, 422})
    if roll < 0.8:
        digits = b"9" * rng.randint(20, 2000)
        # JSON numbers have no range: a huge integer is an integer (or refused as unreadable).
        return case(b'{"name": "x", "age": ' + digits + b"}", {200, 400, 422})
    if roll < 0.85:
        padding = b" " * rng.randint(MAX_BODY, 2 * MAX_BODY)
        return case(good + padding, {413})
    if roll < 0.95:
        content_type = rng.choice(
            [[], [b"Content-Type: text/plain"], [b"Content-Type: application/xml"],
             [b"Content-Type: multipart/form-data; boundary=x"], [b"Content-Type: json"],
             [b"Content-Type: application/jsonx"], [*json_type, b"Content-Encoding: gzip"]]
        )  # fmt: skip
        # Plain JSON labelled gzip is inflated to be checked, and does not inflate.
        return case(good, {400} if json_type[0] in content_type else {415}, content_type)
    # Chunked: the validator reads the stream, well framed or not.
    if rng.random() < 0.5:
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(good), good)
        return Case(
            "json body",
            request(b"POST", b"/users", [*json_type, b"Transfer-Encoding: chunked"], body,
                    length=False),
            frozenset({200}),
            echo_body=good,
        )  # fmt: skip
    body = rng.choice([b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}\r\n1\r\n\r\n\r\n", b"0\r\n\r\nxx"])
    headers = [*json_type, b"Transfer-Encoding: chunked"]
    return Case("json body", request(b"POST", b"/users", headers, body, length=False), {400})


def b64(data: bytes) -> str:
    return jwt.utils.base64url_encode(data).decode()


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    data: dict[str, Any] = {
        "sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600,
    }  # fmt: skip
    data.update(changes)
    return {name: value for name, value in data.items() if value is not None}


def token_case(rng: random.Random) -> Case:
    now = int(time.time())
    roll = rng.random()
    allowed = {401}
    if roll < 0.12:
        sub = rng.choice(["alice", "bob", "ü", "日本", "a\x01b", "a\x7fb", "x" * 200, "\ud800"])
        token = jwt.encode(claims(sub=sub), SECRET, algorithm="HS256")
        allowed = {200, 401}  # a claim that cannot be a header value may be refused
    elif roll < 0.5:
        bad = rng.choice(
            [claims(exp=now - 120), claims(nbf=now + 600), claims(iss="https://evil.test"),
             claims(aud="someone-else"), claims(exp=None), claims(exp="tomorrow"),
             claims(iat="now"), claims(sub=None, aud=[]), claims(aud=["x", 5])]
        )  # fmt: skip
        key = rng.choice([SECRET, OTHER_SECRET])
        token = jwt.encode(bad, key, algorithm="HS256")
    elif roll < 0.6:
        token = jwt.encode(claims(), OTHER_SECRET, algorithm=rng.choice(["HS256", "HS512"]))
    elif roll < 0.7:
        header = rng.choice([{"alg": "none"}, {"alg": "None"}, {"alg": "HS512"}, {"alg": 5}, {}])
        token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}."
        if rng.random() < 0.5:
            token += b64(random_bytes(rng, 32))
    elif roll < 0.85:
        # A good token with a few characters changed: a change in the signature's last
        # character can leave its bytes as they were.
        chars = list(jwt.encode(claims(), SECRET, algorithm="HS256"))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(chars))
            chars[at] = rng.choice("AZaz09-_.=+/ %")
        token = "".join(chars)
        allowed = {200, 401}
    else:
        token = rng.choice(
            ["", "x", "a.b", "a.b.c", "...", "e30.e30.", "Bearer", "null", "💥.💥.💥",
             b64(random_bytes(rng, 50)) + "." + b64(random_bytes(rng, 50)) + ".x"]
        )  # fmt: skip
    scheme = rng.choice(
        [b"Bearer ", b"Bearer ", b"bearer ", b"BEARER  ", b"Basic ", b"", b"Bearer\t"]
    )
    value = scheme + token.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:
        value = scheme + random_bytes(rng, rng.randint(1, 100), bytes(range(0x21, 0x7F)) + b"\xff")
        allowed = {401}
    if scheme.strip().lower() not in (b"bearer", b""):
        allowed = {401}
    headers = [b"Authorization: " + value]
    if rng.random() < 0.05:
        headers.append(b"Authorization: Bearer " + jwt.encode(claims(), SECRET).encode())
        allowed = {200, 400, 401}
    return Case("token", request(b"GET", b"/private/x", headers), frozenset(allowed))


DOT_SEGMENTS = [b".", b"..", b"%2e", b"%2E%2e", b".%2e", b"..;", b"%2e%2e%2f"]


def odd_path(rng: random.Random) -> tuple[bytes, bool]:
    """A path, whether it holds only valid URI characters, and whether it has dot segments."""
    segments: list[bytes] = []
    clean = True
    for _ in range(rng.randint(1, 6)):
        roll = rng.random()
        if roll < 0.3:
            segment = rng.choice(WORDS).encode().replace(b" ", b"%20")
            segment = b"".join(b"%%%02X" % c if c > 0x7F else bytes([c]) for c in segment)
        elif roll < 0.45:
            segment = b"".join(b"%%%02x" % c for c in random_bytes(rng, rng.randint(1, 6)))
        elif roll < 0.55:
            segment = rng.choice(DOT_SEGMENTS)
        elif roll < 0.65:
            segment = random_bytes(rng, rng.randint(1, 12), PCHARS)
        elif roll < 0.72:
            segment = rng.choice([b"%zz", b"%", b"%2", b"%%", b"%g0", b"%2F", b"%00", b"%5c"])
            clean = clean and segment not in (b"%zz", b"%", b"%2", b"%%", b"%g0")
        elif roll < 0.8:
            segment = random_bytes(rng, rng.randint(200, 1200), PCHARS)
        else:
            # Bytes a request target may not hold: raw unicode, controls, spaces, NUL.
            segment = rng.choice(
                [b"\xc3\xa9", b"\xe2\x82\xac", b"\xff", b"\x00", b"\x01", b"\x7f", b"a b",
                 b"\t", b"<>", b'"', b"{}", b"|", b"^", b"`", b"\\"]
            )  # fmt: skip
            clean = False
        segments.append(segment)
    path = b"/".join(segments)
    if rng.random() < 0.2:
        path += rng.choice([b"/", b"//", b"?a=1&b=%zz", b"?" + random_bytes(rng, 20, PCHARS)])
    return path, clean


def route_status(path: bytes) -> int:
    """What a GET of ``path`` gets from the fuzzed gateway's routes."""
    path = path.split(b"?")[0]
    for prefix, status in ((b"/open", 200), (b"/private", 401), (b"/users", 405)):
        if path == prefix or path.startswith(prefix + b"/"):
            return status
    return 404


def path_case(rng: random.Random) -> Case:
    path, clean = odd_path(rng)
    prefix = rng.choice([b"/open/", b"/open/", b"/open/", b"/private/", b"/users/", b"/nowhere/"])
    target = prefix + path
    if not clean:
        return Case("path", request(b"GET", target))
    resolved = expected_path(target)
    if resolved is None:
        return Case("path", request(b"GET", target), frozenset({400}))
    status = route_status(resolved)
    return Case("path", request(b"GET", target), frozenset({status}), echo_path=resolved)


UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
# What no spelling may hold: an encoded separator, NUL or control, a raw backslash, a "%"
# that starts no escape.
REFUSED = re.compile(rb"%(2f|5c|[01][0-9a-f]|7f)|\\|%(?![0-9a-f]{2})", re.IGNORECASE)


def expected_path(target: bytes) -> bytes | None:
    """The path the upstream must get for ``target``: unreserved escapes decoded and the hex of
    the others upper-cased, runs of slashes merged, then RFC 3986 5.2.4 as urllib resolves it
    (a leading `//` made one slash); None when the gateway must refuse it: what `REFUSED`
    finds, or dots that servers read in different ways (`..;`)."""
    path, mark, query = target.partition(b"?")
    if REFUSED.search(path):
        return None

    def decode(m: re.Match[bytes]) -> bytes:
        byte = int(m[1], 16)
        return bytes([byte]) if byte in UNRESERVED else b"%" + m[1].upper()

    segments = []
    for segment in re.sub(rb"/+", b"/", ESCAPE.sub(decode, path)).split(b"/"):
        if segment.split(b";")[0] in (b".", b"..") and b";" in segment:
            return None
        segments.append(segment)
    # urljoin would treat `;` as the start of parameters: keep it out of its way.
    joined = b"/".join(segments).replace(b";", b"\x01").decode()
    resolved = urlsplit(urljoin("http://h/", joined)).path.encode().replace(b"\x01", b";")
    if resolved.startswith(b"//"):
        resolved = b"/" + resolved.lstrip(b"/")
    return resolved + mark + query


KINDS: dict[str, tuple[int, Callable[[random.Random], Case]]] = {
    "request line": (1_500, request_line_case),
    "headers": (1_500, header_case),
    "huge headers": (600, huge_header_case),
    "json body": (2_000, json_case),
    "token": (2_200, token_case),
    "path": (2_200, path_case),
}


def cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    found = [make(rng) for count, make in KINDS.values() for _ in range(count)]
    rng.shuffle(found)
    assert len(found) == TOTAL
    return found


# --- the exchange ------------------------------------------------------------------------------


@dataclass
class Answer:
    """What came back on one connection: an HTTP answer, or what happened instead."""

    status: int | None = None
    headers: dict[bytes, bytes] | None = None
    body: bytes = b""
    error: str | None = None

    def header(self, name: bytes) -> bytes:
        return (self.headers or {}).get(name, b"")


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head[:-4].split(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
    else:
        body = await reader.read()
    return Answer(status, headers, body)


async def exchange(port: int, payload: bytes) -> Answer:
    try:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
    except OSError as exc:
        return Answer(error=f"connect: {exc!r}")
    try:
        writer.write(payload)
        return await asyncio.wait_for(read_answer(reader), ANSWER_TIMEOUT)
    except asyncio.IncompleteReadError as exc:
        return Answer(error=f"closed after {len(exc.partial)} bytes: {exc.partial[:100]!r}")
    except (OSError, TimeoutError, ValueError, IndexError) as exc:
        return Answer(error=repr(exc))
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


# --- judging -----------------------------------------------------------------------------------


def problems(case: Case, answer: Answer, upstream: str) -> list[str]:
    """What is wrong with ``answer`` to ``case`` (empty when it is right)."""
    if answer.status is None:
        return [f"no HTTP answer: {answer.error}"]
    found = []
    if b"Traceback" in answer.body:
        found.append("a traceback in the answer")
    if answer.status >= 500:
        return [*found, f"status {answer.status}: {answer.body[:200]!r}"]
    if answer.status not in case.allowed:
        found.append(f"status {answer.status}, expected one of {sorted(case.allowed)}")
    if answer.status >= 400:
        content_type = answer.header(b"content-type").split(b";")[0]
        if content_type != b"application/problem+json":
            found.append(f"a {answer.status} as {content_type!r}: {answer.body[:100]!r}")
        else:
            problem = orjson.loads(answer.body)
            if problem.get("status") != answer.status or not problem.get("title"):
                found.append(f"problem {problem} for a {answer.status}")
    elif answer.status == 200:
        if answer.header(b"x-upstream") != upstream.encode():
            found.append("a 200 that did not come from the upstream")
        echo = json.loads(answer.body)  # the echo may hold lone surrogates: not orjson
        if case.echo_path is not None and echo["raw_path"].encode() != case.echo_path:
            found.append(f"forwarded as {echo['raw_path'][:100]!r}")
        if case.echo_body is not None and echo["body"].encode() != case.echo_body:
            found.append(f"body forwarded as {echo['body'][:100]!r}")
    return found


async def fire(port: int, batch: list[Case], samples: list[Sample]) -> list[Answer]:
    """Send ``batch``, CONCURRENCY connections at a time; the answers in the same order."""
    answers: list[Answer] = [Answer()] * len(batch)
    queue = iter(enumerate(batch))

    async def worker() -> None:
        for index, case in queue:
            started = time.monotonic()
            answer = await exchange(port, case.payload)
            samples.append(Sample(started, time.monotonic(), answer.status, answer.error))
            answers[index] = answer

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return answers


# --- the test ----------------------------------------------------------------------------------


async def test_10000_fuzzed_requests_get_no_5xx_no_traceback_and_keep_memory_flat(
    tmp_path: Path,
    upstream: Upstream,
    spork_server: StartSpork,
    http: aiohttp.ClientSession,
    figures: Figures,
) -> None:
    port, admin_port = free_ports(2)
    config = tmp_path / "gateway.toml"
    (tmp_path / "user.json").write_text(json.dumps(SCHEMA))
    config.write_text(gateway_toml(port, admin_port, {"svc": upstream.url}, {}, extra=ROUTES))
    server = await spork_server(config, port, admin_port)
    every = cases(SEED)
    seed = f"SPORK_FUZZ_SEED={SEED}"

    samples: list[Sample] = []
    started = time.monotonic()
    answers = await fire(port, every[:WARM_UP], samples)
    warm_kib = proc_status_kib(server.pid)
    answers += await fire(port, every[WARM_UP:], samples)
    end_kib = proc_status_kib(server.pid)
    elapsed = time.monotonic() - started

    async with http.get(f"{server.admin_url}/health") as health:
        assert health.status == 200, (seed, await health.text())
    assert server.running, (seed, server.output()[-3000:])

    wrong: list[str] = []
    for case, answer in zip(every, answers, strict=True):
        for problem in problems(case, answer, upstream.name):
            wrong.append(f"[{case.kind}] {problem}\n    request: {case.payload[:200]!r}")
    tracebacks = [line[:300] for line in server.output().splitlines() if "Traceback" in line]
    classes = Counter(f"{a.status // 100}xx" if a.status else "no answer" for a in answers)
    figures.record(
        "fuzz: 10,000 malformed requests",
        samples,
        len(wrong),
        note=f"{elapsed:.1f} s; RSS {warm_kib / 1024:.1f} MiB after warm-up, "
        f"{end_kib / 1024:.1f} MiB at the end; "
        + ", ".join(f"{name} {count:,}" for name, count in sorted(classes.items())),
    )

    assert not wrong, f"{seed}: {len(wrong)} wrong answers:\n" + "\n".join(wrong[:15])
    assert not tracebacks, f"{seed}: tracebacks logged:\n" + "\n".join(tracebacks)
    assert end_kib - warm_kib < RSS_GROWTH_LIMIT_KIB, (seed, warm_kib, end_kib)
    # Every kind reached the gateway's answers it was meant for, so none was all noise.
    for kind in KINDS:
        kind_statuses = {a.status for c, a in zip(every, answers, strict=True) if c.kind == kind}
        assert len(kind_statuses) > 1, (seed, kind, kind_statuses)
