"""What reading one gateway.toml gave: the config when it is valid, and every finding, each
placed at its line and column (shared by the loader and the semantic checks)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from spork_cli.config.diagnostics import Diagnostic, format_path
from spork_cli.config.diagnostics import Path as KeyPath
from spork_cli.config.locate import Positions, locate
from spork_cli.config.model import GatewayConfig


@dataclass
class Loaded:
    """The outcome of reading one file: a config when it is valid, and what was found."""

    file: str
    text: str
    config: GatewayConfig | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    _positions: Positions | None = None

    @property
    def positions(self) -> Positions:
        if self._positions is None:
            self._positions = locate(self.text)
        return self._positions

    @property
    def base_dir(self) -> Path:
        return Path(self.file).resolve().parent

    def diag(
        self,
        path: KeyPath,
        code: str,
        message: str,
        *,
        severity: str = "error",
        hint: str | None = None,
        at: str = "value",
    ) -> Diagnostic:
        line, column = self.positions.find(path, prefer=at)
        return Diagnostic(
            file=self.file,
            line=line,
            column=column,
            path=format_path(path),
            severity="warning" if severity == "warning" else "error",
            code=code,
            message=message,
            hint=hint,
        )


def did_you_mean(word: str, candidates: list[str]) -> str | None:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
