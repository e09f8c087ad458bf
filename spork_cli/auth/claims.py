"""Reading claims by name, nested ones included, as verification and forwarding both do."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def claim_value(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name ("realm_access.roles") reads nested objects (Keycloak
    puts roles there). None when absent."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value
