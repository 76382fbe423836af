"""Table layout: escaping, ranking marks, and what Styler's LaTeX holds."""

from __future__ import annotations

import pytest

from brainmets.reporting import display, latex


def test_escape_special_characters_and_typography():
    assert latex.escape("swin_unetr 50% & #1 {x} $") == r"swin\_unetr 50\% \& \#1 \{x\} \$"
    assert latex.escape("T1c+T1+FLAIR (selected)") == "T1c+T1+FLAIR (selected)"
    assert latex.escape("<10 10–100 ≥1000 mm³") == r"$<$10 10--100 $\geq$1000 mm$^3$"
    assert latex.escape("Dice ↑ HD95 ↓ −1.5") == r"Dice $\uparrow$ HD95 $\downarrow$ $-$1.5"


@pytest.mark.parametrize(
    "values, higher, expected",
    [
        ([1.0, 3.0, 2.0], True, [None, "best", "second"]),
        ([1.0, 3.0, 2.0], False, ["best", None, "second"]),
        ([2.004, 2.001, 1.0, 0.5], True, ["best", "best", "second", None]),  # equal as printed (2 decimals)
        ([float("nan"), 1.0, 2.0], True, [None, None, "best"]),  # two values: the other is the worst, not second
        ([0.0, 0.0, 0.001], False, [None, None, None]),  # all read 0.00: nothing is best
        ([5.0], True, [None]),
    ],
)
def test_rank_marks(values, higher, expected):
    assert display.rank_marks(values, higher, 2) == expected


def body_lines(tex: str) -> list[str]:
    lines = tex.splitlines()
    return lines[lines.index(r"\midrule") + 1:lines.index(r"\bottomrule")]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.removesuffix(r"\\").split(" & ")]


def test_latex_float_marks_headers_rules_and_second_lines():
    table = display.DisplayTable(
        name="demo",
        caption="Demo: 10–100 mm³ & more",
        columns=[("", "Model"), ("Dice (%) ↑", "WT"), ("Dice (%) ↑", "TC"), ("", "n")],
        n_labels=1,
        cells=[["swin_unetr", "1.00", "2.00", "3"], ["a & b", "0.50", "4.00", "3"]],
        marks=[[None, "best", "second", None], [None, "second", "best", None]],
        second_lines=[["", "(0.10)", "", ""], ["", "", "", ""]],
    )
    tex = display.to_latex(table)
    lines = tex.splitlines()
    assert lines[1:3] == [r"\begin{table*}[tbp]", r"\centering"]
    assert r"\caption{Demo: 10--100 mm$^3$ \& more}" in lines and r"\label{tab:demo}" in lines
    assert lines[-1] == r"\end{table*}" and "resizebox" not in tex
    header = lines.index(r"\toprule") + 1
    assert cells(lines[header])[1] == r"\multicolumn{2}{c}{Dice (\%) $\uparrow$}"
    assert lines[header + 1] == r"\cmidrule(lr){2-3}"
    body = body_lines(tex)
    assert len(body) == 3  # the second row has no std line
    assert cells(body[0]) == [r"swin\_unetr", r"\textbf{1.00}", r"\underline{2.00}", "3"]
    assert cells(body[1]) == ["", r"\scriptsize (0.10)", "", ""]
    assert cells(body[2]) == [r"a \& b", r"\underline{0.50}", r"\textbf{4.00}", "3"]


def test_blocks_are_ruled_and_repeated_labels_printed_once():
    table = display.DisplayTable(
        "blocks", "Blocks", [("Region",), ("Model",), ("x",)], 2,
        cells=[["WT", "a", "1"], ["WT", "b", "2"], ["TC", "a", "3"], ["TC", "a", "4"]],
        marks=[[None] * 3] * 4, blocks=["WT", "WT", "TC", "TC"],
    )
    body = body_lines(display.to_latex(table))
    assert [cells(b) if b != r"\midrule" else b for b in body] == [
        ["WT", "a", "1"], ["", "b", "2"], r"\midrule", ["TC", "a", "3"], ["", "", "4"]]


def test_fit_width_wraps_the_tabular():
    table = display.DisplayTable("w", "W", [("Model",), ("x",)], 1, [["a", "1"]], [[None, None]])
    lines = display.to_latex(table, fit_width=True).splitlines()
    begin = next(i for i, line in enumerate(lines) if line.startswith(r"\begin{tabular}"))
    assert lines[begin - 1] == display.LATEX_FIT and r"\end{tabular}}" in lines
    assert "graphicx" in lines[0]


def test_header_level_without_titles_is_dropped():
    table = display.DisplayTable("t", "T", [("", "Model"), ("", "s")], 1, [["a", "1.0"]], [[None, None]])
    lines = display.to_latex(table).splitlines()
    assert lines[lines.index(r"\toprule") + 1] == r"Model & s \\"
    assert "cmidrule" not in "\n".join(lines)
