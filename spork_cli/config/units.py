"""Durations ("250ms", "30s", "5m") and sizes ("512KiB", "1MiB") as config types."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"

_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([bB]|[kKmMgG][iI]?[bB])?\s*$"


def parse_duration(value: Any) -> float:
    """Seconds in a duration string such as ``"1m30s"``; raises ValueError with a hint."""
    if isinstance(value, bool) or not isinstance(value, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(
                f'durations are strings with a unit, e.g. "{_suggest_duration(value)}"'
            )
        raise ValueError('expected a duration string such as "250ms", "30s", "5m" or "1h"')
    text = value.strip()
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(
            f'invalid duration "{value}": use a number and a unit (ms, s, m, h, d), e.g. "30s"'
        )
    if not math.isfinite(total):
        raise ValueError(f'duration "{value}" is too long')
    return total


def _suggest_duration(number: float) -> str:
    try:
        seconds = float(number)
    except OverflowError:
        seconds = math.inf
    return f"{seconds:g}s" if math.isfinite(seconds) else "60s"


def format_duration(seconds: float) -> str:
    """The shortest duration string that reads back as ``seconds``."""
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        count = seconds / size
        if seconds >= size and count.is_integer() and count * size == seconds:
            return f"{int(count)}{unit}"
    millis = seconds * 1000
    if millis.is_integer() and int(millis) * _DURATION_UNITS["ms"] == seconds:
        return f"{int(millis)}ms"
    # repr() is the shortest text that reads back exactly; Decimal spells it without exponent
    return f"{Decimal(repr(seconds)):f}s"


def parse_size(value: Any) -> int:
    """Bytes in a size such as ``"512KiB"`` or a plain integer of bytes."""
    if isinstance(value, bool):
        raise ValueError('expected a size such as "512KiB" or "1MiB"')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError('expected a size such as "512KiB" or "1MiB"')
    match = _SIZE_RE.match(value)
    unit = match.group(2).lower() if match else ""
    if match is None or (unit and unit not in _SIZE_UNITS):
        raise ValueError(
            f'invalid size "{value}": use a number and a unit (B, KiB, MiB, GiB, KB, MB, GB)'
        )
    size = float(match.group(1)) * _SIZE_UNITS[unit or "b"]
    if not math.isfinite(size):
        raise ValueError(f'size "{value}" is too large')
    return int(size)


def format_size(size: int) -> str:
    """The shortest binary-unit size string that reads back as ``size``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
]
"""A duration in seconds, written in the file as a string with units."""

Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": SIZE_PATTERN},
                {"type": "integer", "minimum": 0},
            ]
        }
    ),
]
"""A size in bytes, written as a string with units or a plain integer of bytes."""
