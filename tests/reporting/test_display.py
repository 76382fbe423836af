"""Table layout: escaping, ranking marks, and what Styler's LaTeX holds."""

from __future__ import annotations

import pytest

from brainmets.reporting import display, latex


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
    assert display.rank_marks(values, higher, 2) == expected


def test_latex_marks_headers_and_rules():
    table = display.DisplayTable(
        columns=[("", "Model"), ("Dice (%)", "WT"), ("Dice (%)", "TC"), ("", "n")],
        n_labels=1,
        cells=[["swin_unetr", "1.00 (0.10)", "2.00", "3"], ["a & b", "0.50", "4.00", "3"]],
        marks=[[None, "best", "second", None], [None, "second", "best", None]],
        comment="first line\nsecond line",
    )
    tex = display.to_latex(table)
    lines = tex.splitlines()
    assert lines[:2] == ["% first line", "% second line"]
    assert lines[2] == r"\begin{tabular}{lrrr}"
    header = lines.index(r"\toprule") + 1
    assert lines[header].split("&")[1].strip() == r"\multicolumn{2}{c}{Dice (\%)}"
    assert lines[header + 1] == r"\cmidrule(lr){2-3}"
    body = lines[lines.index(r"\midrule") + 1:lines.index(r"\bottomrule")]
    assert [c.strip() for c in body[0].rstrip(r"\\").split("&")] == [
        r"swin\_unetr", r"\textbf{1.00 (0.10)}", r"\underline{2.00}", "3"]
    assert [c.strip() for c in body[1].rstrip(r"\\").split(" & ")] == [
        r"a \& b", r"\underline{0.50}", r"\textbf{4.00}", "3"]


def test_header_level_without_titles_is_dropped():
    table = display.DisplayTable([("", "Model"), ("", "s")], 1, [["a", "1.0"]], [[None, None]])
    lines = display.to_latex(table).splitlines()
    assert lines[lines.index(r"\toprule") + 1] == r"Model & s \\"
    assert "cmidrule" not in "\n".join(lines)
