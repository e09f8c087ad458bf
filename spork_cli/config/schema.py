"""JSON Schema (draft 7) of gateway.toml, for editors (taplo, Even Better TOML) and CI."""

from __future__ import annotations

import json
from typing import Any

from spork_cli import __version__
from spork_cli.config.model import GatewayConfig

DRAFT7 = "http://json-schema.org/draft-07/schema#"


def json_schema() -> dict[str, Any]:
    """The schema as a dict: draft 7, with no `null` branches and no fixed-length tuples."""
    raw = GatewayConfig.model_json_schema(by_alias=True, mode="validation")
    schema = _draft7(raw)
    assert isinstance(schema, dict)
    out: dict[str, Any] = {
        "$schema": DRAFT7,
        "$id": f"https://spork.dev/schema/gateway-{__version__}.json",
        "title": "spork gateway.toml",
    }
    out.update({k: v for k, v in schema.items() if k != "title"})
    return out


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def _draft7(node: Any) -> Any:
    if isinstance(node, list):
        return [_draft7(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$defs":
            out["definitions"] = _draft7(value)
        elif key == "$ref" and isinstance(value, str):
            out["$ref"] = value.replace("#/$defs/", "#/definitions/")
        elif key == "default" and value is None:
            continue
        else:
            out[key] = _draft7(value)
    for combinator in ("anyOf", "oneOf"):
        branches = out.get(combinator)
        if isinstance(branches, list):
            kept = [b for b in branches if b != {"type": "null"}]
            if len(kept) == 1:
                del out[combinator]
                single = kept[0]
                # A $ref cannot have siblings in draft 7: wrap it in allOf.
                if "$ref" in single:
                    out["allOf"] = [single]
                else:
                    out = {**single, **out}
            else:
                out[combinator] = kept
    if "$ref" in out and len(out) > 1:
        ref = out.pop("$ref")
        out["allOf"] = [{"$ref": ref}]
    return out
