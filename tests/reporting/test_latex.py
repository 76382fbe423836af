"""LaTeX helpers: escaping, marks, and the structural validator catching real mistakes."""

from __future__ import annotations

import pytest

from brainmets.errors import BrainmetsError
from brainmets.reporting import latex


def test_escape_special_characters():
    assert latex.escape("swin_unetr 50% & #1 {x} $") == r"swin\_unetr 50\% \& \#1 \{x\} \$"
    assert latex.escape("T1c+T1+FLAIR (selected)") == "T1c+T1+FLAIR (selected)"
    assert latex.escape("<10") == r"\textless{}10"
    assert latex.escape(latex.Raw("mm$^3$")) == "mm$^3$"


@pytest.mark.parametrize(
    "values, higher, expected",
    [
        ([1.0, 3.0, 2.0], True, [None, "best", "second"]),
        ([1.0, 3.0, 2.0], False, ["best", None, "second"]),
        ([2.004, 2.001, 1.0], True, ["best", "best", "second"]),  # equal as printed (2 decimals)
        ([float("nan"), 1.0], True, [None, "best"]),
        ([5.0], True, ["best"]),
    ],
)
def test_rank_marks(values, higher, expected):
    assert latex.rank_marks(values, higher, 2) == expected


def test_tabular_roundtrip_is_valid():
    text = latex.tabular("lrr", ["Model", "WT", "TC"], [["a\\_b", r"\textbf{1.00 (0.10)}", "2.00"]],
                         groups=[latex.HeaderGroup("", 1), latex.HeaderGroup("Dice (%)", 2)])
    latex.validate_tabular(text)
    assert r"\cmidrule(lr){2-3}" in text and r"\multicolumn{2}{c}{Dice (\%)}" in text


@pytest.mark.parametrize(
    "broken, problem",
    [
        ("\\begin{tabular}{lr}\n\\toprule\na & b & c \\\\\n\\bottomrule\n\\end{tabular}\n", "3 columns"),
        ("\\begin{tabular}{lr}\n\\toprule\na & \\textbf{b \\\\\n\\bottomrule\n\\end{tabular}\n", "unclosed"),
        ("\\begin{tabular}{lr}\n\\toprule\na & b \\\\\n\\cmidrule(lr){2-3}\n\\end{tabular}\n", "cmidrule"),
        ("\\begin{tabular}{lr}\na & b \\\\\n", "environments"),
        ("\\begin{tabular}{lr}\na & b \\\\\nc & d\n\\end{tabular}\n", "not terminated"),
        ("\\begin{tabular}{lr}\n\\multicolumn{3}{c}{x} \\\\\n\\end{tabular}\n", "3 columns"),
    ],
)
def test_validator_rejects_malformed_tables(broken, problem):
    with pytest.raises(BrainmetsError, match=problem):
        latex.validate_tabular(broken)


def test_validator_accepts_escaped_braces_and_ampersands():
    latex.validate_tabular("\\begin{tabular}{@{}l|r@{}}\na \\& \\{ & b\\% \\\\\n\\end{tabular}\n")
