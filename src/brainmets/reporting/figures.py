"""Figures of the study, each written as PNG (report) and PDF (paper).

Files under ``<out_dir>`` (stems; each as ``.png`` and ``.pdf``):

- ``patients_per_split``: patients per split by number of metastases
  (the paper's Fig. 2), from ``results/data/cases.tsv`` and ``splits.tsv``;
- ``modality_heatmap``: Table 1's lesion-wise Dice as a subsets x regions
  heatmap, its colour bar labelled;
- ``qualitative``: one test case (the one with most lesions unless configured),
  the axial T1c slice with the largest lesion area, ground truth and each
  Table 2 model's prediction (lowest seed, normally seed 0) as filled label
  outlines, NETC drawn last so that ET's outline cannot hide it; a model
  whose prediction is empty (or empty on that slice) says so in its panel
  (the paper's Fig. 3);
- ``training_<study>``: loss against iteration, mean over seeds per
  model/subset (thin lines: single seeds), for ``modality`` (one panel per
  number of input sequences, so that no panel holds more than six curves),
  and ``twostage`` / ``baselines`` when configured; legends below the panels.

matplotlib is used through ``Figure`` objects with the Agg canvas (no pyplot
state, no display needed).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from brainmets.constants import LABELS, SPLITS, parse_subset
from brainmets.errors import BrainmetsError
from brainmets.io import atomic_path, read_table
from brainmets.nifti import read_image, read_voxels
from brainmets.reporting.collect import (
    ReportConfig,
    RunGroup,
    comparison_groups,
    make_group,
    modality_groups,
    read_history,
)
from brainmets.reporting.tables import SummaryTable, modality_table

log = logging.getLogger(__name__)

SPLIT_COLOURS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}
#: Colours of the BraTS labels (NETC, SNFH, ET), as outline and (lighter) fill.
LABEL_COLOURS = {1: "#E41A1C", 2: "#4DAF4A", 3: "#FFD92F"}
#: Drawing order: outer to inner, so that NETC (inside ET) is drawn last and stays visible.
LABEL_ORDER = (2, 3, 1)
LABEL_FILL_ALPHA = 0.35
#: Metastasis counts from this value on share one bar.
COUNT_CAP = 10


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` (150 dpi) and ``<stem>.pdf`` atomically."""
    paths = []
    for ext, kwargs in (("png", {"dpi": 150}), ("pdf", {})):
        path = out_dir / f"{stem}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, **kwargs)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- cohort


def load_cohort(results: Path) -> pd.DataFrame:
    """``cases.tsv`` (status ok) joined with ``splits.tsv``: case, split, n_lesions, t1c, seg."""
    cases = read_table(results / "data" / "cases.tsv", what="case index")
    splits = read_table(results / "data" / "splits.tsv", what="split file")
    for df, name, cols in ((cases, "cases.tsv", ("case", "n_lesions")), (splits, "splits.tsv", ("case", "split"))):
        absent = [c for c in cols if c not in df.columns]
        if absent:
            raise BrainmetsError(f"{results / 'data' / name}: missing column(s) {', '.join(absent)}")
    if "status" in cases.columns:
        cases = cases[cases["status"].astype(str) == "ok"]
    cases = cases.assign(case=cases["case"].astype(str))
    splits = splits.assign(case=splits["case"].astype(str))
    return cases.merge(splits[["case", "split"]], on="case", how="inner")


