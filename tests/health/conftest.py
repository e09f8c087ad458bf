"""Parts of the `spork health` tests: a gateway.toml of services and their checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support import gateway_toml


@dataclass(frozen=True)
class Svc:
    """A [[services]] entry: endpoint URLs and, when not None, its [services.health] lines."""

    endpoints: Sequence[str]
    health: str | None = None


def write_config(path: Path, services: Mapping[str, Svc]) -> Path:
    """``path`` holding only ``services`` (no [server], no routes): what `spork health` reads."""
    checks = {
        name: f"[services.health]\n{service.health}"
        for name, service in services.items()
        if service.health is not None
    }
    endpoints = {name: service.endpoints for name, service in services.items()}
    path.write_text(gateway_toml(None, None, endpoints, {}, service_lines=checks))
    return path
