"""Generated files in the repository match what the code generates now."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from spork_cli.config.model import GatewayConfig
from spork_cli.config.reference import _model_in, render
from spork_cli.config.schema import json_schema, schema_text
from tests.support import PROJECT_ROOT, SporkRunner


def test_configuration_reference_is_fresh() -> None:
    committed = (PROJECT_ROOT / "docs" / "configuration.md").read_text()
    assert committed == render(), (
        "docs/configuration.md is stale: python -m spork_cli.config.reference docs/configuration.md"
    )


def test_reference_documents_every_key() -> None:
    text = render()
    seen: set[type] = set()
    missing: list[str] = []

    def walk(model: type) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            sub = _model_in(field.annotation)
            if sub is not None:
                walk(sub)
            elif not field.description:
                missing.append(f"{model.__name__}.{name} has no description")
            elif f"| `{name}` |" not in text:
                missing.append(f"{model.__name__}.{name} is not in the reference")

    walk(GatewayConfig)
    assert missing == []


def test_committed_schema_is_fresh(run_spork: SporkRunner, tmp_path: Path) -> None:
    committed = (PROJECT_ROOT / "gateway.schema.json").read_text()
    assert committed == schema_text(), "gateway.schema.json is stale: spork schema -o ..."
    out = run_spork("schema")
    assert out.returncode == 0
    assert out.stdout == committed
    target = tmp_path / "s.json"
    written = run_spork("schema", "-o", str(target))
    assert written.returncode == 0
    assert target.read_text() == committed


def test_schema_is_draft7_without_null_branches_or_tuples() -> None:
    schema = json_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    text = json.dumps(schema)
    assert '"null"' not in text
    assert "prefixItems" not in text and "$defs" not in text

    def walk(node: object) -> None:
        if isinstance(node, dict):
            assert not isinstance(node.get("items"), list), "fixed-length tuple in schema"
            if "$ref" in node:
                assert set(node) == {"$ref"}, f"$ref with siblings: {node}"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)


def test_schema_rejects_what_check_rejects() -> None:
    validator = jsonschema.Draft7Validator(json_schema())
    assert not validator.is_valid({"server": {"portt": 1}})
    assert not validator.is_valid({"routes": [{"path": "/"}]})
    assert not validator.is_valid({"state": {"timeout": 5}})
    assert validator.is_valid(
        {
            "services": [{"name": "a", "endpoints": ["http://x", {"url": "http://y"}]}],
            "routes": [{"path": "/", "service": "a", "rate_limit": {"requests": 1, "per": "1s"}}],
            "auth": {"audience": "api", "secret": "x" * 32},
        }
    )
