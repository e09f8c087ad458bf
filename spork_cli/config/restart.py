"""Which settings a reload cannot change: a property of the model, not a list of names.

A field marked with ``RESTART`` (``Field(..., json_schema_extra=RESTART)``) is read once, when
`spork serve` starts: its listeners, its state store, its metrics registry, its logging. A
reload reports a change to one as needing a restart and keeps the running value, so nothing
is half-applied. Every other field takes effect on reload.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

RESTART: dict[str, Any] = {"restart": True}
M = TypeVar("M", bound=BaseModel)


def needs_restart(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("restart") is True


def _nested(old: object, new: object) -> bool:
    return isinstance(old, BaseModel) and type(old) is type(new)


def static_changes(old: BaseModel, new: BaseModel, prefix: str = "") -> list[str]:
    """Dotted names of the restart-only settings that differ between ``old`` and ``new``."""
    changed: list[str] = []
    for name, field in type(old).model_fields.items():
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        if needs_restart(field):
            changed.append(prefix + name)
        elif _nested(before, after):
            changed += static_changes(before, after, f"{prefix}{name}.")
    return changed


def keep_static(old: M, new: M) -> M:
    """``new`` with the running value of every restart-only setting."""
    update: dict[str, Any] = {}
    for name, field in type(old).model_fields.items():
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        if needs_restart(field):
            update[name] = before
        elif _nested(before, after):
            kept = keep_static(before, after)
            if kept is not after:
                update[name] = kept
    return new.model_copy(update=update) if update else new


def restart_fields(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every restart-only setting of ``model``, by dotted name (the docs list them)."""
    for name, field in model.model_fields.items():
        if needs_restart(field):
            yield prefix + name
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from restart_fields(annotation, f"{prefix}{name}.")


def plain(value: object) -> object:
    """``value`` (a model dump) with every secret's value in the clear: what a fingerprint
    must see, so that a rotated secret counts as a change."""
    if isinstance(value, SecretStr):
        return ("secret", value.get_secret_value())
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
