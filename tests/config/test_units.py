"""Durations and sizes: parsing, formatting, round trips and helpful refusals."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from spork_cli.config.units import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    Duration,
    Size,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1m30s", 90.0),
        ("1h1m1s", 3661.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        ("  30s ", 30.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.25, "250ms"),
        (1.0, "1s"),
        (1.5, "1500ms"),
        (60.0, "1m"),
        (90.0, "90s"),
        (3600.0, "1h"),
        (86400.0, "1d"),
        (31_536_000.0, "365d"),
        (0.0001, "0.0001s"),
        (1e-7, "0.0000001s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@settings(max_examples=200, deadline=None)
@given(seconds=st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_any_duration_formats_to_a_string_that_reads_back_exactly(seconds: float) -> None:
    text = format_duration(seconds)
    assert re.fullmatch(DURATION_PATTERN, text)
    assert parse_duration(text) == seconds


@settings(max_examples=200, deadline=None)
@given(millis=st.integers(min_value=0, max_value=10**12))
def test_whole_milliseconds_round_trip(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == seconds


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.sampled_from(sorted(UNITS))),
        min_size=1,
        max_size=4,
    )
)
def test_combined_durations_add_up_and_format_canonically(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert re.fullmatch(DURATION_PATTERN, text)
    seconds = parse_duration(text)
    assert seconds == pytest.approx(sum(n * UNITS[unit] for n, unit in parts))
    canonical = format_duration(seconds)
    assert parse_duration(canonical) == seconds
    assert format_duration(parse_duration(canonical)) == canonical


@pytest.mark.parametrize("number", [60, 5, 1.5, 0])
def test_bare_number_duration_suggests_seconds(number: float) -> None:
    with pytest.raises(ValueError, match="durations are strings with a unit") as info:
        parse_duration(number)
    assert f'"{number:g}s"' in str(info.value)


def test_bare_integer_sixty_suggests_60s() -> None:
    with pytest.raises(ValueError, match=re.escape('e.g. "60s"')):
        parse_duration(60)


@pytest.mark.parametrize("number", [10**400, math.inf, math.nan])
def test_bare_number_beyond_floats_still_gets_a_suggestion(number: float) -> None:
    with pytest.raises(ValueError, match=re.escape('e.g. "60s"')):
        parse_duration(number)


@pytest.mark.parametrize(
    "text", ["", "   ", "30", "s", "30 s", "1 minute", "5min", "-5s", "1.s", "1e3s", "30s5", "1w"]
)
def test_bad_duration_string_is_refused_with_units_listed(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    message = str(info.value)
    assert f'"{text}"' in message
    assert "ms, s, m, h, d" in message
    assert '"30s"' in message


@pytest.mark.parametrize("value", [None, True, [1], {"s": 1}])
def test_non_string_duration_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match='"250ms", "30s", "5m" or "1h"'):
        parse_duration(value)


def test_duration_too_long_for_a_float_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("9" * 400 + "s")


# --- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("512KiB", 512 * 1024),
        ("1MiB", 1024**2),
        ("2GiB", 2 * 1024**3),
        ("1KB", 1000),
        ("1mb", 1000**2),
        ("1GB", 1000**3),
        ("100B", 100),
        ("100", 100),
        ("1.5KiB", 1536),
        (" 1 MiB ", 1024**2),
        (0, 0),
        (4096, 4096),
    ],
)
def test_parse_size(value: str | int, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0B"), (1023, "1023B"), (1024, "1KiB"), (1536, "1536B"), (1024**2, "1MiB"),
     (3 * 1024**3, "3GiB"), (1024**4, "1024GiB")],
)  # fmt: skip
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@settings(max_examples=200, deadline=None)
@given(size=st.integers(min_value=0, max_value=2**53))
def test_any_size_formats_to_a_string_that_reads_back(size: int) -> None:
    text = format_size(size)
    assert re.fullmatch(SIZE_PATTERN, text)
    assert parse_size(text) == size


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=10**6),
    unit=st.sampled_from(["B", "KiB", "MiB", "GiB", "KB", "MB", "GB", "kib", "mB"]),
)
def test_written_sizes_match_their_pattern_and_parse(n: int, unit: str) -> None:
    text = f"{n}{unit}"
    assert re.fullmatch(SIZE_PATTERN, text)
    factors = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
    factors |= {"kb": 1000, "mb": 1000**2, "gb": 1000**3}
    assert parse_size(text) == n * factors[unit.lower()]


@pytest.mark.parametrize("text", ["", "MiB", "1 TiB", "1MiBs", "1,5MiB", "-1MiB", "one KiB"])
def test_bad_size_string_is_refused_with_units_listed(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(text)
    assert f'"{text}"' in str(info.value)
    assert "KiB, MiB, GiB" in str(info.value)


@pytest.mark.parametrize("value", [True, 1.5, None, [1]])
def test_non_size_value_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match='"512KiB" or "1MiB"'):
        parse_size(value)


def test_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        parse_size(-1)


def test_size_too_large_for_a_float_is_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_size("9" * 400 + "GiB")


# --- as pydantic types --------------------------------------------------------------------------


class Timed(BaseModel):
    wait: Duration
    body: Size


def test_types_validate_and_serialise_as_strings() -> None:
    value = Timed.model_validate({"wait": "1m30s", "body": "1MiB"})
    assert (value.wait, value.body) == (90.0, 1024**2)
    assert value.model_dump() == {"wait": "90s", "body": "1MiB"}
    assert Timed.model_validate(value.model_dump()) == value


def test_types_turn_refusals_into_validation_errors() -> None:
    with pytest.raises(ValidationError) as info:
        Timed.model_validate({"wait": 60, "body": "lots"})
    messages = [err["msg"] for err in info.value.errors()]
    assert any('"60s"' in m for m in messages)
    assert any("invalid size" in m for m in messages)


def test_json_schema_patterns() -> None:
    schema = Timed.model_json_schema()
    wait = schema["properties"]["wait"]
    assert (wait["type"], wait["pattern"]) == ("string", DURATION_PATTERN)
    assert {"type": "integer", "minimum": 0} in schema["properties"]["body"]["anyOf"]
