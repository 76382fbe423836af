"""Result tables of the study as CSV (numbers), booktabs LaTeX (paper) and HTML (report).

Every number is the mean over seeds of a per-seed mean over the split's
cases, with the standard deviation over seeds (see
:mod:`brainmets.reporting.stats`). Dice values are multiplied by 100 as in
the paper (two decimals); HD95 is in mm (one decimal). In each column the
best value is bold and the second best underlined, compared as printed and
in the metric's direction (the arrow in the header; HD95, FLOPs, time and
parameters: lower is better), within comparable rows (per region in the
detection table); see :func:`brainmets.reporting.display.rank_marks` for ties.

Files (``<out_dir>/<name>.csv``, ``.tex`` and ``.html``):

- ``table1_modality``: modality study, one row per subset in the configured
  order (default: all 15 by number of sequences, then in T1, T1c, T2, FLAIR
  order, as :func:`brainmets.constants.all_subsets`); legacy Dice WT/TC/ET/avg
  and lesion-wise Dice NETC/SNFH/WT/TC/ET/avg.
- ``table2_comparison``: baselines and the two-stage model(s) in the paper's
  layout: legacy, then lesion-wise; Dice, then HD95; WT/TC/ET/avg each.
  ``reporting.table2_layout``: ``single`` (one float, shrunk to the text
  width where wider) or ``split`` (legacy and lesion-wise floats).
- ``table2_significance``: paired Wilcoxon tests, two-stage (selected subset)
  against every other Table 2 model, Holm-corrected over the whole table;
  the caption says when the split is too small for any test to reach 0.05.
- ``efficiency``: parameters, GMAC per window (segmentation network and
  detector), windows, GMAC (split into detector and segmentation network) and
  seconds per case, fraction of windows kept, and the reduction against the
  3D-UNET row per window (as the paper states it) and per case.
- ``detection``: lesion-wise sensitivity by GT lesion size and false
  positives per patient.

"avg" is the mean of WT, TC and ET (the BraTS ranking regions) in every
block, so legacy and lesion-wise averages are comparable and the lesion-wise
avg of Table 1 is the default selection score.

The CSV files hold one row per table row with ``<column>`` (mean) and
``<column>_std`` numbers. The LaTeX files are complete ``table*`` floats
with caption and label (``tab:<name>``), booktabs rules, the std on a line
below each mean, written by pandas' Styler (:mod:`brainmets.reporting.display`);
a paper needs ``\\usepackage{booktabs,graphicx}``. The HTML pages show the
same tables, marks and captions in the Snakemake report.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from brainmets.constants import CARD_NAME, ENSEMBLE_MIRRORED, TRAIN_REGIONS
from brainmets.errors import BrainmetsError
from brainmets.io import write_table, write_text
from brainmets.reporting import display
from brainmets.reporting.collect import (
    ReportConfig,
    RunGroup,
    comparison_groups,
    ensemble_groups,
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
    wilcoxon_smallest_p,
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
#: Stems of the files :func:`make_tables` writes (each as .csv, .tex and .html), for workflow outputs.
TABLE_NAMES: tuple[str, ...] = (
    "table1_modality", "table2_comparison", "table2_significance", "efficiency", "detection",
)

_METRIC_TITLES = {
    "legacy_dice": "Legacy Dice (%)",
    "lesion_dice": "Lesion-wise Dice (%)",
    "legacy_hd95": "Legacy HD95 (mm)",
    "lesion_hd95": "Lesion-wise HD95 (mm)",
}
#: Table 2's column blocks in the paper's order: legacy, then lesion-wise; Dice, then HD95.
TABLE2_BLOCKS = (
    ("Legacy", "Dice (%)", "legacy_dice"), ("Legacy", "HD95 (mm)", "legacy_hd95"),
    ("Lesion-wise", "Dice (%)", "lesion_dice"), ("Lesion-wise", "HD95 (mm)", "lesion_hd95"),
)
#: How Table 2 meets the page: one ``table*`` shrunk to the text width where wider, or two
#: (legacy, lesion-wise) at their natural size (``reporting.table2_layout``).
TABLE2_LAYOUTS = ("single", "split")


@dataclass(frozen=True)
class Column:
    """One numeric table column: CSV key, headers, direction of better, printed precision.

    ``groups`` are the spanning headers above ``header``, top first (``""``:
    none). At least ``decimals`` decimals are printed, more where the
    smallest non-zero value would otherwise keep fewer than ``significant``
    significant digits (a tiny model's GMAC must not read 0.0).
    """

    key: str
    header: str
    groups: tuple[str, ...]
    higher_is_better: bool
    decimals: int = 2
    significant: int = 0

    def decimals_for(self, values: list[float]) -> int:
        nonzero = [abs(v) for v in values if v is not None and not math.isnan(v) and v != 0]
        if not nonzero or not self.significant:
            return self.decimals
        return max(self.decimals, self.significant - 1 - math.floor(math.log10(min(nonzero))))


@dataclass
class SummaryTable:
    """Rows x columns of mean and std over seeds, plus how to print them.

    ``rank_groups`` assigns rows to blocks within which best/second are
    marked (e.g. one block per region in the detection table); the printed
    table separates the blocks by a rule.
    """

    name: str
    caption: str
    label_headers: list[str]
    labels: list[list[str]]
    row_keys: list[str]
    columns: list[Column]
    mean: pd.DataFrame
    std: pd.DataFrame
    n_seeds: list[int]
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

    def decimals(self) -> dict[str, int]:
        """Per column: decimals printed, set by the means (the std below them is printed alike)."""
        return {c.key: c.decimals_for(self.mean[c.key].tolist()) for c in self.columns}

    def marks(self) -> dict[str, list[str | None]]:
        """Per column: best/second mark of every row (within ``rank_groups``), compared as printed."""
        blocks = self.rank_groups or [""] * len(self.row_keys)
        decimals = self.decimals()
        out = {}
        for col in self.columns:
            values = self.mean[col.key].tolist()
            marks: list[str | None] = [None] * len(values)
            for block in dict.fromkeys(blocks):
                idx = [i for i, b in enumerate(blocks) if b == block]
                ranked = display.rank_marks([values[i] for i in idx], col.higher_is_better, decimals[col.key])
                for i, m in zip(idx, ranked):
                    marks[i] = m
            out[col.key] = marks
        return out

    def display(self, columns: list[Column] | None = None, drop_levels: int = 0, name: str | None = None,
                caption: str | None = None) -> display.DisplayTable:
        """The table as people read it: mean, std on a second line, best bold and second underlined.

        ``columns`` (default: all) with their top ``drop_levels`` header
        levels left out: one part of a table split in two.
        """
        columns = self.columns if columns is None else columns
        marks, decimals = self.marks(), self.decimals()
        cells, seconds, cell_marks = [], [], []
        for r, key in enumerate(self.row_keys):
            cells.append(list(self.labels[r]) + [
                _number(self.mean.at[key, c.key], decimals[c.key]) for c in columns])
            seconds.append([""] * len(self.label_headers) + [
                _bracketed(self.std.at[key, c.key], decimals[c.key]) for c in columns])
            cell_marks.append([None] * len(self.label_headers) + [marks[c.key][r] for c in columns])
        depth = len(columns[0].groups) - drop_levels
        headers = [("",) * depth + (h,) for h in self.label_headers]
        headers += [c.groups[drop_levels:] + (c.header,) for c in columns]
        return display.DisplayTable(name or self.name, caption or self.caption, headers, len(self.label_headers),
                                    cells, cell_marks, seconds, self.rank_groups)

    def parts(self) -> list[display.DisplayTable]:
        """The table split by its top header (Table 2: legacy, then lesion-wise), one float each."""
        tops = list(dict.fromkeys(c.groups[0] for c in self.columns))
        return [
            self.display([c for c in self.columns if c.groups[0] == top], drop_levels=1,
                         name=f"{self.name}_{top.lower().replace('-', '')}",
                         caption=f"{self.caption} {top} metrics.")
            for top in tops
        ]

    def to_latex(self, fit_width: bool = False, split: bool = False) -> str:
        """One ``table*`` (``fit_width``: shrunk to the text width where wider), or one per top header."""
        if split:
            return "\n".join(display.to_latex(part) for part in self.parts())
        return display.to_latex(self.display(), fit_width=fit_width)

    def write(self, out_dir: Path, latex_text: str | None = None) -> list[Path]:
        """``<name>.csv``, ``<name>.tex`` (``latex_text``, else the table at its natural size) and ``<name>.html``."""
        csv, tex, page = (out_dir / f"{self.name}.{ext}" for ext in ("csv", "tex", "html"))
        write_table(self.to_frame(), csv)
        write_text(tex, latex_text if latex_text is not None else self.to_latex())
        write_text(page, display.to_html(self.display()))
        return [csv, tex, page]


def _number(value: float, decimals: int) -> str:
    return display.MISSING if value is None or math.isnan(value) else f"{value:.{decimals}f}"


def _bracketed(std: float, decimals: int) -> str:
    """``"(1.20)"``; empty where the std is undefined (one seed, or an architecture constant)."""
    return "" if std is None or math.isnan(std) else f"({std:.{decimals}f})"


def _round(value: float) -> float:
    return value if value is None or math.isnan(value) else round(float(value), 6)


def _assemble(
    name: str,
    caption: str,
    label_headers: list[str],
    labels: list[list[str]],
    row_keys: list[str],
    columns: list[Column],
    per_seed_frames: list[pd.DataFrame],
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
    return SummaryTable(name, caption, label_headers, labels, row_keys, columns, mean_df.astype(float),
                        std_df.astype(float), ns, **kwargs)


def metric_block(metrics: pd.DataFrame, metric: str, regions: tuple[str, ...]) -> pd.DataFrame:
    """Seed x ``<metric>_<region>`` (+ ``<metric>_avg``) frame; Dice scaled to %."""
    per_seed = per_seed_region_means(metrics, metric, regions)
    per_seed = with_average(per_seed, [r for r in AVERAGE_REGIONS if r in regions])
    if metric.endswith("dice"):
        per_seed = per_seed * 100.0
    per_seed.columns = [f"{metric}_{c}" for c in per_seed.columns]
    return per_seed


def metric_columns(metric: str, regions: tuple[str, ...], groups: tuple[str, ...]) -> list[Column]:
    """``<metric>_<region>`` columns and the average (header AVG); the direction arrow ends the last group."""
    higher = metric.endswith("dice")
    groups = groups[:-1] + (f"{groups[-1]} {display.arrow(higher)}",)
    decimals = 2 if higher else 1  # Dice in % to two decimals as in the paper; HD95 in mm to one
    return [Column(f"{metric}_{r}", r if r != "avg" else "AVG", groups, higher, decimals) for r in (*regions, "avg")]


def _seeds_phrase(n_seeds: list[int], per_seed: str = "the mean over cases") -> str:
    counts = sorted(set(n_seeds)) or [0]
    n = "/".join(str(c) for c in counts)
    seeds = "seed" if counts == [1] else "seeds"
    return f"mean over {n} {seeds} of {per_seed}, standard deviation over seeds in brackets"


# --------------------------------------------------------------------------- Table 1 and 2


def modality_columns() -> list[Column]:
    return (metric_columns("legacy_dice", TABLE1_LEGACY_REGIONS, (_METRIC_TITLES["legacy_dice"],))
            + metric_columns("lesion_dice", TABLE1_LESION_REGIONS, (_METRIC_TITLES["lesion_dice"],)))


def modality_table(groups: list[RunGroup], split: str = "test") -> SummaryTable:
    """Table 1: legacy Dice WT/TC/ET/avg and lesion-wise Dice NETC/SNFH/WT/TC/ET/avg per subset."""
    regions = sorted(set(TABLE1_LEGACY_REGIONS) | set(TABLE1_LESION_REGIONS))
    columns = modality_columns()
    frames = []
    for g in groups:
        metrics = read_metrics(g, split, regions)
        frames.append(pd.concat([
            metric_block(metrics, "legacy_dice", TABLE1_LEGACY_REGIONS),
            metric_block(metrics, "lesion_dice", TABLE1_LESION_REGIONS),
        ], axis=1))
    table = _assemble(
        "table1_modality", "", ["Subset"], [[g.label] for g in groups], [g.key for g in groups], columns, frames,
        extra={"subset_key": [g.subset for g in groups]},
    )
    table.caption = (
        f"Modality study on the {split} split: Dice (%) of the 3D U-Net trained on each subset of sequences; "
        f"{_seeds_phrase(table.n_seeds)}. AVG: mean of WT, TC and ET. Best in bold, second underlined."
    )
    return table


def comparison_columns() -> list[Column]:
    """Table 2 in the paper's layout: legacy, then lesion-wise; Dice, then HD95; WT/TC/ET/AVG each."""
    return [c for top, title, metric in TABLE2_BLOCKS for c in metric_columns(metric, TRAIN_REGIONS, (top, title))]


def comparison_table(groups: list[RunGroup], split: str = "test") -> SummaryTable:
    """Table 2: legacy and lesion-wise Dice and HD95 for WT/TC/ET/avg per model (:func:`comparison_columns`)."""
    columns = comparison_columns()
    frames = []
    for g in groups:
        metrics = read_metrics(g, split, TRAIN_REGIONS)
        frames.append(pd.concat([metric_block(metrics, m, TRAIN_REGIONS) for _, _, m in TABLE2_BLOCKS], axis=1))
    table = _assemble(
        "table2_comparison", "", ["Model"], [[g.label] for g in groups], [g.key for g in groups], columns, frames,
        extra={"subset_key": [g.subset_resolved for g in groups]},
    )
    table.caption = (
        f"Comparison on the {split} split: Dice (%) and HD95 (mm) per region; {_seeds_phrase(table.n_seeds)}. "
        "AVG: mean of WT, TC and ET. Best in bold, second underlined."
    )
    if any(g.run is not None for g in groups):
        table.caption += (
            " Seed ensembles: one prediction from the mean of the seeds' probabilities (no standard deviation);"
            f" mirroring averages {_mirroring_phrase(groups, split)}; postprocessing removes components below"
            " minimum volumes chosen on the validation split."
        )
    return table


def _mirroring_phrase(groups: list[RunGroup], split: str) -> str:
    """What the ensembles' mirroring averaged, from the cards their mirrored predictions carry
    (``inference.mirror_axes``; cards written before that key: all 8 images)."""
    import json

    axes_seen = set()
    for g in groups:
        if g.run is None:
            continue
        card = g.directory / ENSEMBLE_MIRRORED / "predictions" / split / CARD_NAME
        if card.is_file():
            inference = json.loads(card.read_text()).get("inference", {})
            axes_seen.add(tuple(inference.get("mirror_axes", (0, 1, 2))))
    if len(axes_seen) != 1:
        return "the mirror images"
    (axes,) = axes_seen
    names = " and ".join("xyz"[a] for a in axes)
    return f"the {2 ** len(axes)} mirror images (flips along {names} and their combinations)" if len(axes) > 1 \
        else f"the image and its flip along {names}"


def comparison_latex(table: SummaryTable, layout: str) -> str:
    """Table 2 as one float shrunk to the text width where wider (``single``) or two (``split``).

    ``layout`` is one of :data:`TABLE2_LAYOUTS`: the config schema's enum and the CLI's choices refuse others.
    """
    return table.to_latex(fit_width=layout == "single", split=layout == "split")


# --------------------------------------------------------------------------- efficiency


_LOWER = display.arrow(False)
_REDUCTION = f"vs 3D-UNET (%) {display.arrow(True)}"
#: Quantity above, unit or part below: two short header lines keep the table within a page.
EFFICIENCY_COLUMNS = [
    Column("parameters_m", "(M)", (f"Params {_LOWER}",), False, 1, significant=2),
    Column("gmac_per_window", "segm.", (f"GMAC/window {_LOWER}",), False, 0, significant=2),
    Column("detector_gmac_per_window", "det.", (f"GMAC/window {_LOWER}",), False, 0, significant=2),
    Column("windows_per_case", "all", (f"Windows/case {_LOWER}",), False, 0),
    Column("windows_kept_pct", "kept (%)", (f"Windows/case {_LOWER}",), False, 1),
    Column("gmac_per_case", "total", (f"GMAC/case {_LOWER}",), False, 0, significant=2),
    Column("segmentor_gmac_per_case", "segm.", (f"GMAC/case {_LOWER}",), False, 0, significant=2),
    Column("detector_gmac_per_case", "det.", (f"GMAC/case {_LOWER}",), False, 0, significant=2),
    Column("seconds_per_case", "s/case", (f"Time {_LOWER}",), False, 1, significant=2),
    Column("reduction_per_window_pct", "window", (_REDUCTION,), True, 1),
    Column("reduction_per_case_pct", "case", (_REDUCTION,), True, 1),
]
#: Columns that are architecture constants (one value per row, no spread over seeds).
_CONSTANT_COLUMNS = ("parameters_m", "gmac_per_window", "detector_gmac_per_window")


def _fraction_kept(inference: pd.DataFrame) -> pd.Series:
    if "fraction_kept" in inference.columns:
        return inference["fraction_kept"].astype(float)
    if {"windows_kept", "windows_total"} <= set(inference.columns):
        return inference["windows_kept"] / inference["windows_total"].replace(0, np.nan)
    return pd.Series(np.nan, index=inference.index)


def _gmac(inference: pd.DataFrame, column: str) -> pd.Series:
    """GMAC per case from a FLOP column of ``inference/<split>.tsv`` (NaN where the run has no such column)."""
    if column not in inference.columns:
        return pd.Series(np.nan, index=inference.index)
    return inference[column].astype(float) / 2e9


def efficiency_table(groups: list[RunGroup], split: str = "test", reference_model: str | None = None) -> SummaryTable:
    """Parameters and GMAC per window from ``model_info.json``; windows, GMAC and time per case from
    ``inference/<split>.tsv``; the reduction against the ``reference_model`` row (the 3D-UNET).

    A two-stage model's parameters are detector + segmentor; its GMAC per
    window is the segmentor's, with the detector's in its own column, and its
    GMAC per case splits into the detector on every window and the segmentor on
    the kept ones. The reduction per window compares GMAC per window of the
    segmentation networks, as the paper does (its "~85 %": about 60 against 478
    GMAC), although their windows differ in size (64^3 against 128^3); the
    reduction per case compares what each model spends on the same cases, every
    window and the detector included.
    """
    frames = []
    for g in groups:
        inference = read_inference(g, split)
        total = _gmac(inference, "flops")
        segmentor = _gmac(inference, "flops_segmentor") if g.study == "twostage" else total
        inference = inference.assign(
            gmac=total, gmac_segmentor=segmentor, gmac_detector=_gmac(inference, "flops_detector"),
            windows=(inference["windows_total"].astype(float) if "windows_total" in inference.columns
                     else np.nan),
            kept=_fraction_kept(inference) * 100.0,
        )
        per_seed = inference.groupby("seed").agg(
            windows_per_case=("windows", "mean"),
            windows_kept_pct=("kept", "mean"),
            gmac_per_case=("gmac", "mean"),
            segmentor_gmac_per_case=("gmac_segmentor", "mean"),
            detector_gmac_per_case=("gmac_detector", "mean"),
            seconds_per_case=("seconds", "mean"),
        )
        if g.study == "twostage":
            det, seg = read_model_info(g.sibling("detector")), read_model_info(g.sibling("segmentor"))
            params = float(det["parameters"]) + float(seg["parameters"])
            gmac, det_gmac = float(seg["gmac_per_window"]), float(det["gmac_per_window"])
        else:
            info = read_model_info(g)
            params, gmac, det_gmac = float(info["parameters"]), float(info["gmac_per_window"]), np.nan
        constants = {"parameters_m": params / 1e6, "gmac_per_window": gmac, "detector_gmac_per_window": det_gmac}
        frames.append((per_seed, constants))
    table = _assemble(
        "efficiency", "", ["Model"], [[g.label] for g in groups], [g.key for g in groups], EFFICIENCY_COLUMNS,
        [per_seed for per_seed, _ in frames],
    )
    for key, (_, constants) in zip(table.row_keys, frames):
        for col in _CONSTANT_COLUMNS:
            table.mean.at[key, col] = constants[col]
            table.std.at[key, col] = np.nan
    reference = next((g for g in groups if g.model == reference_model and g.study != "twostage"), None)
    for key in table.row_keys:
        for col, base in (("reduction_per_window_pct", "gmac_per_window"), ("reduction_per_case_pct", "gmac_per_case")):
            ours = table.mean.at[key, base]
            theirs = table.mean.at[reference.key, base] if reference is not None else np.nan
            table.mean.at[key, col] = (1.0 - ours / theirs) * 100.0 if theirs and not np.isnan(theirs) else np.nan
            table.std.at[key, col] = np.nan
    against = reference.label if reference is not None else "the 3D-UNET (not in this table: no reduction)"
    table.caption = (
        f"Efficiency on the {split} split: parameters (millions, detector and segmentor together for the "
        "two-stage model); GMAC per sliding window of the segmentation network (segm.) and of the detector "
        "(det.), from model_info.json; sliding windows per case and the fraction the detector kept; GMAC per "
        "case, in total and split into segmentation network and detector; seconds per case; and the reduction "
        f"against {against}, per window (segmentation networks' GMAC per window, as the paper compares them, "
        "although the two-stage windows are smaller) and per case (everything each model spends on a case). "
        f"{_seeds_phrase(table.n_seeds)} where measured. Lowest cost and highest reduction in bold, second "
        "underlined."
    )
    return table


# --------------------------------------------------------------------------- detection


def size_bin_labels(edges: list[float]) -> list[str]:
    """CSV names of the bins: ``[10, 100]`` -> ``["<10", "10-100", ">=100"]`` (mm^3; left-closed bins)."""
    fmt = lambda v: f"{v:g}"  # noqa: E731
    labels = [f"<{fmt(edges[0])}"]
    labels += [f"{fmt(lo)}-{fmt(hi)}" for lo, hi in zip(edges[:-1], edges[1:])]
    labels.append(f">={fmt(edges[-1])}")
    return labels


def size_bin_headers(edges: list[float]) -> list[str]:
    """Printed names of the bins: ``[10, 100]`` -> ``["<10", "10–100", "≥100"]``."""
    return [lab.replace(">=", "≥").replace("-", "–") for lab in size_bin_labels(edges)]


def assign_size_bins(volumes: pd.Series, edges: list[float]) -> pd.Series:
    """Bin index of each volume: 0 for < edges[0], i for edges[i-1] <= v < edges[i], len(edges) above."""
    return pd.Series(np.searchsorted(np.asarray(edges, dtype=float), volumes.to_numpy(float), side="right"),
                     index=volumes.index)


SENSITIVITY_TITLE = f"Sensitivity (%) {display.arrow(True)} by GT lesion volume (mm³)"


def detection_columns(edges: list[float]) -> list[Column]:
    columns = [Column(f"sens_{lab}", header, (SENSITIVITY_TITLE,), True, 1)
               for lab, header in zip(size_bin_labels(edges), size_bin_headers(edges))]
    return columns + [Column("sens_all", "all", (SENSITIVITY_TITLE,), True, 1),
                      Column("fp_per_patient", f"FP/patient {display.arrow(False)}", ("",), False, 2)]


def detection_table(
    groups: list[RunGroup], edges: list[float], regions: list[str], split: str = "test"
) -> SummaryTable:
    """Lesion-wise sensitivity per GT size bin (counted GT lesions) and FP per patient, per region.

    Per seed: sensitivity = detected / all counted GT lesions of the bin,
    pooled over the split's cases; FP per patient = mean over cases of
    ``num_fp``. Then mean (std) over seeds. A bin without lesions prints
    ``–``; the CSV has the number of GT lesions per bin (``n_<bin>``).
    Best and second are marked within each region.
    """
    edges = sorted(float(e) for e in edges)
    bin_labels = size_bin_labels(edges)
    columns = detection_columns(edges)
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
            labels.append([region, g.label])
            keys.append(f"{g.key}:{region}")
            blocks.append(region)
    table = _assemble(
        "detection", "", ["Region", "Model"], labels, keys, columns, frames, rank_groups=blocks, extra=counts,
    )
    table.caption = (
        f"Detection on the {split} split: lesion-wise sensitivity (%) of the counted ground-truth lesions by "
        f"volume, and false-positive lesions per patient; "
        f"{_seeds_phrase(table.n_seeds, 'the sensitivity over all lesions and the FP mean over cases')}. "
        "Best in bold and second underlined within each region."
    )
    return table


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
        return display.MISSING
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def reachability_note(df: pd.DataFrame, alpha: float = ALPHA) -> str:
    """A caption sentence where the split is too small for any test (or any Holm-corrected test) to reach ``alpha``.

    Bounded by the exact test's smallest p with the most cases of any row;
    empty where a small enough p is possible.
    """
    tested = df["n_cases"][df["p_value"].notna()] if len(df) else pd.Series(dtype=int)
    if tested.empty:
        return ""
    n, m = int(tested.max()), len(tested)
    smallest = wilcoxon_smallest_p(n)
    if smallest >= alpha:
        return (f"With {n} test cases no two-sided Wilcoxon signed-rank test can give p < {smallest:.3g}, "
                f"so no difference can reach p < {alpha}; more test cases are needed.")
    if m * smallest >= alpha:
        return (f"With {n} test cases and Holm's correction over {m} tests, no corrected p can fall below "
                f"{min(1.0, m * smallest):.3g}, so no difference can reach p (Holm) < {alpha}.")
    return ""


def significance_display(df: pd.DataFrame, split: str = "test") -> display.DisplayTable:
    """The tests as people read them: one block per model, significant p (Holm) in bold."""
    reference = df["reference"].iloc[0] if len(df) else "the two-stage model"
    tested = set(df["metric"])
    units = ", ".join(u for u, shown in (("Dice in percentage points", any(m.endswith("dice") for m in tested)),
                                          ("HD95 in mm", any(m.endswith("hd95") for m in tested))) if shown)
    cells, marks = [], []
    for r in df.itertuples(index=False):
        diff = display.MISSING if math.isnan(r.mean_difference) else f"{r.mean_difference:+.2f}".replace("-", "−")
        cells.append([r.model, _METRIC_TITLES[r.metric].replace(" (%)", ""), r.region, str(r.n_cases), diff,
                      format_p(r.p_value), format_p(r.p_holm)])
        marks.append([None] * 6 + ["significant" if r.significant else None])
    caption = (
        f"Paired two-sided Wilcoxon signed-rank tests over the {split} cases (per-case value: mean over seeds): "
        f"{reference} minus each model{f' ({units})' if units else ''}; p (Holm): Holm-corrected over all rows, "
        f"bold where below {ALPHA}."
    )
    if df.empty:
        caption += " No test: Table 2 has no two-stage model or no other model to compare it with."
    note = reachability_note(df)
    return display.DisplayTable(
        "table2_significance", f"{caption} {note}".strip(),
        [(h,) for h in ("Model", "Metric", "Region", "n", "Mean diff.", "p", "p (Holm)")], 3, cells, marks,
        blocks=df["model"].tolist(),
    )


# --------------------------------------------------------------------------- all tables


def make_tables(results: str | Path, cfg: ReportConfig, out_dir: str | Path, split: str = "test") -> list[Path]:
    """Write every table (CSV, LaTeX, HTML) under ``out_dir``; returns the files written.

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
    # Ensemble rows are Table 2 only: one prediction each, no seeds to test or time per model.
    comparison = comparison_table(comp_groups + ensemble_groups(results, cfg), split)
    written += comparison.write(out_dir, comparison_latex(comparison, cfg.table2_layout))
    significance = significance_table(comp_groups, split)
    shown = significance_display(significance, split)
    csv, tex, page = (out_dir / f"{shown.name}.{ext}" for ext in ("csv", "tex", "html"))
    write_table(significance, csv)
    write_text(tex, display.to_latex(shown))
    write_text(page, display.to_html(shown))
    written += [csv, tex, page]
    efficiency = efficiency_table(comp_groups, split, cfg.modality_model)
    written += efficiency.write(out_dir, efficiency.to_latex(fit_width=True))
    written += detection_table(comp_groups, cfg.size_bins, cfg.detection_regions, split).write(out_dir)
    for path in written:
        log.info("wrote %s", path)
    return written
