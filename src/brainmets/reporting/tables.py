"""Result tables of the study as CSV (numbers) and booktabs LaTeX (for people).

Every number is ``mean (std)`` over seeds of a per-seed mean over the
split's cases (see :mod:`brainmets.reporting.stats`). Dice values are
multiplied by 100 as in the paper; HD95 is in mm. In each column the best
value is bold and the second best underlined, compared as printed and in the
metric's direction (HD95, FLOPs, time and parameters: lower is better).

Files (``<out_dir>/<name>.csv`` and ``.tex``):

- ``table1_modality``: modality study, one row per subset in the configured
  order (default: all 15 by number of sequences, then in T1, T1c, T2, FLAIR
  order, as :func:`brainmets.constants.all_subsets`); legacy Dice WT/TC/ET/avg
  and lesion-wise Dice NETC/SNFH/WT/TC/ET/avg.
- ``table2_comparison``: baselines and the two-stage model(s); legacy and
  lesion-wise Dice and HD95 for WT/TC/ET/avg.
- ``table2_significance``: paired Wilcoxon tests, two-stage (selected subset)
  against every other Table 2 model, Holm-corrected over the whole table.
- ``efficiency``: parameters, GMAC per window, measured FLOPs, seconds and
  fraction of sliding windows kept per case.
- ``detection``: lesion-wise sensitivity by GT lesion size and false
  positives per patient.

"avg" is the mean of WT, TC and ET (the BraTS ranking regions) in every
block, so legacy and lesion-wise averages are comparable and the lesion-wise
avg of Table 1 is the default selection score.

The CSV files hold one row per table row with ``<column>`` (mean) and
``<column>_std`` numbers; the LaTeX files are bare booktabs ``tabular``
environments written by pandas' Styler (:mod:`brainmets.reporting.display`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from brainmets.constants import TRAIN_REGIONS
from brainmets.errors import BrainmetsError
from brainmets.io import write_table, write_text
from brainmets.reporting import display, latex
from brainmets.reporting.collect import (
    ReportConfig,
    RunGroup,
    comparison_groups,
    modality_groups,
    read_inference,
    read_lesions,
    read_metrics,
    read_model_info,
    reference_group,
)
from brainmets.reporting.stats import (
    holm,
    paired_wilcoxon,
    per_seed_region_means,
    summarise_seeds,
    with_average,
)

log = logging.getLogger(__name__)

#: Regions averaged into every "avg" column.
AVERAGE_REGIONS: tuple[str, ...] = TRAIN_REGIONS
TABLE1_LEGACY_REGIONS = ("WT", "TC", "ET")
TABLE1_LESION_REGIONS = ("NETC", "SNFH", "WT", "TC", "ET")
#: Metrics tested in the significance table.
SIGNIFICANCE_METRICS = ("lesion_dice", "legacy_dice")
ALPHA = 0.05
#: Stems of the files :func:`make_tables` writes (each as .csv and .tex), for workflow outputs.
TABLE_NAMES: tuple[str, ...] = (
    "table1_modality", "table2_comparison", "table2_significance", "efficiency", "detection",
)

_METRIC_TITLES = {
    "legacy_dice": "Legacy Dice (%)",
    "lesion_dice": "Lesion-wise Dice (%)",
    "legacy_hd95": "Legacy HD95 (mm)",
    "lesion_hd95": "Lesion-wise HD95 (mm)",
}


@dataclass(frozen=True)
class Column:
    """One numeric table column."""

    key: str
    header: str
    group: str
    higher_is_better: bool
    decimals: int = 2


@dataclass
class SummaryTable:
    """Rows x columns of mean and std over seeds, plus how to print them.

    ``rank_groups`` assigns rows to blocks within which best/second are
    marked (e.g. one block per region in the detection table).
    """

    name: str
    label_headers: list[str]
    labels: list[list[str]]
    row_keys: list[str]
    columns: list[Column]
    mean: pd.DataFrame
    std: pd.DataFrame
    n_seeds: list[int]
    comment: str
    rank_groups: list[str] | None = None
    extra: dict[str, list] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """Numbers for the CSV: key, labels, n_seeds, ``<col>`` and ``<col>_std``."""
        data: dict[str, list] = {"run": self.row_keys}
        for i, header in enumerate(self.label_headers):
            data[header.lower()] = [lab[i] for lab in self.labels]
        data["n_seeds"] = self.n_seeds
        for col in self.columns:
            data[col.key] = [_round(v) for v in self.mean[col.key].tolist()]
            data[f"{col.key}_std"] = [_round(v) for v in self.std[col.key].tolist()]
        data.update(self.extra)
        return pd.DataFrame(data)

    def marks(self) -> dict[str, list[str | None]]:
        """Per column: best/second mark of every row (within ``rank_groups``)."""
        blocks = self.rank_groups or [""] * len(self.row_keys)
        out = {}
        for col in self.columns:
            values = self.mean[col.key].tolist()
            marks: list[str | None] = [None] * len(values)
            for block in dict.fromkeys(blocks):
                idx = [i for i, b in enumerate(blocks) if b == block]
                for i, m in zip(idx, display.rank_marks([values[i] for i in idx], col.higher_is_better, col.decimals)):
                    marks[i] = m
            out[col.key] = marks
        return out

    def display(self) -> display.DisplayTable:
        """Labels, ``mean (std)`` texts and best/second marks, as people read the table."""
        marks = self.marks()
        cells, cell_marks = [], []
        for r, key in enumerate(self.row_keys):
            cells.append(list(self.labels[r]) + [
                mean_std_cell(self.mean.at[key, col.key], self.std.at[key, col.key], col.decimals)
                for col in self.columns
            ])
            cell_marks.append([None] * len(self.label_headers) + [marks[col.key][r] for col in self.columns])
        columns = [("", h) for h in self.label_headers] + [(c.group, c.header) for c in self.columns]
        return display.DisplayTable(columns, len(self.label_headers), cells, cell_marks, self.comment)

    def to_latex(self) -> str:
        return display.to_latex(self.display())

    def write(self, out_dir: Path) -> list[Path]:
        csv, tex = out_dir / f"{self.name}.csv", out_dir / f"{self.name}.tex"
        write_table(self.to_frame(), csv)
        write_text(tex, self.to_latex())
        return [csv, tex]


def mean_std_cell(mean: float, std: float, decimals: int) -> str:
    """``"75.84 (1.20)"``; the mean alone when std is undefined; ``"--"`` when no value."""
    if mean is None or math.isnan(mean):
        return "--"
    if std is None or math.isnan(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ({std:.{decimals}f})"


def _round(value: float) -> float:
    return value if value is None or math.isnan(value) else round(float(value), 6)


def _assemble(
    name: str,
    label_headers: list[str],
    labels: list[list[str]],
    row_keys: list[str],
    columns: list[Column],
    per_seed_frames: list[pd.DataFrame],
    comment: str,
    **kwargs,
) -> SummaryTable:
    """Summarise one per-seed frame (seed x column keys) per row into a table."""
    keys = [c.key for c in columns]
    means, stds, ns = [], [], []
    for frame in per_seed_frames:
        mean, std, n = summarise_seeds(frame.reindex(columns=keys))
        means.append(mean)
        stds.append(std)
        ns.append(n)
    mean_df = pd.DataFrame(means, index=row_keys, columns=keys) if means else pd.DataFrame(columns=keys)
    std_df = pd.DataFrame(stds, index=row_keys, columns=keys) if stds else pd.DataFrame(columns=keys)
    return SummaryTable(name, label_headers, labels, row_keys, columns, mean_df.astype(float),
                        std_df.astype(float), ns, comment, **kwargs)


def metric_block(metrics: pd.DataFrame, metric: str, regions: tuple[str, ...]) -> pd.DataFrame:
    """Seed x ``<metric>_<region>`` (+ ``<metric>_avg``) frame; Dice scaled to %."""
    per_seed = per_seed_region_means(metrics, metric, regions)
    per_seed = with_average(per_seed, [r for r in AVERAGE_REGIONS if r in regions])
    if metric.endswith("dice"):
        per_seed = per_seed * 100.0
    per_seed.columns = [f"{metric}_{c}" for c in per_seed.columns]
    return per_seed


def metric_columns(metric: str, regions: tuple[str, ...]) -> list[Column]:
    higher = metric.endswith("dice")
    return [Column(f"{metric}_{r}", r, _METRIC_TITLES[metric], higher) for r in (*regions, "avg")]


# --------------------------------------------------------------------------- Table 1 and 2


def modality_table(groups: list[RunGroup], split: str = "test") -> SummaryTable:
    """Table 1: legacy Dice WT/TC/ET/avg and lesion-wise Dice NETC/SNFH/WT/TC/ET/avg per subset."""
    regions = sorted(set(TABLE1_LEGACY_REGIONS) | set(TABLE1_LESION_REGIONS))
    columns = (metric_columns("legacy_dice", TABLE1_LEGACY_REGIONS)
               + metric_columns("lesion_dice", TABLE1_LESION_REGIONS))
    frames = []
    for g in groups:
        metrics = read_metrics(g, split, regions)
        frames.append(pd.concat([
            metric_block(metrics, "legacy_dice", TABLE1_LEGACY_REGIONS),
            metric_block(metrics, "lesion_dice", TABLE1_LESION_REGIONS),
        ], axis=1))
    return _assemble(
        "table1_modality", ["Subset"], [[g.label] for g in groups], [g.key for g in groups], columns, frames,
        comment=f"Modality study ({split} split): Dice x100, mean (std) over seeds of the mean over cases. "
        "avg = mean of WT, TC, ET. Generated by `brainmets tables`.",
        extra={"subset_key": [g.subset for g in groups]},
    )


def comparison_table(groups: list[RunGroup], split: str = "test") -> SummaryTable:
    """Table 2: legacy and lesion-wise Dice and HD95 for WT/TC/ET/avg per model."""
    metrics_order = ("legacy_dice", "lesion_dice", "legacy_hd95", "lesion_hd95")
    columns = [c for m in metrics_order for c in metric_columns(m, TRAIN_REGIONS)]
    frames = []
    for g in groups:
        metrics = read_metrics(g, split, TRAIN_REGIONS)
        frames.append(pd.concat([metric_block(metrics, m, TRAIN_REGIONS) for m in metrics_order], axis=1))
    return _assemble(
        "table2_comparison", ["Model"], [[g.label] for g in groups], [g.key for g in groups], columns, frames,
        comment=f"Comparison ({split} split): Dice x100, HD95 in mm; mean (std) over seeds of the mean over "
        "cases. avg = mean of WT, TC, ET. Generated by `brainmets tables`.",
        extra={"subset_key": [g.subset_resolved for g in groups]},
    )


# --------------------------------------------------------------------------- efficiency


EFFICIENCY_COLUMNS = [
    Column("parameters_m", "Params (M)", "", False, 2),
    Column("gmac_per_window", "GMAC/window", "", False, 1),
    Column("detector_gmac_per_window", "Det. GMAC/window", "", False, 1),
    Column("gflop_per_case", "GFLOP/case", "", False, 1),
    Column("gflop_single_pass_per_case", "GFLOP/case (1 pass)", "", False, 1),
    Column("seconds_per_case", "s/case", "", False, 2),
    Column("windows_kept_pct", "Windows kept (%)", "", False, 1),
]


def _fraction_kept(inference: pd.DataFrame) -> pd.Series:
    if "fraction_kept" in inference.columns:
        return inference["fraction_kept"].astype(float)
    if {"windows_kept", "windows_total"} <= set(inference.columns):
        return inference["windows_kept"] / inference["windows_total"].replace(0, np.nan)
    return pd.Series(np.nan, index=inference.index)


def efficiency_table(groups: list[RunGroup], split: str = "test") -> SummaryTable:
    """Parameters and GMAC per window from ``model_info.json``; FLOPs, time, windows from ``inference/<split>.tsv``.

    A two-stage model's parameters are detector + segmentor; its GMAC per
    window is the segmentor's, with the detector's in its own column.
    """
    frames = []
    for g in groups:
        inference = read_inference(g, split)
        inference = inference.assign(
            gflop=inference["flops"].astype(float) / 1e9,
            gflop_single=(inference["flops_single_pass"].astype(float) / 1e9
                          if "flops_single_pass" in inference.columns else np.nan),
            kept=_fraction_kept(inference) * 100.0,
        )
        per_seed = inference.groupby("seed").agg(
            gflop_per_case=("gflop", "mean"),
            gflop_single_pass_per_case=("gflop_single", "mean"),
            seconds_per_case=("seconds", "mean"),
            windows_kept_pct=("kept", "mean"),
        )
        if g.study == "twostage":
            det, seg = read_model_info(g.sibling("detector")), read_model_info(g.sibling("segmentor"))
            params = float(det["parameters"]) + float(seg["parameters"])
            gmac, det_gmac = float(seg["gmac_per_window"]), float(det["gmac_per_window"])
        else:
            info = read_model_info(g)
            params, gmac, det_gmac = float(info["parameters"]), float(info["gmac_per_window"]), np.nan
        # Architecture constants: one value, no spread over seeds.
        constants = pd.DataFrame({"parameters_m": [params / 1e6], "gmac_per_window": [gmac],
                                  "detector_gmac_per_window": [det_gmac]})
        frames.append((per_seed, constants))
    table = _assemble(
        "efficiency", ["Model"], [[g.label] for g in groups], [g.key for g in groups], EFFICIENCY_COLUMNS,
        [per_seed for per_seed, _ in frames],
        comment=f"Efficiency ({split} split): parameters and GMAC per sliding window from model_info.json; "
        "measured FLOPs, seconds and kept windows per case, mean (std) over seeds. Generated by `brainmets tables`.",
    )
    for key, (_, constants) in zip(table.row_keys, frames):
        for col in ("parameters_m", "gmac_per_window", "detector_gmac_per_window"):
            table.mean.at[key, col] = constants.at[0, col]
            table.std.at[key, col] = np.nan
    return table


# --------------------------------------------------------------------------- detection


def size_bin_labels(edges: list[float]) -> list[str]:
    """``[10, 100]`` -> ``["<10", "10-100", ">=100"]`` (mm^3; left-closed bins)."""
    fmt = lambda v: f"{v:g}"  # noqa: E731
    labels = [f"<{fmt(edges[0])}"]
    labels += [f"{fmt(lo)}-{fmt(hi)}" for lo, hi in zip(edges[:-1], edges[1:])]
    labels.append(f">={fmt(edges[-1])}")
    return labels


def assign_size_bins(volumes: pd.Series, edges: list[float]) -> pd.Series:
    """Bin index of each volume: 0 for < edges[0], i for edges[i-1] <= v < edges[i], len(edges) above."""
    return pd.Series(np.searchsorted(np.asarray(edges, dtype=float), volumes.to_numpy(float), side="right"),
                     index=volumes.index)


SENSITIVITY_TITLE = latex.Raw(r"Sensitivity (\%) by GT lesion volume (mm$^3$)")


def detection_table(
    groups: list[RunGroup], edges: list[float], regions: list[str], split: str = "test"
) -> SummaryTable:
    """Lesion-wise sensitivity per GT size bin (counted GT lesions) and FP per patient.

    Per seed: sensitivity = detected / all counted GT lesions of the bin,
    pooled over the split's cases; FP per patient = mean over cases of
    ``num_fp``. Then mean (std) over seeds. A bin without lesions prints
    ``--``; the CSV has the number of GT lesions per bin (``n_<bin>``).
    """
    edges = sorted(float(e) for e in edges)
    bin_labels = size_bin_labels(edges)
    columns = [Column(f"sens_{lab}", lab, SENSITIVITY_TITLE, True, 1) for lab in bin_labels]
    columns += [Column("sens_all", "all", SENSITIVITY_TITLE, True, 1),
                Column("fp_per_patient", "FP/patient", "", False, 2)]
    loaded = {g.key: (read_metrics(g, split, regions), read_lesions(g, split)) for g in groups}
    for g in groups:
        if "num_fp" not in loaded[g.key][0].columns:
            raise BrainmetsError(f"{g.key} metrics/{split}.tsv: no num_fp column (false positives per case)")
    labels, keys, frames, blocks = [], [], [], []
    counts: dict[str, list] = {f"n_{lab}": [] for lab in bin_labels}
    for region in regions:
        for g in groups:
            metrics, lesions = loaded[g.key]
            metrics = metrics[metrics["region"] == region]
            gt = lesions[(lesions["kind"] == "gt") & lesions["counted"] & (lesions["region"] == region)].copy()
            gt["bin"] = assign_size_bins(gt["volume"].astype(float), edges)
            rows = {}
            for seed in g.seeds:
                seed_gt = gt[gt["seed"] == seed]
                row = {f"sens_{lab}": _sensitivity(seed_gt[seed_gt["bin"] == i]) for i, lab in enumerate(bin_labels)}
                row["sens_all"] = _sensitivity(seed_gt)
                row["fp_per_patient"] = float(metrics.loc[metrics["seed"] == seed, "num_fp"].astype(float).mean())
                rows[seed] = row
            frames.append(pd.DataFrame.from_dict(rows, orient="index"))
            first = gt[gt["seed"] == g.seeds[0]]
            for i, lab in enumerate(bin_labels):
                counts[f"n_{lab}"].append(int((first["bin"] == i).sum()))
            labels.append([g.label, region])
            keys.append(f"{g.key}:{region}")
            blocks.append(region)
    return _assemble(
        "detection", ["Model", "Region"], labels, keys, columns, frames,
        comment=f"Detection ({split} split): lesion-wise sensitivity (%) of counted GT lesions by volume bin, "
        "false-positive lesions per patient; mean (std) over seeds. Generated by `brainmets tables`.",
        rank_groups=blocks, extra=counts,
    )


def _sensitivity(gt: pd.DataFrame) -> float:
    return float(gt["detected"].mean() * 100.0) if len(gt) else math.nan


# --------------------------------------------------------------------------- significance


def per_case_seed_mean(metrics: pd.DataFrame, metric: str, region: str) -> pd.Series:
    """Per-case value averaged over seeds (the unit of the paired tests)."""
    part = metrics[metrics["region"] == region]
    return part.groupby("case")[metric].mean()


def significance_table(groups: list[RunGroup], split: str = "test",
                       metrics_tested: tuple[str, ...] = SIGNIFICANCE_METRICS,
                       regions: tuple[str, ...] = TRAIN_REGIONS) -> pd.DataFrame:
    """Paired Wilcoxon signed-rank tests: reference two-stage model vs each other Table 2 model.

    Unit: test case, value = the case's metric averaged over seeds; pairs
    are the cases both models were evaluated on. Holm correction is applied
    over every test in the table (one family: all models x metrics x regions).
    Differences are reference minus other, Dice in percentage points.
    """
    ref = reference_group(groups)
    out_columns = ["reference", "model", "metric", "region", "n_cases", "mean_reference", "mean_other",
                   "mean_difference", "median_difference", "statistic", "p_value", "p_holm", "significant", "note"]
    if ref is None or len(groups) < 2:
        return pd.DataFrame(columns=out_columns)
    loaded = {g.key: read_metrics(g, split, regions) for g in groups}
    records = []
    for other in groups:
        if other.key == ref.key:
            continue
        for metric in metrics_tested:
            scale = 100.0 if metric.endswith("dice") else 1.0
            for region in regions:
                a = per_case_seed_mean(loaded[ref.key], metric, region)
                b = per_case_seed_mean(loaded[other.key], metric, region)
                common = a.index.intersection(b.index)
                if len(common) < max(len(a), len(b)):
                    log.warning("%s vs %s: testing on %d common %s cases of %d/%d",
                                ref.label, other.label, len(common), split, len(a), len(b))
                test = paired_wilcoxon(a.loc[common].to_numpy() * scale, b.loc[common].to_numpy() * scale)
                records.append({
                    "reference": ref.label, "model": other.label, "metric": metric, "region": region,
                    "n_cases": test.n_cases, "mean_reference": test.mean_reference, "mean_other": test.mean_other,
                    "mean_difference": test.mean_difference, "median_difference": test.median_difference,
                    "statistic": test.statistic, "p_value": test.p_value, "note": test.note,
                })
    df = pd.DataFrame.from_records(records)
    df["p_holm"] = holm(df["p_value"].to_numpy())
    df["significant"] = df["p_holm"] < ALPHA
    return df[out_columns]


def format_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "--"
    return latex.Raw("$<$0.001") if p < 0.001 else f"{p:.3f}"


def significance_latex(df: pd.DataFrame) -> str:
    reference = df["reference"].iloc[0] if len(df) else "two-stage"
    cells, marks = [], []
    for r in df.itertuples(index=False):
        cells.append([
            r.model, _METRIC_TITLES[r.metric].replace(" (%)", ""), r.region, str(r.n_cases),
            f"{r.mean_difference:+.2f}" if not math.isnan(r.mean_difference) else "--",
            format_p(r.p_value), format_p(r.p_holm),
        ])
        marks.append([None] * 6 + ["significant" if r.significant else None])
    headers = ["Model", "Metric", "Region", "n", "Mean diff.", "p", "p (Holm)"]
    table = display.DisplayTable(
        [(h,) for h in headers], 3, cells, marks,
        comment=f"Paired two-sided Wilcoxon signed-rank tests over test cases (per-case value = mean over seeds): "
        f"{reference} minus each model (Dice in percentage points); Holm-corrected over all rows; "
        f"bold: p (Holm) < {ALPHA}. Generated by `brainmets tables`.",
    )
    return display.to_latex(table)


# --------------------------------------------------------------------------- all tables


def make_tables(results: str | Path, cfg: ReportConfig, out_dir: str | Path, split: str = "test") -> list[Path]:
    """Write every table (CSV + LaTeX) under ``out_dir``; returns the files written.

    Missing optional studies (no baselines, no two-stage) give tables
    without those rows; a configured run whose files are missing is an error.
    """
    out_dir = Path(out_dir)
    written: list[Path] = []
    mod_groups = modality_groups(results, cfg)
    if not mod_groups:
        raise BrainmetsError("no modality-study subsets configured (modality_study.subsets)")
    written += modality_table(mod_groups, split).write(out_dir)
    comp_groups = comparison_groups(results, cfg)
    written += comparison_table(comp_groups, split).write(out_dir)
    significance = significance_table(comp_groups, split)
    write_table(significance, out_dir / "table2_significance.csv")
    write_text(out_dir / "table2_significance.tex", significance_latex(significance))
    written += [out_dir / "table2_significance.csv", out_dir / "table2_significance.tex"]
    written += efficiency_table(comp_groups, split).write(out_dir)
    written += detection_table(comp_groups, cfg.size_bins, cfg.detection_regions, split).write(out_dir)
    for path in written:
        log.info("wrote %s", path)
    return written