def plot_patients_per_split(cohort: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Grouped bars: patients per number of metastases, one colour per split."""
    counts = cohort["n_lesions"].astype(int).clip(upper=COUNT_CAP)
    bins = list(range(int(counts.min()), COUNT_CAP + 1)) if len(counts) else []
    labels = [f"\u2265{b}" if b == COUNT_CAP else str(b) for b in bins]
    splits = [s for s in SPLITS if s in set(cohort["split"])]
    fig = _figure(7, 3.5)
    ax = fig.add_subplot()
    width = 0.8 / max(len(splits), 1)
    x = np.arange(len(bins))
    for i, split in enumerate(splits):
        per_bin = counts[cohort["split"] == split].value_counts().reindex(bins, fill_value=0)
        ax.bar(x + (i - (len(splits) - 1) / 2) * width, per_bin.to_numpy(), width,
               color=SPLIT_COLOURS.get(split), label=f"{split} (n={int((cohort['split'] == split).sum())})")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xticks(x, labels)
    ax.set_xlabel("number of metastases")
    ax.set_ylabel("patients")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return save_figure(fig, out_dir, "patients_per_split")


# --------------------------------------------------------------------------- modality heatmap


def modality_heatmap_figure(table: SummaryTable):
    """Subsets x regions heatmap of lesion-wise Dice (%), values written in the cells."""
    cols = [c for c in table.columns if c.key.startswith("lesion_dice_")]
    values = table.mean[[c.key for c in cols]].to_numpy(float)
    fig = _figure(1.1 * len(cols) + 2.5, 0.35 * len(table.row_keys) + 1.5)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=np.nanmin(values) if values.size else 0,
                      vmax=np.nanmax(values) if values.size else 1)
    ax.set_xticks(range(len(cols)), [c.header for c in cols])
    ax.set_yticks(range(len(table.row_keys)), [lab[0] for lab in table.labels])
    lo, hi = (np.nanmin(values), np.nanmax(values)) if values.size else (0, 1)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            dark = (v - lo) < 0.6 * (hi - lo) if hi > lo else True
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_title("Lesion-wise Dice (%) by input sequences (test)")
    fig.colorbar(image, ax=ax, label="Dice (%)")
    return fig


def plot_modality_heatmap(table: SummaryTable, out_dir: Path) -> list[Path]:
    return save_figure(modality_heatmap_figure(table), out_dir, "modality_heatmap")


# --------------------------------------------------------------------------- qualitative panel


def choose_case(cohort: pd.DataFrame, case: str | None) -> pd.Series:
    """The configured test case, or the test case with most lesions (ties: first by name)."""
    test = cohort[cohort["split"] == "test"].sort_values("case")
    if test.empty:
        raise BrainmetsError("no test cases in splits.tsv: cannot draw the qualitative panel")
    if case is not None:
        hit = test[test["case"] == case]
        if hit.empty:
            raise BrainmetsError(f"qualitative case {case!r} is not a test case (see results/data/splits.tsv)")
        return hit.iloc[0]
    return test.loc[test["n_lesions"].astype(int).idxmax()]


def _load_canonical(path: Path, case: str, what: str) -> np.ndarray:
    """The voxels reoriented to RAS (nibabel's closest canonical orientation)."""
    from nibabel.orientations import apply_orientation, io_orientation

    image = read_image(case, path, what)
    return apply_orientation(read_voxels(case, path, image), io_orientation(image.affine))


def largest_lesion_slice(seg: np.ndarray) -> int:
    """Axial index (last axis, RAS) with the most lesion voxels; ties: the most tumour core (NETC + ET)."""
    flat = seg.reshape(-1, seg.shape[-1])
    area = (flat > 0).sum(axis=0)
    core = np.isin(flat, (1, 3)).sum(axis=0)
    return int(np.lexsort((-core, -area))[0])


def _draw_labels(ax, slab: np.ndarray) -> None:
    """Each label as a light fill and an outline, outer labels first."""
    from matplotlib.colors import to_rgba

    for value in LABEL_ORDER:
        mask = slab == value
        if not mask.any():
            continue
        fill = np.zeros((*mask.shape, 4))
        fill[mask] = to_rgba(LABEL_COLOURS[value], LABEL_FILL_ALPHA)
        ax.imshow(fill, interpolation="nearest")
        ax.contour(mask.astype(float), levels=[0.5], colors=[LABEL_COLOURS[value]], linewidths=1.2)


def qualitative_figure(case: str, t1c: Path, seg: Path, predictions: list[tuple[str, Path]]):
    """T1c slice with GT and each model's labels, one panel each; empty predictions are said to be empty."""
    from matplotlib.patches import Patch

    image = _load_canonical(t1c, case, "T1c image").astype(np.float32)
    gt = _load_canonical(seg, case, "ground truth").astype(np.int16)
    if image.shape[:3] != gt.shape[:3]:
        raise BrainmetsError(f"{case}: T1c shape {image.shape} differs from segmentation shape {gt.shape}")
    z = largest_lesion_slice(gt)
    panels = [("Ground truth", gt)]
    for label, path in predictions:
        pred = _load_canonical(path, case, f"prediction of {label}").astype(np.int16)
        if pred.shape != gt.shape:
            raise BrainmetsError(f"{case}: prediction {path} has shape {pred.shape}, ground truth {gt.shape}")
        panels.append((label, pred))
    background = np.rot90(image[..., z])
    finite = background[np.isfinite(background)]
    vmin, vmax = (np.percentile(finite, [1, 99.5]) if finite.size else (0, 1))
    ncols = min(len(panels), 4)
    nrows = int(np.ceil(len(panels) / ncols))
    fig = _figure(3.0 * ncols, 3.1 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (ax, (title, labels)) in enumerate(zip(axes.flat, panels)):
        ax.imshow(background, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        slab = np.rot90(labels[..., z])
        _draw_labels(ax, slab)
        ax.set_title(title, fontsize=8)
        what = "prediction" if i else "ground truth"
        empty = f"empty {what}" if not labels.any() else "no lesion on this slice" if not slab.any() else None
        if empty:
            ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", fontsize=9,
                    color="white", bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none"})
    handles = [Patch(facecolor=LABEL_COLOURS[v], edgecolor=LABEL_COLOURS[v], label=LABELS[v]) for v in sorted(LABELS)]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=8)
    fig.suptitle(f"{case}, axial slice {z} (T1c)", fontsize=9)
    return fig


def plot_qualitative(case: str, t1c: Path, seg: Path, predictions: list[tuple[str, Path]], out_dir: Path) -> list[Path]:
    return save_figure(qualitative_figure(case, t1c, seg, predictions), out_dir, "qualitative")


def _resolve(path_value: str, results: Path) -> Path:
    """A path from cases.tsv: absolute, relative to the working directory, or to results' parent."""
    path = Path(path_value)
    if path.is_absolute() or path.exists():
        return path
    alternative = results.parent / path
    return alternative if alternative.exists() else path


# --------------------------------------------------------------------------- training curves


def training_curves_figure(panels: dict[str, list[RunGroup]], title: str):
    """Loss vs iteration: one axes per panel (shared y), a line per group (mean over seeds), seeds faint.

    Each panel's legend sits below it, never over the curves.
    """
    histories = {g.key: read_history(g).dropna(subset=["loss"]) for groups in panels.values() for g in groups}
    log_scale = all((h["loss"] > 0).all() for h in histories.values())
    fig = _figure(max(3.6 * len(panels), 6.0), 4.6)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (panel_title, groups) in zip(axes, panels.items()):
        for colour, group in zip(_colours(len(groups)), groups):
            history = histories[group.key]
            for _, seed_hist in history.groupby("seed"):
                ax.plot(seed_hist["iteration"], seed_hist["loss"], color=colour, alpha=0.25, linewidth=0.6)
            mean = history.groupby("iteration")["loss"].mean()
            ax.plot(mean.index, mean.to_numpy(), color=colour, linewidth=1.4, label=group.label)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("iteration")
        if log_scale:
            ax.set_yscale("log")
        ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                  ncols=2 if len(groups) > 3 else 1)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("training loss")
    fig.suptitle(title, fontsize=11)
    return fig


def plot_training_curves(panels: dict[str, list[RunGroup]], title: str, out_dir: Path, stem: str) -> list[Path]:
    return save_figure(training_curves_figure(panels, title), out_dir, stem)


def modality_curve_panels(groups: list[RunGroup]) -> dict[str, list[RunGroup]]:
    """The modality study's runs by number of input sequences: 15 subsets make panels of 4, 6, 4 and 1 curves."""
    panels: dict[str, list[RunGroup]] = {}
    for group in sorted(groups, key=lambda g: len(parse_subset(g.subset))):
        n = len(parse_subset(group.subset))
        panels.setdefault(f"{n} sequence{'s' if n > 1 else ''}", []).append(group)
    return panels


def _colours(n: int) -> list:
    """Distinct colours: tab10's up to ten lines; beyond, evenly spaced along turbo (tab20's pairs look alike)."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


# --------------------------------------------------------------------------- all figures


def training_figure_stems(cfg: ReportConfig) -> list[str]:
    """Stems of the training-curve figures :func:`make_figures` writes for this config."""
    stems = ["training_modality"]
    if cfg.twostage_subsets:
        stems.append("training_twostage")
    if cfg.baseline_models:
        stems.append("training_baselines")
    return stems


def figure_stems(cfg: ReportConfig) -> list[str]:
    """Stems :func:`make_figures` writes for this config (each as .png and .pdf), for workflow outputs."""
    return ["patients_per_split", "modality_heatmap", "qualitative"] + training_figure_stems(cfg)


def _twostage_curve_label(group: RunGroup) -> str:
    from brainmets.constants import subset_label

    label = subset_label(group.subset_resolved)
    return f"{label} (selected)" if group.subset != group.subset_resolved else label


def make_figures(results: str | Path, cfg: ReportConfig, out_dir: str | Path, case: str | None = None) -> list[Path]:
    """Write every figure under ``out_dir``; returns the files written."""
    results, out_dir = Path(results), Path(out_dir)
    written: list[Path] = []
    cohort = load_cohort(results)
    written += plot_patients_per_split(cohort, out_dir)

    mod_groups = modality_groups(results, cfg)
    written += plot_modality_heatmap(modality_table(mod_groups, "test"), out_dir)

    comp_groups = comparison_groups(results, cfg)
    row = choose_case(cohort, case or cfg.qualitative_case)
    for column in ("t1c", "seg"):
        if column not in row.index or pd.isna(row[column]):
            raise BrainmetsError(f"{row['case']}: no {column} path in {results / 'data' / 'cases.tsv'}")
    predictions = [
        (g.label, g.run_dir(min(g.seeds)) / "predictions" / "test" / f"{row['case']}.nii.gz") for g in comp_groups
    ]
    written += plot_qualitative(str(row["case"]), _resolve(str(row["t1c"]), results),
                                _resolve(str(row["seg"]), results), predictions, out_dir)

    written += plot_training_curves(modality_curve_panels(mod_groups),
                                    f"Modality study ({cfg.modality_model}): training loss by input sequences",
                                    out_dir, "training_modality")
    if cfg.twostage_subsets:
        twostage = [g for g in comp_groups if g.study == "twostage"]
        panels = {
            part.capitalize(): [
                make_group(results, "twostage", part, g.subset, _twostage_curve_label(g), cfg.seeds,
                           g.subset_resolved)
                for g in twostage
            ]
            for part in ("detector", "segmentor")
        }
        written += plot_training_curves(panels, "Two-stage model: training loss", out_dir, "training_twostage")
    baselines = [g for g in comp_groups if g.study == "baselines"]
    if baselines:
        written += plot_training_curves({"Baselines": baselines},
                                        "Baselines: training loss", out_dir, "training_baselines")
    for path in written:
        log.info("wrote %s", path)
    return written


__all__ = [
    "make_figures", "figure_stems", "training_figure_stems", "plot_patients_per_split", "plot_modality_heatmap",
    "plot_qualitative", "plot_training_curves", "choose_case", "largest_lesion_slice", "modality_heatmap_figure",
    "qualitative_figure", "training_curves_figure", "modality_curve_panels",
]
