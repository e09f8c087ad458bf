"""Tables for people: one row per line when the table fits the width, else one ``key: value``
block per row, so that no column is dropped and no value is cut or folded in two.

Rich shrinks a table that is too wide by wrapping, truncating ("…") and finally squeezing
columns out of sight; a value folded over two lines cannot be copied either (a URL, a key).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.text import Text

UNBOUNDED = 1_000_000
PIPED_WIDTH = 160  # piped output without COLUMNS: rows stay whole for grep and less


class Rows:
    """A table of text cells (``str`` is never read as markup; ``Text`` keeps its style).

    A cell may hold several lines (one endpoint each, say); ``right`` names the columns
    aligned right in the table form.
    """

    def __init__(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[str | Text]],
        *,
        right: Collection[str] = (),
    ) -> None:
        from rich.text import Text

        self.columns = tuple(columns)
        self.rows = [tuple(c if isinstance(c, Text) else Text(c) for c in row) for row in rows]
        self.right = frozenset(right)
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"a row of {len(row)} cells in a table of {len(self.columns)}")

    def table(self) -> Any:
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for column in self.columns:
            table.add_column(
                column, justify="right" if column in self.right else "left", no_wrap=True
            )
        for row in self.rows:
            table.add_row(*row)
        return table

    def blocks(self) -> Iterable[Text]:
        """Each row as ``column: value`` lines, values aligned, a blank line between rows; a
        value is never wrapped (the terminal wraps a long one, and it stays one value)."""
        from rich.text import Text

        width = max(len(c) for c in self.columns) + 2
        for index, row in enumerate(self.rows):
            if index:
                yield Text("")
            for column, cell in zip(self.columns, row, strict=True):
                for n, line in enumerate(cell.split("\n") or [Text("")]):
                    label = f"{column}:" if n == 0 else ""
                    out = Text(label.ljust(width), style="bold" if n == 0 else "")
                    out.append_text(line)
                    out.no_wrap = True
                    out.overflow = "ignore"
                    yield out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.measure import Measurement

        table = self.table()
        # Measured as if the width had no limit: rich clamps a measurement to the width.
        wanted = Measurement.get(console, options.update_width(UNBOUNDED), table).maximum
        if wanted <= options.max_width:
            yield table
        else:
            yield from self.blocks()


def console() -> Console:
    """The console tables are printed on: the terminal's width (or $COLUMNS); piped output
    without $COLUMNS gets a wide one, since rich would assume 80 columns."""
    from rich.console import Console

    out = Console()
    if not out.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        out.width = max(out.width, PIPED_WIDTH)
    return out


def show(renderable: Any, out: Console | None = None) -> None:
    """Print ``renderable`` (a Rows, or a group holding one) without cropping long lines."""
    (out or console()).print(renderable, crop=False)
