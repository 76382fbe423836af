"""LaTeX text: escaping plain text, and a document to compile tables in.

Tables hold plain Unicode text (the HTML report shows it as it is); here it
becomes LaTeX that pdflatex sets without extra packages: ``–`` an en dash,
``≥``, ``↑`` and ``³`` math symbols. The tables themselves are laid out by
:mod:`brainmets.reporting.display`.
"""

from __future__ import annotations

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
    "<": "$<$",
    ">": "$>$",
    "–": "--",
    "—": "---",
    "−": "$-$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "³": "$^3$",
    "×": r"$\times$",
}


def escape(text: str) -> str:
    """LaTeX for plain text: special characters escaped (``+``, ``-``, ``(`` are left alone)."""
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


def standalone_document(floats: list[str]) -> str:
    """A two-column article holding table floats, as a paper would (for compiling checks and previews)."""
    parts = [
        r"\documentclass[10pt,twocolumn,a4paper]{article}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\begin{document}",
    ]
    for float_ in floats:
        parts += [float_, r"\clearpage"]
    parts.append(r"\end{document}")
    return "\n".join(parts) + "\n"
