"""Booktabs LaTeX for result tables, and a structural check of what we emit.

Tables are written as a bare ``tabular`` (no ``table`` float) so that a paper
can ``\\input`` them inside its own float with its own caption. They need
only ``\\usepackage{booktabs}``.

:func:`validate_tabular` is a small LaTeX-aware parser (braces, environments,
column count of every row including ``\\multicolumn``, ``\\cmidrule`` ranges):
every table is checked with it before it is written, so a malformed file
never reaches a paper, even where no TeX engine is installed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from brainmets.errors import BrainmetsError

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


class Raw(str):
    """Text that already is LaTeX: :func:`escape` leaves it as it is."""


def escape(text: str) -> str:
    """Escape LaTeX special characters in plain text (``+``, ``-``, ``(`` are left alone)."""
    if isinstance(text, Raw):
        return text
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


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


def mean_std_cell(mean: float, std: float, decimals: int) -> str:
    """``"75.84 (1.20)"``; the mean alone when std is undefined; ``"--"`` when no value."""
    if mean is None or math.isnan(mean):
        return "--"
    if std is None or math.isnan(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ({std:.{decimals}f})"


def mark(cell: str, how: str | None) -> str:
    if how == "best":
        return rf"\textbf{{{cell}}}"
    if how == "second":
        return rf"\underline{{{cell}}}"
    return cell


@dataclass(frozen=True)
class HeaderGroup:
    """A spanning header over ``width`` columns (empty title: no header, no rule)."""

    title: str
    width: int


def tabular(
    align: str,
    columns: list[str],
    rows: list[list[str]],
    groups: list[HeaderGroup] | None = None,
    comment: str | None = None,
) -> str:
    """A booktabs ``tabular``: optional spanning group headers, a header row, body rows.

    ``columns`` and group titles are escaped here; body cells are taken as
    LaTeX (callers escape text and add ``\\textbf`` etc.).
    """
    n = len(columns)
    if len(re.findall(r"[lcr]", align)) != n:
        raise BrainmetsError(f"column spec {align!r} does not have {n} columns")
    lines = []
    if comment:
        lines += [f"% {line}" for line in comment.splitlines()]
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    if groups:
        if sum(g.width for g in groups) != n:
            raise BrainmetsError("header groups do not span the table's columns")
        cells, rules, start = [], [], 1
        for g in groups:
            if g.title:
                cells.append(rf"\multicolumn{{{g.width}}}{{c}}{{{escape(g.title)}}}")
                rules.append(rf"\cmidrule(lr){{{start}-{start + g.width - 1}}}")
            else:
                cells += [""] * g.width
            start += g.width
        lines.append(" & ".join(cells) + r" \\")
        lines.append(" ".join(rules))
    lines.append(" & ".join(escape(c) for c in columns) + r" \\")
    lines.append(r"\midrule")
    for row in rows:
        if len(row) != n:
            raise BrainmetsError(f"table row has {len(row)} cells, expected {n}: {row}")
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    text = "\n".join(lines) + "\n"
    validate_tabular(text)
    return text


# --------------------------------------------------------------------------- validation

_COMMENT = re.compile(r"(?<!\\)%.*$", re.MULTILINE)
_RULE = re.compile(r"\\(toprule|midrule|bottomrule|hline)(\[[^\]]*\])?|\\cmidrule(\([a-z]*\))?\{(\d+)-(\d+)\}")
_MULTICOLUMN = re.compile(r"^\s*\\multicolumn\{(\d+)\}")


def _braced(text: str, start: int) -> tuple[str, int]:
    """Content of the brace group opening at ``text[start]`` and the index after it."""
    if start >= len(text) or text[start] != "{":
        raise BrainmetsError(f"expected '{{' at offset {start}")
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "\\":
            continue
        if ch == "{" and text[i - 1] != "\\":
            depth += 1
        elif ch == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    raise BrainmetsError("unbalanced braces")


def count_spec_columns(spec: str) -> int:
    """Number of columns in a tabular spec (``l c r p{..} m{..} b{..}``; ``@{}``, ``|``, ``>{}`` ignored)."""
    n, i = 0, 0
    while i < len(spec):
        ch = spec[i]
        if ch in "lcr":
            n, i = n + 1, i + 1
        elif ch in "pmb":
            _, i = _braced(spec, i + 1)
            n += 1
        elif ch in "@!<>":
            _, i = _braced(spec, i + 1)
        elif ch in "| ":
            i += 1
        else:
            raise BrainmetsError(f"unsupported column type {ch!r} in tabular spec {spec!r}")
    return n


def _split_cells(row: str) -> list[str]:
    cells, depth, current, prev = [], 0, [], ""
    for ch in row:
        if ch == "{" and prev != "\\":
            depth += 1
        elif ch == "}" and prev != "\\":
            depth -= 1
        if ch == "&" and prev != "\\" and depth == 0:
            cells.append("".join(current))
            current = []
        else:
            current.append(ch)
        prev = ch
    cells.append("".join(current))
    return cells


def validate_tabular(text: str) -> None:
    """Raise :class:`BrainmetsError` unless ``text`` is one well-formed tabular.

    Checks: balanced unescaped braces; every ``\\begin`` has its ``\\end``;
    every row has as many cells as the column spec (``\\multicolumn{n}``
    counts n); ``\\cmidrule`` ranges lie inside the table.
    """
    body = _COMMENT.sub("", text)
    depth = 0
    prev = ""
    for ch in body:
        if ch == "{" and prev != "\\":
            depth += 1
        elif ch == "}" and prev != "\\":
            depth -= 1
            if depth < 0:
                raise BrainmetsError("LaTeX: '}' without matching '{'")
        prev = ch if not (prev == "\\" and ch == "\\") else ""
    if depth != 0:
        raise BrainmetsError(f"LaTeX: {depth} unclosed '{{'")
    begins = re.findall(r"\\begin\{(\w+\*?)\}", body)
    ends = re.findall(r"\\end\{(\w+\*?)\}", body)
    if begins != list(reversed(ends)):
        raise BrainmetsError(f"LaTeX: environments do not match: begin {begins}, end {ends}")
    m = re.search(r"\\begin\{tabular\}", body)
    if not m or begins.count("tabular") != 1:
        raise BrainmetsError("LaTeX: expected exactly one tabular environment")
    spec, after = _braced(body, m.end())
    ncols = count_spec_columns(spec)
    end = body.index(r"\end{tabular}")
    content = body[after:end]
    for rule in _RULE.finditer(content):
        if rule.group(4):
            lo, hi = int(rule.group(4)), int(rule.group(5))
            if not 1 <= lo <= hi <= ncols:
                raise BrainmetsError(f"LaTeX: \\cmidrule{{{lo}-{hi}}} outside 1-{ncols}")
    content = _RULE.sub("", content)
    rows = re.split(r"(?<!\\)\\\\", content)
    if rows and rows[-1].strip():
        raise BrainmetsError(f"LaTeX: last row not terminated by \\\\: {rows[-1].strip()!r}")
    for row in rows[:-1]:
        cells = _split_cells(row)
        width = 0
        for cell in cells:
            mc = _MULTICOLUMN.match(cell)
            width += int(mc.group(1)) if mc else 1
        if width != ncols:
            raise BrainmetsError(f"LaTeX: row has {width} columns, tabular has {ncols}: {row.strip()!r}")


def standalone_document(tabulars: list[str]) -> str:
    """A minimal article wrapping tables (for compiling checks and previews)."""
    parts = [
        r"\documentclass{article}",
        r"\usepackage[a4paper,landscape,margin=1cm]{geometry}",
        r"\usepackage{booktabs}",
        r"\begin{document}",
        r"\scriptsize",
    ]
    for t in tabulars:
        parts += [r"\noindent", t, r"\par\bigskip"]
    parts.append(r"\end{document}")
    return "\n".join(parts) + "\n"
