"""JSON Schema validation of request bodies through the gateway: 415 for what is not JSON, 400 for
what does not parse, 422 listing every schema error with its JSON Pointer, and valid bodies sent
upstream byte for byte, whichever way they came (small, large, chunked)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spork_cli.config.model import GatewayConfig
from spork_cli.errors import ConfigError
from spork_cli.gateway.compile import compile_table
from tests.edge.conftest import Backend, Client, Gateway, edge_config, problem

SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
        "a/b~c": {"type": "string"},
    },
    "additionalProperties": False,
}
JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
def schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "user.json"
    path.write_text(json.dumps(SCHEMA))
    return path


def validated(backend_url: str, schema: Path, **route: Any) -> GatewayConfig:
    return edge_config(backend_url, {"path": "/", "body_schema": str(schema), **route})


async def test_valid_body_is_forwarded_byte_for_byte(
    gateway: Gateway, backend: Backend, schema_file: Path
) -> None:
    client = await gateway(validated(backend.url, schema_file))
    # Odd spacing, key order, escapes and a duplicate key: nothing is re-encoded on the way.
    body = b'{ "age" : 36,\n  "name":"Ada \\u00e9\xc3\xa9", "name": "Ada"  }'
    async with client.post("/users", data=body, headers=JSON_HEADERS) as response:
        assert response.status == 200
    [seen] = backend.seen
    assert seen.body == body
    assert seen.headers["Content-Length"] == str(len(body))


async def test_large_valid_body_is_forwarded_byte_for_byte(
    gateway: Gateway, backend: Backend, schema_file: Path
) -> None:
    # Over 64 KiB: the proxy streams such bodies instead of sending them in one piece.
    body = orjson.dumps({"name": "x", "tags": [f"tag-{i}" for i in range(20000)]})
    assert len(body) > 200 * 1024
    client = await gateway(validated(backend.url, schema_file))
    async with client.put("/users/1", data=body, headers=JSON_HEADERS) as response:
        answer = await response.json()
    assert answer == {
        "method": "PUT",
        "path": "/users/1",
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }


async def test_chunked_valid_body_is_forwarded_byte_for_byte(
    gateway: Gateway, backend: Backend, schema_file: Path
) -> None:
    body = orjson.dumps({"name": "chunked", "tags": ["t" * 100] * 900})

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 7000):
            yield body[start : start + 7000]

    client = await gateway(validated(backend.url, schema_file))
    async with client.patch("/users/1", data=chunks(), headers=JSON_HEADERS) as response:
        assert response.status == 200
    [seen] = backend.seen
    assert seen.body == body


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
        "application/vnd.api+json",
    ],
)
async def test_json_media_types_are_accepted(
    gateway: Gateway, backend: Backend, schema_file: Path, content_type: str
) -> None:
    client = await gateway(validated(backend.url, schema_file))
    headers = {"Content-Type": content_type}
    async with client.patch("/users/1", data=b'{"name": "a"}', headers=headers) as response:
        assert response.status == 200
    assert backend.calls == 1


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "text/json", None]
)
async def test_other_or_missing_content_type_is_415(
    gateway: Gateway, backend: Backend, schema_file: Path, content_type: str | None
) -> None:
    client = await gateway(validated(backend.url, schema_file))
    headers = {"Content-Type": content_type} if content_type else {}
    async with client.post(
        "/users", data=b'{"name": "a"}', headers=headers, skip_auto_headers=["Content-Type"]
    ) as response:
        body = await problem(response, 415)
    assert body["type"] == "urn:spork:problem:unsupported-media-type"
    assert backend.calls == 0


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_a_compressed_body_is_checked_inflated_and_forwarded_as_sent(
    gateway: Gateway, backend: Backend, schema_file: Path, coding: str
) -> None:
    import gzip
    import zlib

    client = await gateway(validated(backend.url, schema_file))
    sent = (gzip.compress if coding == "gzip" else zlib.compress)(b'{"name": "a"}')
    headers = {**JSON_HEADERS, "Content-Encoding": coding}
    async with client.post("/users", data=sent, headers=headers) as response:
        assert response.status == 200, await response.text()
    [seen] = backend.seen
    assert seen.body == sent
    assert seen.headers["Content-Encoding"] == coding


async def test_a_compressed_body_that_breaks_the_schema_is_422(
    gateway: Gateway, backend: Backend, schema_file: Path
) -> None:
    import gzip

    client = await gateway(validated(backend.url, schema_file))
    headers = {**JSON_HEADERS, "Content-Encoding": "gzip"}
    async with client.post("/users", data=gzip.compress(b'{"name": 5}'), headers=headers) as r:
        body = await problem(r, 422)
    assert body["type"] == "urn:spork:problem:invalid-body"
    assert backend.calls == 0


@pytest.mark.parametrize("cut", ["truncated", "garbage"])
async def test_compressed_data_that_does_not_inflate_is_400(
    gateway: Gateway, backend: Backend, schema_file: Path, cut: str
) -> None:
    import gzip

    client = await gateway(validated(backend.url, schema_file))
    whole = gzip.compress(b'{"name": "a"}')
    data = whole[:-6] if cut == "truncated" else b"\x1f\x8b" + b"\xff" * 40
    headers = {**JSON_HEADERS, "Content-Encoding": "gzip"}
    async with client.post("/users", data=data, headers=headers) as r:
        body = await problem(r, 400)
    assert body["type"] == "urn:spork:problem:bad-request-body"
    assert backend.calls == 0


@pytest.mark.parametrize("coding", ["compress", "br, gzip", "x-unknown"])
async def test_a_content_coding_the_route_cannot_read_is_415(
    gateway: Gateway, backend: Backend, schema_file: Path, coding: str
) -> None:
    client = await gateway(validated(backend.url, schema_file))
    headers = {**JSON_HEADERS, "Content-Encoding": coding}
    async with client.post("/users", data=b"\x1f\x8b not read", headers=headers) as r:
        body = await problem(r, 415)
        assert r.headers["Accept-Encoding"] == "identity, gzip, x-gzip, deflate"
    assert body["type"] == "urn:spork:problem:unsupported-content-encoding"
    assert backend.calls == 0


@pytest.mark.parametrize("data", [b'{"name": "a"', b"", b"{'name': 'a'}", b"\xff\xfe", b"NaN"])
async def test_malformed_json_is_400(
    gateway: Gateway, backend: Backend, schema_file: Path, data: bytes
) -> None:
    client = await gateway(validated(backend.url, schema_file))
    async with client.post("/users", data=data, headers=JSON_HEADERS) as response:
        body = await problem(response, 400)
    assert body["type"] == "urn:spork:problem:invalid-json"
    assert backend.calls == 0


@pytest.mark.observes("routes.body_schema")
async def test_schema_errors_are_422_listing_every_error_with_its_path(
    gateway: Gateway, backend: Backend, schema_file: Path
) -> None:
    client = await gateway(validated(backend.url, schema_file))
    data = {"age": -1, "tags": ["ok", 2, None], "a/b~c": 5, "extra": True}
    async with client.post("/users", json=data) as response:
        body = await problem(response, 422)
    assert body["type"] == "urn:spork:problem:invalid-body"
    errors = body["errors"]
    assert sorted(e["path"] for e in errors) == ["", "", "/age", "/a~1b~0c", "/tags/1", "/tags/2"]
    messages = {e["path"]: e["message"] for e in errors if e["path"]}
    assert messages["/age"] == "-1 is less than the minimum of 0"
    assert messages["/tags/1"] == '2 is not of type "string"'
    root = sorted(e["message"] for e in errors if e["path"] == "")
    assert any("name" in m and "required" in m for m in root), root
    assert any("extra" in m for m in root), root
    assert "truncated" not in body
    assert backend.calls == 0


async def test_a_flood_of_errors_is_cut_at_a_hundred(
    gateway: Gateway, backend: Backend, schema_file: Path
) -> None:
    client = await gateway(validated(backend.url, schema_file))
    async with client.post("/users", json={"name": "a", "tags": list(range(500))}) as response:
        body = await problem(response, 422)
    assert [e["path"] for e in body["errors"]] == [f"/tags/{i}" for i in range(100)]
    assert body["truncated"] is True


@pytest.mark.parametrize("method", ["GET", "DELETE", "HEAD", "OPTIONS"])
async def test_methods_without_a_body_are_not_checked(
    gateway: Gateway, backend: Backend, schema_file: Path, method: str
) -> None:
    client = await gateway(validated(backend.url, schema_file))
    async with client.request(method, "/users/1", data=b"not json") as response:
        assert response.status == 200
    assert backend.calls == 1


@pytest.mark.observes("routes.body_schema")
async def test_other_routes_are_not_checked(
    gateway: Gateway, backend: Backend, schema_file: Path
) -> None:
    config = edge_config(
        backend.url, {"path": "/users", "body_schema": str(schema_file)}, {"path": "/"}
    )
    client = await gateway(config)
    async with client.post("/files", data=b"raw", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 200
    async with client.post("/users", data=b"raw", headers={"Content-Type": "text/plain"}) as r:
        await problem(r, 415)
    assert backend.calls == 1


async def test_validation_runs_before_the_breaker(
    gateway: Gateway, backend: Backend, schema_file: Path
) -> None:
    config = edge_config(
        backend.url,
        {"path": "/", "body_schema": str(schema_file)},
        services=[
            {
                "name": "svc",
                "endpoints": [backend.url],
                "retries": {"attempts": 0},
                "breaker": {"failures": 1, "cooldown": "1m"},
            }
        ],
    )
    client = await gateway(config)
    async with client.post("/users?status=500", json={"name": "a"}) as response:
        assert response.status == 500
    async with client.post("/users", json={"name": "a"}) as response:
        body = await problem(response, 503)
        assert body["type"] == "urn:spork:problem:breaker-open"
    # An invalid body is the client's fault: it is answered whatever the service's state.
    async with client.post("/users", json={"age": 1}) as response:
        await problem(response, 422)
    assert backend.calls == 1


async def test_validation_runs_after_auth(
    gateway: Gateway, backend: Backend, schema_file: Path
) -> None:
    config = edge_config(
        backend.url,
        {"path": "/", "body_schema": str(schema_file), "auth": "required"},
        auth={"secret": "s" * 40},
    )
    client = await gateway(config)
    async with client.post("/users", data=b"not json", headers=JSON_HEADERS) as response:
        await problem(response, 401)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot be read"),
        ("{not json", "is not valid JSON"),
        ('{"type": 12}', "is not a valid JSON Schema"),
    ],
)
async def test_a_broken_schema_file_refuses_the_config(
    backend: Backend, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "schema.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        await compile_table(validated(backend.url, path))


async def test_schema_path_is_relative_to_the_config_file(
    aiohttp_client: Any, backend: Backend, tmp_path: Path
) -> None:
    from spork_cli.gateway.app import build_app

    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "user.json").write_text(json.dumps(SCHEMA))
    config = validated(backend.url, Path("schemas/user.json"))
    client = await aiohttp_client(build_app(config, tmp_path / "gateway.toml", snapshots=False))
    async with client.post("/users", json={}) as response:
        body = await problem(response, 422)
    assert body["errors"][0]["path"] == ""


# --- generated bodies ----------------------------------------------------------------------------

FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["name", "age", "tags", "a/b~c", "x"]) | st.text(), inner)
    ),
    max_leaves=12,
)


FUZZ_LIMIT = 16 * 1024
# An independent judge of the schema: the gateway validates with jsonschema_rs.
ORACLE = jsonschema.Draft202012Validator(SCHEMA)


def _no_constant(name: str) -> None:
    # Python's json takes NaN and Infinity; RFC 8259 does not.
    raise ValueError(f"{name} is not JSON")


def expected_status(data: bytes) -> int:
    """The one right answer to POSTing ``data`` as JSON: 413 past the limit, 400 for what is
    not JSON text (RFC 8259: UTF-8, no NaN; RFC 9110 15.5.1), 422 for JSON the schema refuses
    (RFC 9110 15.5.21), else 200 (forwarded)."""
    if len(data) > FUZZ_LIMIT:
        return 413
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except ValueError:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
        return 400
    return 200 if ORACLE.is_valid(document) else 422


@pytest.fixture
async def fuzz_client(gateway: Gateway, backend: Backend, schema_file: Path) -> Client:
    return await gateway(validated(backend.url, schema_file, max_body=f"{FUZZ_LIMIT}B"))


async def post_and_check(client: Client, backend: Backend, data: bytes) -> None:
    before = backend.calls
    expected = expected_status(data)
    async with client.post("/users", data=data, headers=JSON_HEADERS) as response:
        if expected == 200:
            raw = await response.read()
            assert response.status == 200, raw
            assert backend.seen[-1].body == data
            return
        body = await problem(response, expected)
    assert backend.calls == before
    if expected == 422:
        assert body["errors"]


@FUZZ
@given(document=JSON_VALUES)
async def test_generated_json_is_forwarded_exactly_when_the_schema_takes_it(
    fuzz_client: Client, backend: Backend, document: Any
) -> None:
    await post_and_check(fuzz_client, backend, json.dumps(document).encode())


@FUZZ
@given(data=st.binary(max_size=300))
async def test_generated_bytes_are_400_422_or_forwarded_as_json_and_the_schema_decide(
    fuzz_client: Client, backend: Backend, data: bytes
) -> None:
    await post_and_check(fuzz_client, backend, data)


async def test_schema_changes_apply_on_reload_and_a_broken_schema_is_not_applied(
    aiohttp_client: Any, backend: Backend, tmp_path: Path
) -> None:
    from spork_cli.config.load import load_config
    from spork_cli.gateway.app import build_app
    from spork_cli.gateway.keys import RELOADER

    (tmp_path / "schemas").mkdir()
    schema = tmp_path / "schemas" / "user.json"
    schema.write_text(json.dumps(SCHEMA))
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[admin]\nenabled = false\n[logging]\naccess_log = false\n"
        f'[[services]]\nname = "svc"\nendpoints = ["{backend.url}"]\n'
        '[[routes]]\npath = "/"\nservice = "svc"\nbody_schema = "schemas/user.json"\n'
    )
    client = await aiohttp_client(build_app(load_config(config), config, snapshots=False))
    reloader = client.app[RELOADER]
    body = {"name": "a", "nickname": "b"}
    async with client.post("/users", json=body) as response:
        await problem(response, 422)  # additionalProperties: false

    schema.write_text(json.dumps({**SCHEMA, "additionalProperties": True}))
    assert (await reloader.reload("test"))["result"] == "applied"
    async with client.post("/users", json=body) as response:
        assert response.status == 200

    schema.write_text('{"type": 12}')
    assert (await reloader.reload("test"))["result"] == "invalid"
    async with client.post("/users", json=body) as response:
        assert response.status == 200  # the last good schema still applies
    async with client.post("/users", json={}) as response:
        await problem(response, 422)


@pytest.mark.parametrize("depth", [300, 1000])
async def test_a_body_nested_past_the_validators_limit_is_422_not_500(
    gateway: Gateway, backend: Backend, schema_file: Path, depth: int
) -> None:
    client = await gateway(validated(backend.url, schema_file))
    data = b'{"name": "a", "tags": ' + b"[" * depth + b"]" * depth + b"}"
    async with client.post("/users", data=data, headers=JSON_HEADERS) as response:
        body = await problem(response, 422)
    assert body["type"] == "urn:spork:problem:invalid-body"
    assert backend.calls == 0
