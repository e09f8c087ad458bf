"""Edits of gateway.toml that keep the user's comments and formatting (tomlkit).

Every edit is validated in full (schema and semantic checks) before the file is replaced,
atomically; a refused edit leaves the file exactly as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from spork_cli.config.diagnostics import Diagnostic
from spork_cli.errors import EditError, UsageError


def add_service(file: Path, name: str, urls: list[str], balance: str | None) -> None:
    def change(doc: Any) -> None:
        existing = [s.get("name") for s in doc.get("services", [])]
        if name in existing:
            raise EditError(f"service '{name}' already exists in {file}")
        entry = tomlkit.table()
        entry["name"] = name
        entry["endpoints"] = urls
        if balance is not None:
            entry["balance"] = balance
        _append(doc, "services", entry)

    _edit(file, change, ("services",))


def add_route(
    file: Path,
    path: str,
    service: str,
    methods: list[str],
    strip_prefix: bool,
    auth: str | None,
) -> None:
    def change(doc: Any) -> None:
        entry = tomlkit.table()
        entry["path"] = path
        entry["service"] = service
        if methods:
            entry["methods"] = [m.upper() for m in methods]
        if strip_prefix:
            entry["strip_prefix"] = True
        if auth is not None:
            entry["auth"] = auth
        _append(doc, "routes", entry)

    _edit(file, change, ("routes",))


def _append(doc: Any, key: str, entry: Any) -> None:
    """Append ``entry`` to the ``[[key]]`` tables, separated by blank lines like the rest."""
    if key not in doc:
        doc.append(key, tomlkit.aot())
    tables = doc[key]
    if not isinstance(tables, tomlkit.items.AoT):
        raise EditError(f"'{key}' in this file is not written as [[{key}]] tables")
    if len(tables) and not tables[-1].as_string().endswith("\n\n"):
        tables[-1].add(tomlkit.nl())
    tables.append(entry)
    if entry is not _last_table(doc):
        entry.add(tomlkit.nl())


def _last_table(doc: Any) -> Any:
    body = [value for _, value in doc.body if not isinstance(value, tomlkit.items.Whitespace)]
    last = body[-1] if body else None
    if isinstance(last, tomlkit.items.AoT) and len(last):
        return last[-1]
    return last


def _edit(file: Path, change: Any, section: tuple[str, ...]) -> None:
    from spork_cli.config.lint import lint
    from spork_cli.config.load import parse_text, read_text

    before = read_text(file)
    before_loaded = parse_text(before, str(file))
    if before_loaded.config is None:
        raise EditError(f"{file} is not valid now; fix it first (spork check {file})")
    try:
        doc = tomlkit.parse(before)
        change(doc)
        after = tomlkit.dumps(doc)
    except TOMLKitError as exc:
        raise EditError(f"cannot edit {file}: {exc}") from exc
    loaded = parse_text(after, str(file))
    if loaded.config is not None:
        loaded.diagnostics.extend(lint(loaded))
    previous = {(d.code, d.path) for d in lint(before_loaded)}
    new_errors = [
        d for d in loaded.diagnostics if d.severity == "error" and (d.code, d.path) not in previous
    ]
    if new_errors or loaded.config is None:
        raise EditError(_refusal(file, new_errors or loaded.diagnostics))
    _replace(file, after)


def _refusal(file: Path, diagnostics: list[Diagnostic]) -> str:
    first = diagnostics[0]
    hint = f" ({first.hint})" if first.hint else ""
    return f"not written: the change would make {file} invalid: {first.path}: {first.message}{hint}"


def _replace(file: Path, text: str) -> None:
    tmp = file.with_name(f".{file.name}.spork-edit")
    try:
        mode = file.stat().st_mode & 0o777
        with open(tmp, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, file)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {file}: {exc.strerror or exc}") from exc
