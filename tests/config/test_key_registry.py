"""Every config key has a test that observes its effect: a test that sets the key and asserts
what it changes says so with ``@pytest.mark.observes("section.key", ...)``, and this test
fails for any key of the model that no test names (a key documented and validated but inert
is found here, not by a user). List items are named without an index (``routes.cache.ttl``);
a table is covered by its keys.

The list of keys is generated from the model, so a key added later needs its test too.
"""

from __future__ import annotations

import ast
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from spork_cli.config.model import GatewayConfig
from tests.support import PROJECT_ROOT

TESTS = PROJECT_ROOT / "tests"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def config_keys(model: type[BaseModel] = GatewayConfig, prefix: str = "") -> Iterator[str]:
    """Every setting of ``model``, dotted: the keys a user writes (tables excluded)."""
    for name, field in model.model_fields.items():
        inner = _model_in(field.annotation)
        if inner is None:
            yield prefix + name
        else:
            yield from config_keys(inner, f"{prefix}{name}.")


def _observes(decorator: ast.expr) -> list[str]:
    """The keys of a ``pytest.mark.observes(...)`` decorator, or []."""
    if not isinstance(decorator, ast.Call):
        return []
    function = decorator.func
    if not (isinstance(function, ast.Attribute) and function.attr == "observes"):
        return []
    return [a.value for a in decorator.args if isinstance(a, ast.Constant)]


def observed(root: Path = TESTS) -> dict[str, list[str]]:
    """Key -> the tests (file::name) marked as observing it."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                for decorator in node.decorator_list:
                    for key in _observes(decorator):
                        found.setdefault(key, []).append(f"{path.relative_to(root)}::{node.name}")
    return found


def test_the_keys_are_generated_from_the_model() -> None:
    keys = list(config_keys())
    assert len(keys) == len(set(keys)) > 150
    assert {"routes.request_headers.set", "services.breaker.cooldown", "state.url"} <= set(keys)
    assert "routes.cache" not in keys  # a table, covered by its keys


def test_every_config_key_has_a_test_that_observes_its_effect() -> None:
    marked = observed()
    missing = [key for key in config_keys() if key not in marked]
    assert missing == [], f"{len(missing)} keys have no test marked as observing them"


def test_every_key_a_test_claims_to_observe_exists() -> None:
    keys = set(config_keys())
    unknown = {key: tests for key, tests in observed().items() if key not in keys}
    assert unknown == {}


def test_the_registry_reads_markers_as_written(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "@pytest.mark.observes('server.port', 'state.url')\n"
        "async def test_a():\n    pass\n"
        "class TestB:\n"
        "    @pytest.mark.observes('cors.max_age')\n"
        "    def test_c(self):\n        pass\n"
        "@pytest.mark.slow\n"
        "def test_d():\n    pass\n"
    )
    found = observed(tmp_path)
    assert {key: len(tests) for key, tests in found.items()} == {
        "server.port": 1,
        "state.url": 1,
        "cors.max_age": 1,
    }
