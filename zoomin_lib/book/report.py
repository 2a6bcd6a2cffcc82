"""Tables for the chapters: a list of row dicts rendered as a Markdown table in the notebook."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

__all__ = ["MarkdownTable", "format_cell", "markdown_table"]


class MarkdownTable(str):
    """A Markdown string that Jupyter (and the book) display as a table; no IPython import needed."""

    def _repr_markdown_(self) -> str:
        return str(self)

    @property
    def data(self) -> str:
        """The Markdown source."""
        return str(self)


def format_cell(value: Any, digits: int = 3) -> str:
    """A table cell: booleans as yes/no, floats in `digits` significant figures, the rest as str.

    A float whose integer part has more than `digits` digits (below 10^7) is written whole, as 3260 or 20851,
    not as 3.26e+03: a quoted paper figure keeps its digits and a percentage reads as one.
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isfinite(value) and 10 ** digits <= abs(value) < 1e7:
            return f"{value:.0f}"
        text = f"{value:.{digits}g}"
        if "e+" in text and abs(value) < 1e7:  # rounding carried it to 10^digits: 99.7 -> 1e+02
            return f"{value:.0f}"
        return text
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 3) -> MarkdownTable:
    """Render rows (dicts sharing keys) as a Markdown table; displays as a table in Jupyter and the book."""
    if not rows:
        raise ValueError("markdown_table needs at least one row")
    columns = list(columns or rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(row.get(c, ""), digits) for c in columns) + " |" for row in rows]
    return MarkdownTable("\n".join(lines))
