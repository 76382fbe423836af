"""Tables: numbers against hand computation, marks, significance, detection, LaTeX."""

from __future__ import annotations

import re
import statistics
from html.parser import HTMLParser

import pandas as pd
import pytest
from scipy.stats import wilcoxon

from brainmets.cli import main
from brainmets.errors import BrainmetsError
from brainmets.reporting.collect import load_report_config
from brainmets.reporting.tables import SummaryTable, make_tables

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


def tex_rows(tex: str) -> dict[str, tuple[list[str], list[str]]]:
    """Body rows of a generated table keyed by their first cell: (cells, cells of the std line below)."""
    lines = tex.splitlines()
    body = lines[lines.index(r"\midrule") + 1:lines.index(r"\bottomrule")]
    rows: dict[str, tuple[list[str], list[str]]] = {}
    key = None
    for line in body:
        if line == r"\midrule":
            continue
        cells = [c.strip() for c in line.removesuffix(r"\\").split(" & ")]
        if cells[0]:
            key = cells[0]
            rows[key] = (cells, [])
        else:
            rows[key] = (rows[key][0], cells)
    return rows


def test_every_table_written_as_csv_tex_and_html(tables):
    from brainmets.reporting.tables import TABLE_NAMES as names

    assert tuple(names) == TABLE_NAMES
    for name in TABLE_NAMES:
        assert (tables / f"{name}.csv").stat().st_size > 50
        assert (tables / f"{name}.tex").read_text().count(r"\begin{tabular}") == 1
        assert (tables / f"{name}.html").read_text().count("<table ") == 1


def test_table1_numbers_equal_hand_computation(tables, spec):
    df = pd.read_csv(tables / "table1_modality.csv")
    assert df["subset"].tolist() == ["T1c", "FLAIR", "T1c+FLAIR", "T1c+T1+T2+FLAIR"]  # configured order
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

    tex = (tables / "table2_comparison.tex").read_text()
    rows = {k: cells for k, (cells, _) in tex_rows(tex).items()}
    stds = {k: std for k, (_, std) in tex_rows(tex).items()}
    headers = ["Model"] + [f"{m}_{r}" for m in ("legacy_dice", "legacy_hd95", "lesion_dice", "lesion_hd95")
                           for r in ("WT", "TC", "ET", "avg")]
    col = {h: i for i, h in enumerate(headers)}
    # The paper's layout: legacy then lesion-wise, Dice then HD95, with the direction of better.
    lines = tex.splitlines()
    top = lines.index(r"\toprule")
    assert lines[top + 1].split("&")[1].strip() == r"\multicolumn{8}{c}{Legacy}"
    assert lines[top + 1].split("&")[2].strip() == r"\multicolumn{8}{c}{Lesion-wise} \\"
    assert [c.strip() for c in lines[top + 3].split("&")[1:3]] == [
        r"\multicolumn{4}{c}{Dice (\%) $\uparrow$}", r"\multicolumn{4}{c}{HD95 (mm) $\downarrow$}"]
    assert lines[top + 5] == "Model & " + " & ".join(["WT & TC & ET & AVG"] * 4) + r" \\"
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
    # HD95 in mm to one decimal, Dice in % to two; the std on the line below.
    hd_mean, hd_std = seed_cell(spec, ("baselines", "segresnet", spec.ALL_FOUR), "lesion_hd95", ["WT"], 1)
    assert rows["SegResNet"][col["lesion_hd95_WT"]] == rf"\textbf{{{hd_mean:.1f}}}"
    assert stds["SegResNet"][col["lesion_hd95_WT"]] == rf"\scriptsize ({hd_std:.1f})"
    dice_mean, dice_std = seed_cell(spec, ("modality", "unet", spec.ALL_FOUR), "legacy_dice", ["TC"], 100)
    assert rows["3D U-Net"][col["legacy_dice_TC"]] == f"{dice_mean:.2f}"
    assert stds["3D U-Net"][col["legacy_dice_TC"]] == rf"\scriptsize ({dice_std:.2f})"


