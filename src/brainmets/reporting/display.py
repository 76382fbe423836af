"""Result tables as people read them, rendered through pandas' Styler.

A :class:`DisplayTable` holds the text of every cell (plain Unicode:
``≥1000``, ``10–100``, ``↑``), an optional second line per row (the std over
seeds), which cells are marked, and which rows form blocks.
:func:`to_latex` writes it as a complete booktabs ``table*`` with
``Styler.to_latex``. Styler has no ``\\cmidrule`` under spanning headers, no
rule between row blocks and no ``\\resizebox``; those three are added to its
output here. :func:`to_html` writes the same table, marks and caption as an
HTML page with ``Styler.to_html`` (for the Snakemake report), the std in
brackets beside the mean.

The numbers and their marks are decided by the caller
(:mod:`brainmets.reporting.tables`); this module only lays them out.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import pandas as pd

from brainmets.errors import BrainmetsError
from brainmets.reporting import latex

#: How each mark is written in LaTeX (Styler's ``command: options`` form).
LATEX_MARKS = {"best": "textbf: --rwrap;", "second": "underline: --rwrap;", "significant": "textbf: --rwrap;"}
#: Type size of a table: two-column papers set tables one or two sizes below the text.
LATEX_SIZE = "footnotesize"
#: The second line of a row (std over seeds) is set one size smaller than the table.
LATEX_SECOND_LINE = "scriptsize: ;"
#: Column separation of every table (LaTeX's default is 6pt).
LATEX_TABCOLSEP = "4pt"
#: Shrinks the tabular to the text width when it is wider, and only then (graphicx).
LATEX_FIT = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"
#: How each mark is shown in HTML.
HTML_MARKS = {"best": "font-weight: bold;", "second": "text-decoration: underline;",
              "significant": "font-weight: bold;"}
#: Booktabs-like rules and spacing for the HTML report (the selectors are relative to the table).
HTML_STYLES = [
    {"selector": "", "props": "border-collapse: collapse; border-top: 2px solid #222; border-bottom: 2px solid #222;"
                              " font-family: sans-serif; font-size: 13px; margin: 8px;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; padding: 0 0 8px 0; max-width: 70em;"},
    {"selector": "th", "props": "padding: 3px 8px; text-align: center; font-weight: normal;"},
    {"selector": "thead tr:not(:last-child) th:not(:empty)", "props": "border-bottom: 1px solid #888;"},
    {"selector": "thead tr:last-child th", "props": "border-bottom: 1px solid #222;"},
    {"selector": "td", "props": "padding: 2px 8px; text-align: right; white-space: nowrap;"},
]
#: Text of a cell without a value.
MISSING = "–"


def arrow(higher_is_better: bool) -> str:
    """The direction of better, as the paper writes it in headers."""
    return "↑" if higher_is_better else "↓"


def rank_marks(values: list[float], higher_is_better: bool, decimals: int) -> list[str | None]:
    """``"best"``/``"second"``/None for each value, compared as printed.

    Values are compared after rounding to the printed precision, so two
    cells that read the same get the same mark (ties share bold). NaN never
    gets a mark. Where every value reads the same, nothing is best; "second"
    needs a third distinct value below it, else it would mark the worst.
    """
    rounded = [None if (v is None or math.isnan(v)) else round(float(v), decimals) for v in values]
    distinct = sorted({v for v in rounded if v is not None}, reverse=higher_is_better)
    marks: list[str | None] = []
    for v in rounded:
        if v is None or len(distinct) < 2:
            marks.append(None)
        elif v == distinct[0]:
            marks.append("best")
        elif len(distinct) > 2 and v == distinct[1]:
            marks.append("second")
        else:
            marks.append(None)
    return marks


@dataclass
class DisplayTable:
    """Texts, headers and marks of one table.

    ``columns`` gives each column's header levels, top first (``""``: no
    header at that level); the first ``n_labels`` columns are row labels,
    the rest are values. ``second_lines`` (optional) gives each row's second
    line (``""``: none), e.g. the std under the mean. ``marks`` has one entry
    per cell: a key of :data:`LATEX_MARKS` or None. Rows with the same
    ``blocks`` entry form a block; blocks are separated by a rule. A label
    equal to the one above it in the same block is printed once.
    """

    name: str
    caption: str
    columns: list[tuple[str, ...]]
    n_labels: int
    cells: list[list[str]]
    marks: list[list[str | None]]
    second_lines: list[list[str]] | None = None
    blocks: list[str] | None = None

    def __post_init__(self) -> None:
        depths = {len(c) for c in self.columns}
        if len(depths) > 1:
            raise BrainmetsError(f"{self.name}: columns have different numbers of header levels: {self.columns}")
        n = len(self.columns)
        for what, rows in (("cells", self.cells), ("marks", self.marks), ("second lines", self.second_lines or [])):
            for row in rows:
                if len(row) != n:
                    raise BrainmetsError(f"{self.name}: a row of {what} has {len(row)} entries, expected {n}: {row}")

    def labels_once(self) -> list[list[str]]:
        """Rows with each label blanked where it repeats the row above within the block."""
        blocks = self.blocks or [""] * len(self.cells)
        out = []
        for i, row in enumerate(self.cells):
            row = list(row)
            if i > 0 and blocks[i] == blocks[i - 1]:
                for j in range(self.n_labels):
                    if self.cells[i][:j + 1] != self.cells[i - 1][:j + 1]:
                        break
                    row[j] = ""
            out.append(row)
        return out

    def block_starts(self) -> list[int]:
        """Indices of the rows that begin a block, the first row excepted."""
        blocks = self.blocks or []
        return [i for i in range(1, len(blocks)) if blocks[i] != blocks[i - 1]]


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


def to_latex(table: DisplayTable, fit_width: bool = False) -> str:
    """A complete booktabs ``table*`` float (sizes: :data:`LATEX_SIZE`, :data:`LATEX_SECOND_LINE`).

    ``fit_width`` shrinks the tabular to the text width where it is wider
    (needs ``\\usepackage{graphicx}``).
    """
    columns = [tuple(latex.escape(h) for h in col) for col in _without_empty_levels(table.columns)]
    rows, props, starts = [], [], []
    for i, row in enumerate(table.labels_once()):
        if i in table.block_starts():
            starts.append(len(rows))
        rows.append([latex.escape(c) for c in row])
        props.append([LATEX_MARKS[m] if m else "" for m in table.marks[i]])
        second = table.second_lines[i] if table.second_lines else []
        if any(second):
            rows.append([latex.escape(c) for c in second])
            props.append([LATEX_SECOND_LINE if c else "" for c in second])
    frame = pd.DataFrame(rows, columns=_header_index(columns))
    styles = pd.DataFrame(props, index=frame.index, columns=frame.columns)
    styler = frame.style.hide(axis="index").apply(lambda _: styles, axis=None)
    styler.set_table_styles([
        {"selector": LATEX_SIZE, "props": ":;"},
        {"selector": "setlength", "props": f":{{\\tabcolsep}}{{{LATEX_TABCOLSEP}}};"},
    ], overwrite=False)
    text = styler.to_latex(
        column_format="l" * table.n_labels + "r" * (len(columns) - table.n_labels),
        hrules=True,
        multicol_align="c",
        environment="table*",
        position="tbp",
        position_float="centering",
        caption=latex.escape(table.caption),
        label=f"tab:{table.name}",
    )
    lines = text.splitlines()
    # From the bottom up, so that each insertion leaves the indices above it valid.
    body = lines.index(r"\midrule") + 1
    for start in reversed(starts):
        lines.insert(body + start, r"\midrule")
    header = lines.index(r"\toprule") + 1
    for level in reversed(range(len(columns[0]) - 1)):
        rules = [rf"\cmidrule(lr){{{a}-{b}}}" for a, b, title in _spans(columns, level) if title]
        if rules:
            lines.insert(header + level + 1, " ".join(rules))
    if fit_width:
        begin = next(i for i, line in enumerate(lines) if line.startswith(r"\begin{tabular}"))
        lines.insert(begin, LATEX_FIT)
        lines[lines.index(r"\end{tabular}")] = r"\end{tabular}}"
    needs = "booktabs" + (", graphicx" if fit_width else "")
    return "\n".join([f"% Generated by `brainmets tables`; needs \\usepackage{{{needs}}}."] + lines) + "\n"


def to_html(table: DisplayTable) -> str:
    """A standalone HTML page: the caption above the table, marks in bold and underline, a rule between blocks."""
    columns = _without_empty_levels(table.columns)
    rows, props = [], []
    starts = set(table.block_starts())
    for i, row in enumerate(table.labels_once()):
        second = table.second_lines[i] if table.second_lines else [""] * len(row)
        rows.append([f"{c} {s}" if s else c for c, s in zip(row, second)])
        rule = "border-top: 1px solid #222;" if i in starts else ""
        props.append([
            ("text-align: left;" if j < table.n_labels else "") + (HTML_MARKS[m] if m else "") + rule
            for j, m in enumerate(table.marks[i])
        ])
    frame = pd.DataFrame(rows, columns=_header_index(columns))
    styles = pd.DataFrame(props, index=frame.index, columns=frame.columns)
    styler = (frame.style.set_uuid(table.name).hide(axis="index")
              .format(escape="html").format_index(escape="html", axis=1)
              .apply(lambda _: styles, axis=None)
              .set_caption(html.escape(table.caption))
              .set_table_styles(HTML_STYLES))
    return styler.to_html(doctype_html=True)
