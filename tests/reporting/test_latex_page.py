"""Every LaTeX table compiles with pdflatex in a two-column article and fits its page.

Tables are checked as written for the fake study (the default setup's
rows) and with the paper setup's rows (its nine Table 2 models, all 15
subsets) holding the widest numbers they can print.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainmets.constants import all_subsets, subset_label
from brainmets.reporting import display, latex, tables
from brainmets.reporting.collect import load_report_config, model_display_name
from brainmets.reporting.tables import SummaryTable

REPO = Path(__file__).resolve().parents[2]
#: Slack for TeX's rounding; a table that does not fit overflows by tens of points.
TOLERANCE_PT = 2.0
_OVERFULL = re.compile(r"Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\)")


def compile_floats(floats: list[str], workdir: Path) -> list[float]:
    """pdflatex a two-column article holding ``floats``; the widths (pt) of its overfull lines."""
    assert shutil.which("pdflatex"), "pdflatex not installed: run scripts/setup.sh --test"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "doc.tex").write_text(latex.standalone_document(floats))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=workdir, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (workdir / "doc.pdf").read_bytes()[:5] == b"%PDF-"
    return [float(w) for w in _OVERFULL.findall((workdir / "doc.log").read_text(errors="replace"))]


@pytest.fixture(scope="module")
def written(shared_results):
    """The tables of the fake study in both Table 2 layouts."""
    cfg = load_report_config(shared_results.config)
    out = {}
    for layout in tables.TABLE2_LAYOUTS:
        cfg.table2_layout = layout
        out[layout] = shared_results.root / f"tables_{layout}"
        tables.make_tables(shared_results.results, cfg, out[layout])
    return out


@pytest.mark.parametrize("layout", tables.TABLE2_LAYOUTS)
@pytest.mark.parametrize("name", tables.TABLE_NAMES)
def test_written_table_fits_two_column_page(written, name, layout, tmp_path):
    tex = (written[layout] / f"{name}.tex").read_text()
    widths = compile_floats([tex], tmp_path)
    assert all(w <= TOLERANCE_PT for w in widths), f"{name} ({layout}): overfull by {widths} pt"
    floats = tex.count(r"\begin{table*}")
    assert floats == (2 if (name, layout) == ("table2_comparison", "split") else 1)
    assert tex.count(r"\caption{") == floats and tex.count(r"\label{tab:") == floats


# --------------------------------------------------------------------------- the paper setup, widest numbers


def paper_config():
    return load_report_config(REPO / "configs" / "paper.yaml")


def widest(columns: list[tables.Column], labels: list[list[str]], rng: np.random.Generator):
    """Means and stds as wide as each column prints in practice (distinct, so that marks are set)."""
    highest = {
        "dice": 100.0, "hd95": 373.13, "sens": 100.0, "fp_per_patient": 99.99, "parameters_m": 99.99,
        "gmac": 999.9, "gflop": 99999.9, "seconds": 999.99, "windows": 100.0,
    }
    mean, std = {}, {}
    for col in columns:
        top = next(v for k, v in highest.items() if k in col.key)
        mean[col.key] = top * rng.uniform(0.9, 1.0, len(labels))
        std[col.key] = top * rng.uniform(0.1, 0.5, len(labels))
    keys = [f"row{i}" for i in range(len(labels))]
    return keys, pd.DataFrame(mean, index=keys), pd.DataFrame(std, index=keys)


def paper_tables() -> dict[str, SummaryTable]:
    cfg = paper_config()
    rng = np.random.default_rng(0)
    models = [model_display_name(m) for m in cfg.baseline_models]
    models += ["Two-stage (T1c+T1+T2+FLAIR, selected)", "Two-stage (T1c+T1+T2+FLAIR)"]
    made = {}
    for name, columns, headers, labels, groups in (
        ("table1_modality", tables.modality_columns(), ["Subset"], [[subset_label(s)] for s in all_subsets()], None),
        ("table2_comparison", tables.comparison_columns(), ["Model"], [[m] for m in models], None),
        ("efficiency", tables.EFFICIENCY_COLUMNS, ["Model"], [[m] for m in models], None),
        ("detection", tables.detection_columns(cfg.size_bins), ["Region", "Model"],
         [[r, m] for r in cfg.detection_regions for m in models], [r for r in cfg.detection_regions for _ in models]),
    ):
        keys, mean, std = widest(columns, labels, rng)
        made[name] = SummaryTable(name, f"Caption of {name}.", headers, labels, keys, columns, mean, std,
                                  [3] * len(keys), rank_groups=groups)
    return made


def paper_significance() -> pd.DataFrame:
    cfg = paper_config()
    models = [model_display_name(m) for m in cfg.baseline_models] + ["Two-stage (T1c+T1+T2+FLAIR)"]
    rows = [dict(reference="Two-stage (T1c+T1+T2+FLAIR, selected)", model=m, metric=metric, region=region,
                 n_cases=999, mean_difference=-88.88, p_value=0.123, p_holm=0.0001, significant=True)
            for m in models for metric in tables.SIGNIFICANCE_METRICS for region in ("WT", "TC", "ET")]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("name", ["table1_modality", "table2_comparison", "efficiency", "detection"])
def test_paper_setup_table_fits_two_column_page(name, tmp_path):
    table = paper_tables()[name]
    texts = ([table.to_latex(fit_width=True), table.to_latex(split=True)] if name == "table2_comparison"
             else [table.to_latex()])
    for i, tex in enumerate(texts):
        widths = compile_floats([tex], tmp_path / str(i))
        assert all(w <= TOLERANCE_PT for w in widths), f"{name}: overfull by {widths} pt"


def test_paper_setup_significance_fits_two_column_page(tmp_path):
    tex = display.to_latex(tables.significance_display(paper_significance()))
    widths = compile_floats([tex], tmp_path)
    assert all(w <= TOLERANCE_PT for w in widths), f"overfull by {widths} pt"


def test_full_table2_at_natural_size_would_overflow(tmp_path):
    """What the layouts are for, and proof that the check above sees an overflow."""
    table = paper_tables()["table2_comparison"]
    widths = compile_floats([display.to_latex(table.display())], tmp_path)
    assert max(widths, default=0.0) > 50.0