def test_significance_matches_scipy_and_holm_by_hand(tables, spec):
    df = pd.read_csv(tables / "table2_significance.csv")
    assert set(df["model"]) == {"3D U-Net", "SegResNet", "Two-stage (T1c+T1+T2+FLAIR)"}
    assert len(df) == 3 * 2 * 3  # models x metrics x regions
    n = len(spec.TEST_CASES)
    others = {"3D U-Net": ("modality", "unet", spec.ALL_FOUR),
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
    assert two["windows_kept_pct"] == pytest.approx(50.0) and two["windows_per_case"] == 8
    unet = df.loc[f"modality/unet/{spec.ALL_FOUR}"]  # the 3D U-Net row: the modality study's run
    assert unet["parameters_m"] == pytest.approx(1.5) and pd.isna(unet["detector_gmac_per_window"])
    # seconds = 1 + 0.1 * case_index + 0.5 * seed -> seed means 1.25, 1.75
    assert unet["seconds_per_case"] == pytest.approx(1.5)
    # flops = 2e9 + 1e8 * case_index over 6 cases: mean 2.25e9 FLOP = 1.125 GMAC
    assert unet["gmac_per_case"] == pytest.approx(1.125) == unet["segmentor_gmac_per_case"]
    # Against the 3D U-Net: per window 1 - 6.0 / 12.5 (segmentation networks, as the paper), per case the
    # fixture's two-stage spends as much per case as the U-Net.
    assert two["reduction_per_window_pct"] == pytest.approx(52.0)
    assert two["reduction_per_case_pct"] == pytest.approx(0.0)
    assert unet["reduction_per_window_pct"] == 0.0
    assert df.loc[f"baselines/segresnet/{spec.ALL_FOUR}", "reduction_per_window_pct"] == pytest.approx(28.0)


def test_efficiency_splits_two_stage_cost_into_detector_and_segmentor(fake_results, spec):
    """inference/<split>.tsv of a two-stage run carries flops_detector and flops_segmentor: the table splits them."""
    for seed in spec.SEEDS:
        path = fake_results.results / "twostage" / "combined" / "selected" / f"seed{seed}" / "inference" / "test.tsv"
        inference = pd.read_csv(path, sep="\t")
        inference["flops_detector"] = 0.4e9
        inference["flops_segmentor"] = inference["flops"] - 0.4e9
        inference.to_csv(path, sep="\t", index=False)
    out = fake_results.root / "t"
    make_tables(fake_results.results, load_report_config(fake_results.config), out)
    two = pd.read_csv(out / "efficiency.csv").set_index("run").loc["twostage/combined/selected"]
    assert two["detector_gmac_per_case"] == pytest.approx(0.2)
    assert two["segmentor_gmac_per_case"] == pytest.approx(1.125 - 0.2)
    assert two["gmac_per_case"] == pytest.approx(1.125)


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



def summary(columns, labels, mean, std=None, rank_groups=None, label_headers=("Model",)):
    keys = [f"r{i}" for i in range(len(labels))]
    mean = pd.DataFrame(mean, index=keys)
    std = pd.DataFrame(std, index=keys) if std is not None else mean * float("nan")
    return SummaryTable("t", "T.", list(label_headers), labels, keys, columns, mean, std, [2] * len(keys),
                        rank_groups=rank_groups)


def test_detection_marks_within_each_region_and_not_on_ties():
    from brainmets.reporting.tables import detection_columns

    columns = detection_columns([10.0])
    n = len(columns)
    labels = [[r, m] for r in ("WT", "ET") for m in ("a", "b", "c")]
    # WT sensitivity is far above ET's: ranked down the whole column, ET would get no mark at all.
    sens = [90.0, 80.0, 70.0, 30.0, 20.0, 10.0]
    mean = {c.key: sens for c in columns[:n - 1]} | {"fp_per_patient": [0.0] * 3 + [0.004, 0.0, 0.001]}
    table = summary(columns, labels, mean, rank_groups=["WT"] * 3 + ["ET"] * 3,
                    label_headers=("Region", "Model"))
    marks = table.marks()
    assert marks["sens_all"] == ["best", "second", None, "best", "second", None]
    # FP/patient reads 0.00 in every row: no row is best.
    assert marks["fp_per_patient"] == [None] * 6


def test_efficiency_prints_small_gmac_with_significant_digits():
    from brainmets.reporting.tables import EFFICIENCY_COLUMNS

    keys = [c.key for c in EFFICIENCY_COLUMNS]
    mean = {k: [1.0, 2.0, 3.0] for k in keys} | {"gmac_per_window": [478.3, 0.043, 60.0],
                                                 "detector_gmac_per_window": [float("nan")] * 2 + [0.7]}
    table = summary(EFFICIENCY_COLUMNS, [["a"], ["b"], ["c"]], mean)
    shown = table.display()
    col = 1 + keys.index("gmac_per_window")
    assert [row[col] for row in shown.cells] == ["478.300", "0.043", "60.000"]
    # A single model with a detector: nothing to rank against.
    assert [row[col + 1] for row in shown.marks] == [None, None, None]
    assert [row[col] for row in shown.marks] == [None, "best", "second"]


def test_significance_caption_says_when_the_split_is_too_small(tables):
    from brainmets.reporting.tables import reachability_note, significance_display

    df = pd.read_csv(tables / "table2_significance.csv")
    # 6 cases: one test could reach 0.05 (smallest exact p = 2/64), but not after Holm over 18 tests.
    assert reachability_note(df) == ("With 6 test cases and Holm's correction over 18 tests, no corrected p "
                                     "can fall below 0.562, so no difference can reach p (Holm) < 0.05.")
    assert significance_display(df).caption.endswith(reachability_note(df))
    four = df.assign(n_cases=4)
    assert reachability_note(four).startswith("With 4 test cases no two-sided Wilcoxon signed-rank test can "
                                              "give p < 0.125")
    assert reachability_note(df.iloc[:1].assign(n_cases=30)) == ""
    tex = (tables / "table2_significance.tex").read_text()
    assert "no difference can reach p (Holm) $<$ 0.05" in tex


def test_table2_split_layout_from_cli(fake_results):
    out = fake_results.root / "split"
    rc = main(["tables", "--results", str(fake_results.results), "--config", str(fake_results.config),
               "--out-dir", str(out), "--table2-layout", "split"])
    assert rc == 0
    tex = (out / "table2_comparison.tex").read_text()
    assert tex.count(r"\begin{table*}") == 2 and "resizebox" not in tex
    assert r"\label{tab:table2_comparison_legacy}" in tex and r"\label{tab:table2_comparison_lesionwise}" in tex
    legacy, lesionwise = tex.split(r"\end{table*}")[:2]
    assert "Legacy metrics." in legacy and "Lesion-wise metrics." in lesionwise
    assert r"\multicolumn{4}{c}{HD95 (mm) $\downarrow$}" in lesionwise


def test_unknown_table2_layout_is_named(fake_results):
    text = fake_results.config.read_text() + "reporting: {table2_layout: wide}\n"
    fake_results.config.write_text(text)
    # refused when the config is read, with the allowed values and the file
    with pytest.raises(BrainmetsError, match="reporting.table2_layout is 'wide'; allowed: single, split") as info:
        load_report_config(fake_results.config)
    assert str(fake_results.config) in str(info.value)


class _Cells(HTMLParser):
    """Text of every <td>/<th> by id, the caption, and the CSS properties of each id in <style>."""

    def __init__(self, text: str):
        super().__init__()
        self.cells: dict[str, str] = {}
        self.order: list[str] = []
        self.caption, self._in, self._style, self.css = "", None, "", {}
        self.feed(text)
        for selectors, props in re.findall(r"([^{}]+)\{([^}]*)\}", self._style):
            for sel in selectors.split(","):
                self.css.setdefault(sel.strip(), "")
                self.css[sel.strip()] += props

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self._in = dict(attrs)["id"]
            self.cells[self._in] = ""
            self.order.append(self._in)
        elif tag in ("caption", "style"):
            self._in = tag

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "caption":
            self.caption += data
        elif self._in == "style":
            self._style += data
        elif self._in:
            self.cells[self._in] += data

    def rows(self) -> dict[str, list[tuple[str, str]]]:
        """Body rows keyed by their first cell: (text, CSS) of each cell."""
        out: dict[str, list[tuple[str, str]]] = {}
        for cell_id in self.order:
            m = re.search(r"_row(\d+)_col(\d+)$", cell_id)
            if m:
                out.setdefault(m.group(1), []).append((self.cells[cell_id], self.css.get(f"#{cell_id}", "")))
        return {cells[0][0]: cells for cells in out.values()}


def test_html_tables_show_the_marks_and_caption(tables, spec):
    for name in TABLE_NAMES:
        page = (tables / f"{name}.html").read_text()
        assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    page = _Cells((tables / "table2_comparison.html").read_text())
    assert page.caption.startswith("Comparison on the test split: Dice (%) and HD95 (mm)")
    headers = [page.cells[i] for i in page.order if "level" in i]
    assert headers[:3] == ["", "Legacy", "Lesion-wise"] and "HD95 (mm) ↓" in headers
    rows = page.rows()
    col = 1 + 8 + 4  # Model, legacy Dice and HD95, lesion-wise Dice: lesion-wise HD95 WT
    hd_mean, hd_std = seed_cell(spec, ("baselines", "segresnet", spec.ALL_FOUR), "lesion_hd95", ["WT"], 1)
    text, css = rows["SegResNet"][col]
    assert text == f"{hd_mean:.1f} ({hd_std:.1f})" and "font-weight: bold" in css
    assert "text-decoration: underline" in rows["3D U-Net"][col][1]
    assert "font-weight" not in rows["Two-stage (T1c+T1+T2+FLAIR)"][col][1]
    significance = _Cells((tables / "table2_significance.html").read_text())
    assert "no difference can reach p (Holm) < 0.05" in significance.caption


def test_significance_without_tests_says_so():
    from brainmets.reporting import display
    from brainmets.reporting.tables import significance_display

    empty = pd.DataFrame(columns=["reference", "model", "metric", "region", "n_cases", "mean_difference",
                                  "p_value", "p_holm", "significant"])
    shown = significance_display(empty)
    assert shown.caption.endswith("No test: Table 2 has no two-stage model or no other model to compare it with.")
    assert "()" not in shown.caption and not shown.cells
    tex = display.to_latex(shown)
    assert tex.splitlines()[-4:-2] == [r"\midrule", r"\bottomrule"]


def test_ensemble_rows_in_table2_only(fake_results):
    """Configured seed ensembles add their three variants to Table 2, each one prediction (no std)."""
    import shutil

    source = fake_results.results / "twostage" / "combined" / "selected" / "seed0" / "metrics" / "test.tsv"
    for variant in ("mean", "mirror", "mirror_pp"):
        target = fake_results.results / "ensembles" / "twostage" / "selected" / variant / "metrics" / "test.tsv"
        target.parent.mkdir(parents=True)
        shutil.copy(source, target)
    with open(fake_results.config, "a") as fh:
        fh.write("ensembles: {enabled: true, members: {twostage: selected, modality: null}}\n")
    out = fake_results.root / "t"
    make_tables(fake_results.results, load_report_config(fake_results.config), out)
    df = pd.read_csv(out / "table2_comparison.csv").set_index("run")
    ensembles = [f"ensembles/twostage/selected/{v}" for v in ("mean", "mirror", "mirror_pp")]
    assert df.index.tolist()[-3:] == ensembles
    assert df.loc[ensembles[2], "model"] == "Two-stage (T1c+FLAIR, selected), seed ensemble + mirroring + postprocessing"
    seed0 = pd.read_csv(source, sep="\t")
    expected = 100 * seed0[seed0["region"] == "ET"]["lesion_dice"].mean()
    assert df.loc[ensembles, "lesion_dice_ET"].tolist() == pytest.approx([expected] * 3, abs=1e-6)
    assert df.loc[ensembles, "n_seeds"].tolist() == [1, 1, 1] and df.loc[ensembles, "lesion_dice_ET_std"].isna().all()
    tex = (out / "table2_comparison.tex").read_text()
    assert "Seed ensembles: one prediction" in tex
    assert "mirroring averages the mirror images;" in tex  # no card to say which
    # the caption says what the mirrored predictions' card records (inference.mirror_axes)
    card = fake_results.results / "ensembles" / "twostage" / "selected" / "mirror" / "predictions" / "test" / "model.json"
    card.parent.mkdir(parents=True)
    card.write_text('{"inference": {"mirror": true, "mirror_axes": [2]}}')
    make_tables(fake_results.results, load_report_config(fake_results.config), out)
    assert "mirroring averages the image and its flip along z;" in (out / "table2_comparison.tex").read_text()
    # the other tables keep their rows
    assert not pd.read_csv(out / "table2_significance.csv")["model"].str.contains("ensemble").any()


def test_ensemble_of_an_untrained_subset_is_refused(fake_results):
    with open(fake_results.config, "a") as fh:
        fh.write("ensembles: {enabled: true, members: {twostage: null, modality: t1n}}\n")
    with pytest.raises(BrainmetsError, match="ensembles.members.modality is 't1n'.*modality_study.subsets"):
        load_report_config(fake_results.config)
