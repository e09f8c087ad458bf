"""Which keys of a config name a secret: the one rule behind what spork prints and what it serves.

A key the model defines is a secret when the model types it so (`SecretStr`): a route's
``auth = "required"`` or a rate limit's ``key = ["ip"]`` are read like any value. Every other
key (a header name in a header map, a query parameter, a key the model does not know) is a
secret when it is named like one.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any

from pydantic import BaseModel, SecretStr

from spork_cli.config.model import GatewayConfig, HeaderEdit, SecurityHeaders

SECRET_NAME = re.compile(
    r"pass|pwd|secret|token|key|auth|sig|credential|cookie|session", re.IGNORECASE
)
# Maps whose keys are header names and whose values are sent as those headers' values.
HEADER_MAPS = frozenset({(HeaderEdit, "set"), (SecurityHeaders, "extra")})
_HEADER_MAP_NAMES = frozenset(name for _model, name in HEADER_MAPS)


@cache
def _field_names() -> tuple[frozenset[str], frozenset[str]]:
    """The names (and aliases) of the config model's fields: its secrets, and all of them."""
    secret: set[str] = set()
    every: set[str] = set()
    seen: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [GatewayConfig]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            names = {name} | ({info.alias} if info.alias else set())
            every |= names
            for kind in _types_in(info.annotation):
                if kind is SecretStr:
                    secret |= names
                elif isinstance(kind, type) and issubclass(kind, BaseModel):
                    todo.append(kind)
    return frozenset(secret), frozenset(every)


def _types_in(annotation: Any) -> Iterator[Any]:
    yield annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _types_in(typing.get_args(annotation)[0])
    elif origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _types_in(arg)


def is_secret_key(name: str, parent: str | None = None) -> bool:
    """Is the value of a key of this name, in a table or under a key named ``parent``, a
    secret?"""
    secret_fields, fields = _field_names()
    if name in secret_fields:
        return True
    in_header_map = parent in _HEADER_MAP_NAMES
    return (in_header_map or name not in fields) and SECRET_NAME.search(name) is not None


def is_secret_path(path: Sequence[str | int]) -> bool:
    """Is the value at ``path`` (keys as TOML reads them; array indexes are skipped) a
    secret, or inside one?"""
    names = [part for part in path if isinstance(part, str)]
    return any(is_secret_key(name, names[at - 1] if at else None) for at, name in enumerate(names))
