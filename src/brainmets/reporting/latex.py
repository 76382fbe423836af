"""LaTeX text: escaping plain text, and a document to compile tables in.

The tables themselves are laid out by :mod:`brainmets.reporting.display`.
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
