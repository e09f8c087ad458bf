"""gateway.toml -> GatewayConfig, with every error placed at its file, line and column."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from spork_cli.config.diagnostics import Diagnostic, format_path, has_errors
from spork_cli.config.diagnostics import Path as KeyPath
from spork_cli.config.lint import lint
from spork_cli.config.loaded import Loaded, did_you_mean
from spork_cli.config.model import GatewayConfig
from spork_cli.errors import ConfigError, UsageError

MAX_FILE_SIZE = 16 * 1024 * 1024
_ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def read_text(file: str | Path) -> str:
    """The file's text; UsageError when it cannot be read at all (exit 2)."""
    path = Path(file)
    try:
        if path.is_dir():
            raise UsageError(f"{file}: is a directory, not a config file")
        with path.open("rb") as handle:
            # Read one byte past the limit: enough to know it is too large (even /dev/zero).
            data = handle.read(MAX_FILE_SIZE + 1)
    except FileNotFoundError as exc:
        raise UsageError(f"{file}: no such file") from exc
    except OSError as exc:
        raise UsageError(f"{file}: cannot read ({exc.strerror or exc})") from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte order mark, as some Windows editors write
    return data.decode("utf-8", errors="surrogateescape")


def parse_text(text: str, file: str, env: Mapping[str, str] | None = None) -> Loaded:
    """Parse and validate ``text`` (schema only; see lint for semantic checks)."""
    loaded = Loaded(file=file, text=text, config=None)
    raw = _parse_toml(loaded)
    if raw is None:
        return loaded
    if not raw:
        # Serving the defaults of an empty file would answer 404 to everything; more likely
        # the file was truncated, or an editor is half-way through writing it.
        loaded.diagnostics.append(
            Diagnostic(
                loaded.file,
                1,
                1,
                "",
                "error",
                "empty-file",
                "the file is empty (no settings, at most comments)",
                "spork init writes a gateway.toml to start from",
            )
        )
        return loaded
    raw = _interpolate(raw, os.environ if env is None else env, loaded)
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        loaded.diagnostics.extend(_from_validation(exc, loaded, raw))
    except RecursionError:
        loaded.diagnostics.append(loaded.diag((), "too-deep", "the document is nested too deeply"))
    else:
        if not has_errors(loaded.diagnostics):
            loaded.config = config
    return loaded


def load_file(file: str | Path, env: Mapping[str, str] | None = None) -> Loaded:
    return parse_text(read_text(file), str(file), env)


def check_file(file: str, env: dict[str, str] | None = None) -> Loaded:
    """Schema and semantic diagnostics of one file, in file order (raises UsageError)."""
    loaded = load_file(file, env)
    loaded.diagnostics.extend(lint(loaded))
    loaded.diagnostics.sort(key=lambda d: (d.line, d.column))
    return loaded


