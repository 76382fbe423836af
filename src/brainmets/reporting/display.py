"""Result tables as people read them, rendered through pandas' Styler.

A :class:`DisplayTable` holds the text of every cell, the header levels of
every column and which cells are marked (best bold, second underlined).
:func:`to_latex` writes it as booktabs LaTeX with ``Styler.to_latex``;
Styler has no ``\\cmidrule`` under spanning headers and no rule between
row blocks, so those two are added to its output here.

The numbers and their marks are decided by the caller
(:mod:`brainmets.reporting.tables`); this module only lays them out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from brainmets.errors import BrainmetsError
from brainmets.reporting import latex

#: How each mark is written in LaTeX (Styler's ``command: options`` form).
LATEX_MARKS = {"best": "textbf: --rwrap;", "second": "underline: --rwrap;", "significant": "textbf: --rwrap;"}


def rank_marks(values: list[float], higher_is_better: bool, decimals: int) -> list[str | None]:
    """``"best"``/``"second"``/None for each value, compared as printed.

    Values are compared after rounding to the printed precision, so two
    cells that read the same get the same mark (ties share bold). NaN never
    gets a mark; with fewer than two distinct values there is no second.
    """
    rounded = [None if (v is None or math.isnan(v)) else round(float(v), decimals) for v in values]
    distinct = sorted({v for v in rounded if v is not None}, reverse=higher_is_better)
    marks: list[str | None] = []
    for v in rounded:
        if v is None:
            marks.append(None)
        elif v == distinct[0]:
            marks.append("best")
        elif len(distinct) > 1 and v == distinct[1]:
            marks.append("second")
        else:
            marks.append(None)
    return marks


@dataclass
class DisplayTable:
    """Texts, headers and marks of one table.

    ``columns`` gives each column's header levels, top first (``""``: no
    header at that level); the first ``n_labels`` columns are row labels,
    the rest are numbers. ``cells`` are plain text (a
    :class:`~brainmets.reporting.latex.Raw` text is written to LaTeX as it
    is). ``marks`` has one entry per cell: a key of :data:`LATEX_MARKS` or None.
    """

    columns: list[tuple[str, ...]]
    n_labels: int
    cells: list[list[str]]
    marks: list[list[str | None]]
    comment: str = ""

    def __post_init__(self) -> None:
        depths = {len(c) for c in self.columns}
        if len(depths) > 1:
            raise BrainmetsError(f"table columns have different numbers of header levels: {self.columns}")
        for row, marks in zip(self.cells, self.marks):
            if len(row) != len(self.columns) or len(marks) != len(self.columns):
                raise BrainmetsError(f"table row has {len(row)} cells, expected {len(self.columns)}: {row}")


def _without_empty_levels(columns: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Drop header levels that have no title in any column (the last level always stays)."""
    keep = [lv for lv in range(len(columns[0]) - 1) if any(c[lv] for c in columns)] + [len(columns[0]) - 1]
    return [tuple(c[lv] for lv in keep) for c in columns]


def _header_index(columns: list[tuple[str, ...]]) -> pd.Index:
    if len(columns[0]) == 1:
        return pd.Index([c[0] for c in columns])
    return pd.MultiIndex.from_tuples(columns)


def _spans(columns: list[tuple[str, ...]], level: int) -> list[tuple[int, int, str]]:
    """(first, last, title) of the runs of columns sharing their headers down to ``level`` (1-based columns)."""
    spans: list[tuple[int, int, str]] = []
    for i, col in enumerate(columns, start=1):
        if spans and columns[spans[-1][0] - 1][:level + 1] == col[:level + 1]:
            spans[-1] = (spans[-1][0], i, spans[-1][2])
        else:
            spans.append((i, i, col[level]))
    return spans


def to_latex(table: DisplayTable) -> str:
    """A bare booktabs ``tabular`` (the paper's float and caption wrap it)."""
    columns = [tuple(latex.escape(h) for h in col) for col in _without_empty_levels(table.columns)]
    frame = pd.DataFrame([[latex.escape(c) for c in row] for row in table.cells],
                         columns=_header_index(columns))
    props = pd.DataFrame([[LATEX_MARKS.get(m, "") if m else "" for m in row] for row in table.marks],
                         index=frame.index, columns=frame.columns)
    styler = frame.style.hide(axis="index").apply(lambda _: props, axis=None)
    text = styler.to_latex(
        column_format="l" * table.n_labels + "r" * (len(columns) - table.n_labels),
        hrules=True,
        multicol_align="c",
    )
    lines = text.splitlines()
    header = lines.index(r"\toprule") + 1
    depth = len(columns[0])
    # Bottom-up, so that inserting below one header row does not move the rows above it.
    for level in reversed(range(depth - 1)):
        rules = [rf"\cmidrule(lr){{{a}-{b}}}" for a, b, title in _spans(columns, level) if title]
        if rules:
            lines.insert(header + level + 1, " ".join(rules))
    comment = [f"% {line}" for line in table.comment.splitlines()]
    return "\n".join(comment + lines) + "\n"
