"""Where each key and value of a TOML document sits (tomllib keeps no positions).

The scanner runs only on text that tomllib has already accepted, so it can be lenient: it
records the line and column of every key and value it meets, addressed by the same paths
pydantic reports (``("routes", 2, "rate_limit", "per")``), and never raises.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from spork_cli.config.diagnostics import Path

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END = re.compile(r"[,\]\}\n#]")


@dataclass
class Positions:
    """Offsets of keys, values and table headers, converted to (line, column) on demand."""

    text: str
    keys: dict[Path, int] = field(default_factory=dict)
    values: dict[Path, int] = field(default_factory=dict)
    line_starts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.line_starts = [0] + [i + 1 for i, ch in enumerate(self.text) if ch == "\n"]

    def line_col(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, offset) - 1
        return line + 1, offset - self.line_starts[line] + 1

    def find(self, path: Path, prefer: str = "value") -> tuple[int, int]:
        """Position of ``path``: its value (or key), else the nearest located ancestor."""
        first, second = (self.values, self.keys) if prefer == "value" else (self.keys, self.values)
        probe = tuple(path)
        while probe:
            for table in (first, second):
                if probe in table:
                    return self.line_col(table[probe])
            probe = probe[:-1]
        return 1, 1


def locate(text: str) -> Positions:
    positions = Positions(text)
    try:
        _Scanner(text, positions).run()
    except (IndexError, ValueError, RecursionError):
        pass  # partial positions are still useful; callers fall back to ancestors
    return positions


class _Scanner:
    def __init__(self, text: str, positions: Positions) -> None:
        self.text = text
        self.pos = 0
        self.out = positions
        self.array_tables: dict[Path, int] = {}

    # -- top level ---------------------------------------------------------------------------

    def run(self) -> None:
        table: Path = ()
        text = self.text
        while True:
            self._skip_ws(newlines=True)
            if self.pos >= len(text):
                return
            ch = text[self.pos]
            if ch == "[":
                table = self._header()
            else:
                self._key_value(table)
            self._skip_to_line_end()

    def _header(self) -> Path:
        text = self.text
        is_array = text.startswith("[[", self.pos)
        self.pos += 2 if is_array else 1
        keys, starts = self._dotted_key()
        self.pos += 2 if is_array else 1
        resolved: Path = ()
        for key, start in zip(keys[:-1], starts[:-1], strict=True):
            resolved += (key,)
            self.out.keys.setdefault(resolved, start)
            if resolved in self.array_tables:
                resolved += (self.array_tables[resolved] - 1,)
        resolved += (keys[-1],)
        self.out.keys.setdefault(resolved, starts[-1])
        if is_array:
            count = self.array_tables.get(resolved, 0) + 1
            self.array_tables[resolved] = count
            resolved += (count - 1,)
            self.out.keys[resolved] = starts[-1]
        self.out.values.setdefault(resolved, starts[-1])
        return resolved

    def _key_value(self, table: Path) -> None:
        keys, starts = self._dotted_key()
        path = table
        for key, start in zip(keys, starts, strict=True):
            path += (key,)
            self.out.keys.setdefault(path, start)
        self._skip_ws()
        self.pos += 1  # '='
        self._skip_ws()
        self._value(path)

    # -- pieces ------------------------------------------------------------------------------

    def _dotted_key(self) -> tuple[list[str], list[int]]:
        keys: list[str] = []
        starts: list[int] = []
        while True:
            self._skip_ws()
            starts.append(self.pos)
            keys.append(self._key_part())
            self._skip_ws()
            if self.pos < len(self.text) and self.text[self.pos] == ".":
                self.pos += 1
                continue
            return keys, starts

    def _key_part(self) -> str:
        text = self.text
        ch = text[self.pos]
        if ch in "\"'":
            return self._string()
        match = _BARE_KEY.match(text, self.pos)
        if match is None:
            raise ValueError("not a key")
        self.pos = match.end()
        return match.group(0)

    def _value(self, path: Path) -> None:
        self.out.values[path] = self.pos
        ch = self.text[self.pos]
        if ch in "\"'":
            self._string()
        elif ch == "[":
            self._array(path)
        elif ch == "{":
            self._inline_table(path)
        else:
            match = _SCALAR_END.search(self.text, self.pos)
            self.pos = match.start() if match else len(self.text)

    def _array(self, path: Path) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip_ws(newlines=True, comments=True)
            if self.text[self.pos] == "]":
                self.pos += 1
                return
            self._value((*path, index))
            index += 1
            self._skip_ws(newlines=True, comments=True)
            if self.text[self.pos] == ",":
                self.pos += 1

    def _inline_table(self, path: Path) -> None:
        self.pos += 1
        while True:
            self._skip_ws(newlines=True, comments=True)
            if self.text[self.pos] == "}":
                self.pos += 1
                return
            self._key_value(path)
            self._skip_ws(newlines=True, comments=True)
            if self.text[self.pos] == ",":
                self.pos += 1

    def _string(self) -> str:
        """Skip a string; return its raw content (escapes in keys are rare enough)."""
        text = self.text
        quote = text[self.pos]
        if text.startswith(quote * 3, self.pos):
            end = text.index(quote * 3, self.pos + 3)
            while text.startswith(quote, end + 3):  # up to two quotes may close the content
                end += 1
            raw = text[self.pos + 3 : end]
            self.pos = end + 3
            return raw
        i = self.pos + 1
        while text[i] != quote:
            i += 2 if quote == '"' and text[i] == "\\" else 1
        raw = text[self.pos + 1 : i]
        self.pos = i + 1
        if quote == '"' and "\\" in raw:
            raw = raw.encode("latin-1", "backslashreplace").decode("unicode_escape", "replace")
        return raw

    def _skip_ws(self, newlines: bool = False, comments: bool = True) -> None:
        text = self.text
        n = len(text)
        while self.pos < n:
            ch = text[self.pos]
            if ch in " \t\r" or (newlines and ch == "\n"):
                self.pos += 1
            elif ch == "#" and comments:
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            else:
                return

    def _skip_to_line_end(self) -> None:
        self._skip_ws()
