"""JSON Schema validation of request bodies on routes with ``body_schema``.

Only POST, PUT and PATCH are checked. Their ``Content-Type`` must be JSON (``application/json``
or a ``+json`` type), else 415. A compressed body (``Content-Encoding: gzip`` or ``deflate``) is
inflated to be checked, a step at a time, and ``max_body`` bounds it both as sent and inflated;
any other coding is a 415 naming the ones taken (``Accept-Encoding``, RFC 9110 15.5.16). The
body is read up to the route's limit and no further (413 as soon as it passes it, like the
proxy). A body that is not JSON at all gets 400 (malformed syntax, RFC 9110 15.5.1); JSON that
breaks the schema gets 422 with an ``errors`` list of ``{"path": JSON Pointer, "message"}``: the
first ``MAX_ERRORS`` of them, and ``"truncated": true`` when there were more (a body of many bad
items must not turn into an answer many times its size). A valid body goes upstream byte for
byte as it came, compressed as it came with its ``Content-Encoding``.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import web

from spork_cli.errors import ConfigError
from spork_cli.gateway.keys import BODY
from spork_cli.middleware import Handler, Middleware
from spork_cli.middleware.body import (
    ACCEPT_ENCODING,
    INFLATERS,
    coding_of,
    read_inflated,
    read_limited,
)
from spork_cli.problems import HTTPProblem

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))
MAX_ERRORS = 100


class Validator(Protocol):
    """A compiled schema (``jsonschema_rs``); its errors have ``instance_path`` and ``message``."""

    def iter_errors(self, instance: Any) -> Iterator[Any]: ...


def load_validator(base_dir: Path, name: str) -> Validator:
    """The compiled validator of a schema file (relative to the config's directory)."""
    import jsonschema_rs

    file = base_dir / name
    try:
        document = orjson.loads(file.read_bytes())
    except OSError as exc:
        raise ConfigError(f"body_schema {name} cannot be read ({exc.strerror})") from exc
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"body_schema {name} is not valid JSON ({exc})") from exc
    try:
        validator: Validator = jsonschema_rs.validator_for(document)
        return validator
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        first = (str(exc).strip().splitlines() or ["invalid"])[0]
        raise ConfigError(f"body_schema {name} is not a valid JSON Schema: {first}") from exc


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 JSON Pointer; the whole document is ``""``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def validate_middleware(validator: Validator, max_body: int) -> Middleware:
    async def validated(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in BODY_METHODS:
            return await handler(request)
        if not is_json(request.headers.get("Content-Type")):
            raise HTTPProblem(
                415,
                "unsupported-media-type",
                "this route takes JSON bodies: send Content-Type: application/json",
            )
        coding = coding_of(request)
        if coding == "identity":
            body = sent = await read_limited(request, max_body)
        elif coding in INFLATERS:
            sent, body = await read_inflated(request, coding, max_body)
        else:
            raise HTTPProblem(
                415,
                "unsupported-content-encoding",
                f"this route validates bodies and cannot read the content coding '{coding}'",
                headers={"Accept-Encoding": ACCEPT_ENCODING},
            )
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPProblem(400, "invalid-json", f"the body is not valid JSON: {exc}") from None
        try:
            found = validator.iter_errors(document)
            errors = [
                {"path": pointer(error.instance_path), "message": error.message}
                for error in islice(found, MAX_ERRORS)
            ]
            more = bool(errors) and next(found, None) is not None
        except ValueError as exc:  # the validator's own recursion limit
            raise HTTPProblem(
                422, "invalid-body", f"the body cannot be checked against the schema: {exc}"
            ) from None
        if errors:
            extra: dict[str, object] = {"errors": errors}
            if more:
                extra["truncated"] = True
            raise HTTPProblem(
                422, "invalid-body", "the body does not match the route's schema", extra=extra
            )
        request[BODY] = sent
        return await handler(request)

    return validated
