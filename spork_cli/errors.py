"""The one exception tree of spork.

    SporkError                     exit_code 2 unless a subclass says otherwise
     ├── UsageError                bad arguments, missing file, nothing to do
     ├── ConfigError               gateway.toml is invalid; carries Diagnostics (exit 1)
     ├── TemplateError             a template is unknown or cannot be rendered
     ├── EditError                 `spork service|route add` could not change the file
     └── StateError                the state backend cannot be reached or answered badly

The CLI turns any SporkError into one line on stderr and its exit code; code below the CLI
raises these and wraps foreign exceptions with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spork_cli.config.diagnostics import Diagnostic


class SporkError(Exception):
    """Root of every error spork raises on purpose."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(SporkError):
    """The command cannot run as asked: a missing file, a bad argument."""


class ConfigError(SporkError):
    """A configuration file failed validation; ``diagnostics`` says where and why."""

    exit_code = 1

    def __init__(self, message: str, diagnostics: Sequence[Diagnostic] = ()) -> None:
        super().__init__(message)
        self.diagnostics = list(diagnostics)


class TemplateError(SporkError):
    """A template is unknown or could not be written."""


class EditError(SporkError):
    """An edit of gateway.toml was refused; the file was left as it was."""

    exit_code = 1


class StateError(SporkError):
    """The state backend could not be reached or answered unexpectedly."""
