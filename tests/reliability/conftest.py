"""Fixtures of the reliability suite: the figures every scenario records."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import Figures


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    """Each scenario's figures; SPORK_RELIABILITY_REPORT=FILE writes them as a table at the end."""
    found = Figures()
    yield found
    report = os.environ.get("SPORK_RELIABILITY_REPORT")
    if report and found.rows:
        Path(report).write_text(found.markdown())
