"""A Diagnostic: one finding about a config file, with its place in the file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["error", "warning"]
PathPart = str | int
Path = tuple[PathPart, ...]


def format_path(path: Sequence[PathPart]) -> str:
    """``("routes", 2, "rate_limit", "per")`` -> ``routes[2].rate_limit.per``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True, slots=True)
class Diagnostic:
    file: str
    line: int
    column: int
    path: str
    severity: Severity
    code: str
    message: str
    hint: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def one_line(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        what = f"{self.path}: {self.message}" if self.path else self.message
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}: {self.severity}: {what}{hint} [{self.code}]"


def has_errors(diagnostics: Sequence[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)
