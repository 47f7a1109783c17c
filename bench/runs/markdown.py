"""Markdown tables, one way for every file the suite writes (report.md, quality.md, profile.md, plan.md).

:func:`markdown_table` takes a header and rows of cells already formatted; :func:`frame_table`
formats a frame's columns first. Cells are escaped so that a ``|`` or a line break inside one
cannot split the table. Torch- and pandas-free.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

EMPTY = "—"                       # an empty or not-a-number cell
NOTHING = "_(nothing to show)_"   # what :func:`frame_table` writes for an empty frame


def cell(value: Any) -> str:
    """A cell's text: a ``|`` escaped, a line break made a space."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """``| a | b |`` lines: the header, the rule, one line per row (no trailing newline)."""
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _formatted(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return EMPTY
    return format(value, fmt) if fmt else str(value)


def frame_table(frame: Any, spec: Sequence[tuple[str, str, str]]) -> str:
    """A table of a pandas frame's columns: ``spec`` is ``(column, header, format spec)`` (``""``
    for as-is); None and NaN are a dash; an empty (or no) frame is :data:`NOTHING`. Ends with a newline."""
    if frame is None or frame.empty:
        return NOTHING + "\n"
    rows = [[_formatted(row.get(column), fmt) for column, _, fmt in spec] for _, row in frame.iterrows()]
    return markdown_table([header for _, header, _ in spec], rows) + "\n"