def load_config(file: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """A valid config or ConfigError listing every error (semantic checks included)."""
    loaded = load_file(file, env)
    if loaded.config is not None:
        loaded.diagnostics.extend(lint(loaded))
    errors = [d for d in loaded.diagnostics if d.severity == "error"]
    if errors or loaded.config is None:
        first = errors[0].one_line() if errors else f"{file}: invalid"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(first + more, errors)
    return loaded.config


# -- TOML -------------------------------------------------------------------------------------


def _parse_toml(loaded: Loaded) -> dict[str, Any] | None:
    text = loaded.text
    if len(text) > MAX_FILE_SIZE:
        # At (1, 1) directly: locating positions would scan the whole oversized text
        message = f"file is larger than {MAX_FILE_SIZE // 2**20} MiB"
        loaded.diagnostics.append(Diagnostic(loaded.file, 1, 1, "", "error", "too-large", message))
        return None
    bad = _first_undecodable(text)
    if bad is not None:
        line, col = loaded.positions.line_col(bad)
        loaded.diagnostics.append(
            Diagnostic(loaded.file, line, col, "", "error", "encoding", "file is not UTF-8 text")
        )
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_AT.search(message)
        line, col = (int(match.group(1)), int(match.group(2))) if match else (1, 1)
        reason = _TOML_AT.sub("", message).strip() or "invalid TOML"
        loaded.diagnostics.append(
            Diagnostic(loaded.file, line, col, "", "error", "toml-syntax", reason)
        )
    except ValueError as exc:  # not a TOMLDecodeError: an integer beyond int_max_str_digits
        reason = str(exc).partition(";")[0]
        loaded.diagnostics.append(
            Diagnostic(loaded.file, 1, 1, "", "error", "toml-syntax", f"invalid TOML: {reason}")
        )
    except RecursionError:
        loaded.diagnostics.append(
            Diagnostic(
                loaded.file, 1, 1, "", "error", "too-deep", "the document is nested too deeply"
            )
        )
    return None


def _first_undecodable(text: str) -> int | None:
    for index, ch in enumerate(text):
        if "\udc80" <= ch <= "\udcff" or ch == "\x00":
            return index
    return None


# -- ${VAR} -----------------------------------------------------------------------------------


def _interpolate(raw: dict[str, Any], env: Mapping[str, str], loaded: Loaded) -> dict[str, Any]:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string value; ``$${`` is a literal."""

    def expand(value: str, path: KeyPath) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(1):
                return match.group(0)[1:]
            name, default = match.group(2), match.group(3)
            if name in env:
                return env[name]
            if default is not None:
                return default
            loaded.diagnostics.append(
                loaded.diag(
                    path,
                    "env-missing",
                    f"environment variable {name} is not set",
                    hint=f"set it, or give a default: ${{{name}:-value}}",
                )
            )
            return ""

        return _ENV_REF.sub(one, value) if "${" in value else value

    # An explicit stack: documents nested deeper than Python's recursion limit still load.
    root: dict[str, Any] = dict(raw)
    stack: list[tuple[Any, KeyPath]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, value in items:
            child = (*path, key)
            if isinstance(value, str):
                node[key] = expand(value, child)
            elif isinstance(value, dict):
                node[key] = dict(value)
                stack.append((node[key], child))
            elif isinstance(value, list):
                node[key] = list(value)
                stack.append((node[key], child))
    return root


# -- pydantic errors --------------------------------------------------------------------------

_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def _from_validation(exc: ValidationError, loaded: Loaded, raw: Any) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    # A value emptied by a missing ${VAR} already has its error; its type error is noise.
    emptied = {d.path for d in loaded.diagnostics if d.code == "env-missing"}
    for err in exc.errors(include_url=False, include_input=True):
        path = _clean_loc(err["loc"], raw)
        kind = err["type"]
        if format_path(path) in emptied:
            continue
        if kind == "extra_forbidden":
            key = str(path[-1])
            hint = did_you_mean(key, _fields_at(path[:-1]))
            out.append(
                loaded.diag(path, "unknown-key", f"unknown key '{key}'", hint=hint, at="key")
            )
        elif kind == "missing":
            out.append(
                loaded.diag(
                    path[:-1], "missing-key", f"missing required key '{path[-1]}'", at="key"
                )
            )
        elif kind in _TYPE_NAMES:
            found = _toml_type(err.get("input"))
            out.append(
                loaded.diag(path, "wrong-type", f"expected {_TYPE_NAMES[kind]}, found {found}")
            )
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            out.append(loaded.diag(path, "out-of-range", _message(err["msg"])))
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            value = err.get("input")
            # str() of a deeply nested table would exceed the recursion limit
            choices = re.findall(r"'([^']*)'", expected)
            hint = did_you_mean(value, choices) if isinstance(value, str) else None
            out.append(loaded.diag(path, "invalid-value", f"must be one of {expected}", hint=hint))
        elif kind == "string_pattern_mismatch":
            out.append(loaded.diag(path, "invalid-value", _pattern_message(path)))
        else:
            out.append(loaded.diag(path, "invalid-value", _message(err["msg"])))
    return out


def _clean_loc(loc: tuple[int | str, ...], raw: Any) -> KeyPath:
    """Drop pydantic's union-branch and validator markers from an error location.

    Only parts that name nothing in the input are dropped: a user's key may look like a
    marker (``"[x]"``) and must stay, or an unknown key would have no name.
    """
    out: list[str | int] = []
    node: Any = raw
    for part in loc:
        present = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if not present and isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue
        out.append(part)
        node = node[part] if present else None
    return tuple(out)


def _message(msg: str) -> str:
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    return msg[:1].lower() + msg[1:]


def _pattern_message(path: KeyPath) -> str:
    last = next((p for p in reversed(path) if isinstance(p, str)), "")
    if last in ("name", "prefix"):
        return "names use letters, digits, '_', '.' and '-', starting with a letter or digit"
    if last in ("path",):
        return "must start with '/'"
    if last == "key" or (len(path) > 1 and path[-2] == "key"):
        return "must be ip, user, route or header:NAME"
    return "is not a valid header name or value of this kind"


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        short = value if len(value) <= 30 else value[:27] + "..."
        return f'the string "{short}"'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _fields_at(path: KeyPath) -> list[str]:
    """Field names of the model found at ``path`` (for 'did you mean')."""
    model: type[BaseModel] | None = GatewayConfig
    for part in path:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        model = _model_in(info.annotation) if info is not None else None
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
