"""Tables: numbers against hand computation, marks, significance, detection, LaTeX."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess

import pandas as pd
import pytest
from scipy.stats import wilcoxon

from brainmets.cli import main
from brainmets.errors import BrainmetsError
from brainmets.reporting import latex
from brainmets.reporting.collect import load_report_config
from brainmets.reporting.tables import make_tables

TABLE_NAMES = ("table1_modality", "table2_comparison", "table2_significance", "efficiency", "detection")
SELECTED = ("twostage", "combined", "selected")


@pytest.fixture(scope="module")
def tables(shared_results):
    """Tables of the shared (read-only) results tree, built once for this module."""
    out = shared_results.root / "tables"
    make_tables(shared_results.results, load_report_config(shared_results.config), out)
    return out


def seed_cell(spec, run, metric, regions, scale):
    """Mean and sample std over seeds of the per-seed mean over test cases (regions averaged per seed)."""
    n = len(spec.TEST_CASES)
    per_seed = [
        statistics.mean(
            statistics.mean(spec.METRICS[metric](run, "test", s, ci, r) for ci in range(n)) for r in regions
        ) * scale
        for s in spec.SEEDS
    ]
    return statistics.mean(per_seed), statistics.stdev(per_seed)


def tex_rows(tex: str) -> dict[str, list[str]]:
    """Body rows of a generated tabular, keyed by their first cell."""
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    rows = [r.strip() for r in body.split(r"\\") if r.strip()]
    return {r.split(" & ")[0]: r.split(" & ") for r in rows}


def test_every_table_written_as_csv_and_tex(tables):
    from brainmets.reporting.tables import TABLE_NAMES as names

    assert tuple(names) == TABLE_NAMES
    for name in TABLE_NAMES:
        assert (tables / f"{name}.csv").stat().st_size > 50
        latex.validate_tabular((tables / f"{name}.tex").read_text())


def test_table1_numbers_equal_hand_computation(tables, spec):
    df = pd.read_csv(tables / "table1_modality.csv")
    assert df["subset"].tolist() == ["T1c", "FLAIR", "T1c+FLAIR"]  # configured order
    for row in df.itertuples(index=False):
        run = ("modality", "unet", row.subset_key)
        for metric, region in [("legacy_dice", "WT"), ("lesion_dice", "NETC"), ("lesion_dice", "SNFH")]:
            mean, std = seed_cell(spec, run, metric, [region], 100)
            assert getattr(row, f"{metric}_{region}") == pytest.approx(mean, abs=1e-5)
            assert getattr(row, f"{metric}_{region}_std") == pytest.approx(std, abs=1e-5)
        mean, std = seed_cell(spec, run, "lesion_dice", ["WT", "TC", "ET"], 100)
        assert row.lesion_dice_avg == pytest.approx(mean, abs=1e-5)
        assert row.lesion_dice_avg_std == pytest.approx(std, abs=1e-5)


def test_table2_numbers_and_marks(tables, spec):
    df = pd.read_csv(tables / "table2_comparison.csv").set_index("run")
    mean, std = seed_cell(spec, SELECTED, "lesion_hd95", ["ET"], 1)
    assert df.at["twostage/combined/selected", "lesion_hd95_ET"] == pytest.approx(mean, abs=1e-5)
    assert df.at["twostage/combined/selected", "lesion_hd95_ET_std"] == pytest.approx(std, abs=1e-5)
    assert df.at["twostage/combined/selected", "model"] == "Two-stage (T1c+FLAIR, selected)"

    rows = tex_rows((tables / "table2_comparison.tex").read_text())
    headers = ["Model"] + [f"{m}_{r}" for m in ("legacy_dice", "lesion_dice", "legacy_hd95", "lesion_hd95")
                           for r in ("WT", "TC", "ET", "avg")]
    col = {h: i for i, h in enumerate(headers)}
    selected, all_four = "Two-stage (T1c+FLAIR, selected)", "Two-stage (T1c+T1+T2+FLAIR)"
    # Dice: higher is better; the selected two-stage model is best, SegResNet second.
    assert rows[selected][col["lesion_dice_ET"]].startswith(r"\textbf{")
    assert rows["SegResNet"][col["lesion_dice_ET"]].startswith(r"\underline{")
    assert not rows["3D U-Net"][col["lesion_dice_ET"]].startswith("\\")
    # Legacy Dice of the two two-stage models is identical: both bold, the next one underlined.
    assert rows[selected][col["legacy_dice_WT"]].startswith(r"\textbf{")
    assert rows[all_four][col["legacy_dice_WT"]].startswith(r"\textbf{")
    assert rows["SegResNet"][col["legacy_dice_WT"]].startswith(r"\underline{")
    # HD95: lower is better; SegResNet lowest, 3D U-Net second, although their Dice is worse.
    for key in ("lesion_hd95_WT", "legacy_hd95_avg"):
        assert rows["SegResNet"][col[key]].startswith(r"\textbf{")
        assert rows["3D U-Net"][col[key]].startswith(r"\underline{")
        assert not rows[all_four][col[key]].startswith("\\")
    hd_mean, hd_std = seed_cell(spec, ("baselines", "segresnet", spec.ALL_FOUR), "lesion_hd95", ["WT"], 1)
    assert rows["SegResNet"][col["lesion_hd95_WT"]] == rf"\textbf{{{hd_mean:.2f} ({hd_std:.2f})}}"


def test_significance_matches_scipy_and_holm_by_hand(tables, spec):
    df = pd.read_csv(tables / "table2_significance.csv")
    assert set(df["model"]) == {"3D U-Net", "SegResNet", "Two-stage (T1c+T1+T2+FLAIR)"}
    assert len(df) == 3 * 2 * 3  # models x metrics x regions
    n = len(spec.TEST_CASES)
    others = {"3D U-Net": ("baselines", "unet", spec.ALL_FOUR),
              "SegResNet": ("baselines", "segresnet", spec.ALL_FOUR),
              "Two-stage (T1c+T1+T2+FLAIR)": ("twostage", "combined", spec.ALL_FOUR)}
    raw = []
    for row in df.itertuples(index=False):
        f = spec.METRICS[row.metric]
        ref = [statistics.mean(f(SELECTED, "test", s, ci, row.region) for s in spec.SEEDS) * 100 for ci in range(n)]
        oth = [statistics.mean(f(others[row.model], "test", s, ci, row.region) for s in spec.SEEDS) * 100
               for ci in range(n)]
        if all(abs(a - b) < 1e-9 for a, b in zip(ref, oth)):
            assert row.p_value == 1.0 and "zero" in row.note  # legacy Dice of the two two-stage models
        else:
            assert row.p_value == pytest.approx(wilcoxon(ref, oth).pvalue, rel=1e-6)
        assert row.mean_difference == pytest.approx(statistics.mean(a - b for a, b in zip(ref, oth)), abs=1e-6)
        raw.append(row.p_value)
    # Holm by hand over the whole table.
    order = sorted(range(len(raw)), key=lambda i: raw[i])
    expected, running = [0.0] * len(raw), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(raw) - rank) * raw[i]))
        expected[i] = running
    assert df["p_holm"].tolist() == pytest.approx(expected)
    assert len(set(raw)) > 2  # the fixture yields distinct p-values (not a degenerate check)


def test_detection_sensitivity_bins_and_fp(tables):
    df = pd.read_csv(tables / "detection.csv")
    wt = df[(df["region"] == "WT") & (df["model"] == "3D U-Net")].iloc[0]
    # Lesions per case: 5 (detected in seed 0 only), 50 (always), 500 (even cases), 5000 (always),
    # 8 mm^3 (never detected, not counted: must not dilute the <10 bin).
    assert wt["sens_<10"] == pytest.approx(50.0) and wt["sens_<10_std"] == pytest.approx(70.710678, abs=1e-5)
    assert wt["sens_10-100"] == pytest.approx(100.0)
    assert wt["sens_100-1000"] == pytest.approx(50.0) and wt["sens_100-1000_std"] == pytest.approx(0.0)
    assert wt["sens_>=1000"] == pytest.approx(100.0)
    assert wt["sens_all"] == pytest.approx(statistics.mean([(6 + 6 + 3 + 6) / 24 * 100, (0 + 6 + 3 + 6) / 24 * 100]))
    assert wt["n_<10"] == 6 and wt["n_>=1000"] == 6
    # FP per patient: mean over cases of num_fp = case_index % 3 + seed -> 1 (seed 0), 2 (seed 1).
    assert wt["fp_per_patient"] == pytest.approx(1.5)
    assert wt["fp_per_patient_std"] == pytest.approx(0.707107, abs=1e-5)
    tc = df[(df["region"] == "TC") & (df["model"] == "3D U-Net")].iloc[0]
    assert tc["sens_<10"] == 0.0 and tc["n_<10"] == 6 and pd.isna(tc["sens_10-100"])


def test_custom_size_bins(fake_results):
    out = fake_results.root / "bins"
    rc = main(["tables", "--results", str(fake_results.results), "--config", str(fake_results.config),
               "--out-dir", str(out), "--size-bins", "100"])
    assert rc == 0
    df = pd.read_csv(out / "detection.csv")
    wt = df[(df["region"] == "WT")].iloc[0]
    # <100: 5 and 50 mm^3 lesions -> seed 0: 12/12, seed 1: 6/12.
    assert wt["sens_<100"] == pytest.approx(75.0)
    assert "sens_10-100" not in df.columns


def test_efficiency_table(tables, spec):
    df = pd.read_csv(tables / "efficiency.csv").set_index("run")
    two = df.loc["twostage/combined/selected"]
    assert two["parameters_m"] == pytest.approx(2.3)  # detector 0.3 M + segmentor 2.0 M
    assert two["gmac_per_window"] == 6.0 and two["detector_gmac_per_window"] == 0.7
    assert two["windows_kept_pct"] == pytest.approx(50.0)
    unet = df.loc[f"baselines/unet/{spec.ALL_FOUR}"]
    assert unet["parameters_m"] == pytest.approx(1.5) and pd.isna(unet["detector_gmac_per_window"])
    # seconds = 1 + 0.1 * case_index + 0.5 * seed -> seed means 1.25, 1.75
    assert unet["seconds_per_case"] == pytest.approx(1.5)
    assert unet["gflop_per_case"] == pytest.approx(2.25)


def test_latex_compiles_with_pdflatex(tables, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    doc = tmp_path / "tables.tex"
    doc.write_text(latex.standalone_document([(tables / f"{n}.tex").read_text() for n in TABLE_NAMES]))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "tables.pdf").read_bytes()[:5] == b"%PDF-"


def test_no_baselines_gives_tables_without_them(fake_results):
    text = fake_results.config.read_text().replace("baselines: {models: [unet, segresnet], subset: all}",
                                                   "baselines: {models: []}")
    fake_results.config.write_text(text)
    out = fake_results.root / "t"
    make_tables(fake_results.results, load_report_config(fake_results.config), out)
    df = pd.read_csv(out / "table2_comparison.csv")
    assert df["model"].tolist() == ["Two-stage (T1c+FLAIR, selected)", "Two-stage (T1c+T1+T2+FLAIR)"]
    assert len(pd.read_csv(out / "table2_significance.csv")) == 6


def test_missing_file_of_configured_run_is_named(fake_results, spec):
    missing = fake_results.results / "baselines" / "segresnet" / spec.ALL_FOUR / "seed1" / "metrics" / "test.tsv"
    missing.unlink()
    with pytest.raises(BrainmetsError, match=re.escape(str(missing))):
        make_tables(fake_results.results, load_report_config(fake_results.config), fake_results.root / "t")


def test_missing_model_info_is_named(fake_results):
    path = fake_results.results / "twostage" / "detector" / "selected" / "seed0" / "model_info.json"
    path.unlink()
    with pytest.raises(BrainmetsError, match=re.escape(str(path))):
        make_tables(fake_results.results, load_report_config(fake_results.config), fake_results.root / "t")

