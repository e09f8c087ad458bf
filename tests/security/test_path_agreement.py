"""Routing and the upstream agree on every spelling of a path.

Behind `spork serve`, each framework has an open route ``/<framework>/svc/`` and a guarded one,
``/<framework>/svc/admin``, on the same service. Each route stamps which one it is into the
request (``[routes.request_headers]``), and every framework echoes the path *it* decoded. For
generated spellings (percent-encoding of any character in either hex case, dot segments, runs
of slashes, encoded separators, NULs, backslashes, fragments, path parameters), the gateway
either refuses the request with a 400 problem, or the route it chose is the one the
framework's own decoded path falls under: no spelling reaches the guarded prefix through the
open route. So with the defaults, with encoded slashes kept (`server.encoded_slashes`), and
with slashes not merged (`server.merge_slashes`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import jwt
import orjson
import pytest

from tests.conftest import StartSpork
from tests.security.frameworks import FRAMEWORKS, serve
from tests.support import LOOPBACK, SporkServer, free_ports

SECRET = "path-agreement-secret-" + "s" * 42
ROUTE = "X-Chosen-Route"

TRICKS = [
    "admin/secret",
    "%61dmin/secret",
    "%61%64%6D%69%6E/secret",
    "ADMIN/secret",
    "x/../admin/secret",
    "x/%2e%2e/admin/secret",
    "x/.%2E/admin/secret",
    "./admin/secret",
    "%2e/admin/secret",
    "/admin/secret",
    "//admin/secret",
    "x//../admin/secret",
    "admin%2fsecret",
    "admin%2Fsecret",
    "x/..%2fadmin/secret",
    "admin%5csecret",
    "admin\\secret",
    "x/..\\admin/secret",
    "admin#secret",
    "x#/../admin/secret",
    "admin;x/secret",
    "x/..;/admin/secret",
    "admin%00/secret",
    "admin%3Bx/secret",
    "%252e%252e/admin/secret",
    "adm%69n",
    "admin",
    "admin/",
    "admi",
    "adminx/secret",
    "x/../../svc/admin",
    "%2E%2E/svc/admin",
    "x/%2e%2e%2fadmin",
    "a dmin",
    "admin%20/secret",
    "%7eadmin",
]
PIECES = [
    "admin", "%61dmin", "ADMIN", "adm%69n", "x", "svc", ".", "..", "%2e", "%2E%2e", ".%2e", "",
    "%2f", "%5C", "\\", ";", "..;", "%00", "%25", "%2561", "a%20b", "~", "secret", "#", "?q=..",
]  # fmt: skip


def spellings(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = list(TRICKS)
    while len(out) < len(TRICKS) + count:
        out.append("/".join(rng.choice(PIECES) for _ in range(rng.randint(1, 5))))
    return out


def route_of(decoded: str, framework: str) -> str | None:
    """The route a decoded path falls under: the longest of the two prefixes, by segment."""
    guarded = f"/{framework}/svc/admin"
    if decoded == guarded or decoded.startswith(guarded + "/"):
        return "admin"
    if decoded.startswith(f"/{framework}/svc/"):
        return "open"
    return None


def config(port: int, admin_port: int, frameworks: dict[str, str], server_extra: str) -> str:
    lines = [
        f'[server]\nhost = "{LOOPBACK}"\nport = {port}\n{server_extra}\n',
        f'[admin]\nhost = "{LOOPBACK}"\nport = {admin_port}\n',
        f'[auth]\nalgorithms = ["HS256"]\nsecret = "{SECRET}"\n',
    ]
    for name, url in frameworks.items():
        lines.append(f'[[services]]\nname = "{name}"\nendpoints = ["{url}"]\n')
        for path, chosen, auth in (("svc/", "open", "none"), ("svc/admin", "admin", "required")):
            lines.append(
                f'[[routes]]\npath = "/{name}/{path}"\nservice = "{name}"\nauth = "{auth}"\n'
                f'[routes.request_headers]\nset = {{ {ROUTE} = "{chosen}" }}\n'
            )
    return "\n".join(lines)


@pytest.fixture(scope="module")
def frameworks() -> Iterator[dict[str, str]]:
    with ExitStack() as stack:
        yield {name: stack.enter_context(serve(name)) for name in FRAMEWORKS}


@pytest.fixture(
    params=["", 'encoded_slashes = "keep"', "merge_slashes = false"],
    ids=["defaults", "encoded-slashes-kept", "slashes-not-merged"],
)
async def gateway(
    spork_server: StartSpork,
    frameworks: dict[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[SporkServer]:
    port, admin_port = free_ports(2)
    file = tmp_path / "gateway.toml"
    file.write_text(config(port, admin_port, frameworks, request.param))
    yield await spork_server(file, port, admin_port)


async def exchange(port: int, target: bytes, bearer: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(
            b"GET " + target + b" HTTP/1.1\r\nHost: gateway.test\r\n"
            b"Authorization: Bearer " + bearer.encode() + b"\r\nConnection: close\r\n\r\n"
        )
        async with asyncio.timeout(10):
            data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_the_route_chosen_is_the_one_each_framework_decodes_the_path_into(
    gateway: SporkServer,
) -> None:
    # A valid token, so both routes forward and the framework's view can be read on each.
    bearer = jwt.encode({"sub": "probe", "exp": int(time.time()) + 600}, SECRET, "HS256")
    refused = forwarded = 0
    disagreements: list[str] = []
    for spelling in spellings(120):
        for framework in FRAMEWORKS:
            target = f"/{framework}/svc/{spelling}".encode()
            status, body = await exchange(gateway.port, target, bearer)
            if status == 400:
                assert b"urn:spork:problem:" in body, (target, body)
                refused += 1
                continue
            if status == 404:
                # No route took it (dot segments led outside /<framework>/svc/): nothing of
                # either route was reached.
                assert b"no-route" in body, (target, body)
                continue
            assert status == 200, (target, status, body)
            forwarded += 1
            seen = orjson.loads(body)
            chosen = seen["headers"].get(ROUTE.lower())
            decoded = route_of(seen["path"], framework)
            if chosen != decoded:
                disagreements.append(
                    f"{target!r}: gateway chose {chosen}, {framework} decoded {seen['path']!r}"
                )
    assert not disagreements, "\n".join(disagreements[:20])
    # Both outcomes occurred, so the run tested something on each side.
    assert refused > 50 and forwarded > 200, (refused, forwarded)
