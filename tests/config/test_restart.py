"""Which settings need a restart is a property of the model: every field of it, walked here, is
either reported by a reload and kept at its running value, or applied."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from spork_cli.config.model import Auth, GatewayConfig
from spork_cli.config.restart import (
    keep_static,
    needs_restart,
    plain,
    restart_fields,
    static_changes,
)
from spork_cli.gateway.reload import fingerprint

CHANGED = object()  # stands for any other value: the comparison is by equality


def leaves(model: BaseModel, prefix: str = "", restart: bool = False) -> Iterator[tuple[str, bool]]:
    """(dotted name, needs a restart) of every setting under ``model``."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        marked = restart or needs_restart(field)
        yield prefix + name, marked
        if isinstance(value, BaseModel):
            yield from leaves(value, f"{prefix}{name}.", marked)


def replaced(model: BaseModel, dotted: str, value: Any) -> Any:
    name, _, rest = dotted.partition(".")
    inner = value if not rest else replaced(getattr(model, name), rest, value)
    return model.model_copy(update={name: inner})


def get(model: object, dotted: str) -> Any:
    for name in dotted.split("."):
        model = getattr(model, name)
    return model


BASE = GatewayConfig(auth=Auth(algorithms=["HS256"], secret=SecretStr("s" * 32)))
FIELDS = list(leaves(BASE))


def test_the_walk_covers_the_model() -> None:
    names = {name for name, _ in FIELDS}
    assert {"server.port", "server.timeouts.request", "auth.secret", "metrics.buckets"} <= names
    assert len(names) > 60


@pytest.mark.parametrize(("dotted", "restart"), FIELDS, ids=[name for name, _ in FIELDS])
def test_every_setting_is_either_reported_and_kept_or_applied(dotted: str, restart: bool) -> None:
    new = replaced(BASE, dotted, CHANGED)
    changes = static_changes(BASE, new)
    kept = keep_static(BASE, new)
    if restart:
        # Reported under its own name, or under the section that needs a restart as a whole.
        [reported] = changes
        assert dotted == reported or dotted.startswith(reported + ".")
        assert get(kept, dotted) == get(BASE, dotted)
    else:
        assert changes == []
        assert get(kept, dotted) is CHANGED


def test_the_restart_list_the_docs_show_is_the_marked_fields() -> None:
    marked = {name for name, restart in FIELDS if restart}
    listed = set(restart_fields(GatewayConfig))
    assert listed <= marked
    assert all(any(name == top or name.startswith(top + ".") for top in listed) for name in marked)
    assert {
        "server.port",
        "server.timeouts.keepalive",
        "state.timeout",
        "state.pool_size",
        "state.max_keys",
        "logging.level",
        "logging.format",
        "metrics.enabled",
        "metrics.path",
        "metrics.buckets",
    } <= listed
    assert {"server.timeouts.request", "state.on_error", "logging.access_log"}.isdisjoint(listed)


def test_a_secret_counts_by_its_value(tmp_path: Any) -> None:
    rotated = replaced(BASE, "auth.secret", SecretStr("t" * 32))
    assert fingerprint(rotated, tmp_path) != fingerprint(BASE, tmp_path)
    same = replaced(BASE, "auth.secret", SecretStr("s" * 32))
    assert fingerprint(same, tmp_path) == fingerprint(BASE, tmp_path)
    assert plain({"a": [SecretStr("x")]}) == {"a": [("secret", "x")]}
