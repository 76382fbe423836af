"""Figures of the study, each written as PNG (report) and PDF (paper).

Files under ``<out_dir>`` (stems; each as ``.png`` and ``.pdf``):

- ``patients_per_split``: patients per split by number of metastases
  (the paper's Fig. 2), from ``results/data/cases.tsv`` and ``splits.tsv``;
- ``modality_heatmap``: Table 1's lesion-wise Dice as a subsets x regions heatmap;
- ``qualitative``: one test case (the one with most lesions unless configured),
  the axial T1c slice with the largest lesion area, ground truth and each
  Table 2 model's prediction (lowest seed, normally seed 0) as label contours
  (the paper's Fig. 3);
- ``training_<study>``: loss against iteration, mean over seeds per
  model/subset (thin lines: single seeds), for ``modality``, and
  ``twostage`` / ``baselines`` when configured.

matplotlib is used through ``Figure`` objects with the Agg canvas (no pyplot
state, no display needed).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from brainmets.constants import LABELS, SPLITS
from brainmets.errors import BrainmetsError
from brainmets.io import atomic_path, read_table
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
#: Contour colours of the BraTS labels (NETC, SNFH, ET).
LABEL_COLOURS = {1: "#E41A1C", 2: "#4DAF4A", 3: "#FFD92F"}
#: Metastasis counts from this value on share one bar.
COUNT_CAP = 10


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


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


def plot_modality_heatmap(table: SummaryTable, out_dir: Path) -> list[Path]:
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
    fig.colorbar(image, ax=ax, shrink=0.8)
    return save_figure(fig, out_dir, "modality_heatmap")


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
    import nibabel as nib

    if not path.is_file():
        raise BrainmetsError(f"{case}: {what} not found ({path})")
    try:
        return np.asanyarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)
    except Exception as exc:  # nibabel raises many types for broken files
        raise BrainmetsError(f"{case}: cannot read {what} {path}: {exc}") from exc


def largest_lesion_slice(seg: np.ndarray) -> int:
    """Axial index (last axis, RAS) with the most lesion voxels."""
    area = (seg > 0).reshape(-1, seg.shape[-1]).sum(axis=0)
    return int(np.argmax(area))


def plot_qualitative(case: str, t1c: Path, seg: Path, predictions: list[tuple[str, Path]], out_dir: Path) -> list[Path]:
    """T1c slice with GT and each model's labels as contours, one panel each."""
    from matplotlib.lines import Line2D

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
    for ax, (title, labels) in zip(axes.flat, panels):
        ax.imshow(background, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        slab = np.rot90(labels[..., z])
        for value, colour in LABEL_COLOURS.items():
            mask = (slab == value).astype(float)
            if mask.any():
                ax.contour(mask, levels=[0.5], colors=[colour], linewidths=0.9)
        ax.set_title(title, fontsize=8)
    handles = [Line2D([], [], color=c, label=LABELS[v]) for v, c in LABEL_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=8)
    fig.suptitle(f"{case}, axial slice {z} (T1c)", fontsize=9)
    return save_figure(fig, out_dir, "qualitative")


def _resolve(path_value: str, results: Path) -> Path:
    """A path from cases.tsv: absolute, relative to the working directory, or to results' parent."""
    path = Path(path_value)
    if path.is_absolute() or path.exists():
        return path
    alternative = results.parent / path
    return alternative if alternative.exists() else path


# --------------------------------------------------------------------------- training curves


def plot_training_curves(panels: dict[str, list[RunGroup]], title: str, out_dir: Path, stem: str) -> list[Path]:
    """Loss vs iteration: one axes per panel, a line per group (mean over seeds), seeds faint."""
    fig = _figure(6 * len(panels), 4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, groups) in zip(axes, panels.items()):
        colours = _colours(len(groups))
        for colour, group in zip(colours, groups):
            history = read_history(group)
            history = history.dropna(subset=["loss"])
            for _, seed_hist in history.groupby("seed"):
                ax.plot(seed_hist["iteration"], seed_hist["loss"], color=colour, alpha=0.25, linewidth=0.6)
            mean = history.groupby("iteration")["loss"].mean()
            ax.plot(mean.index, mean.to_numpy(), color=colour, linewidth=1.4, label=group.label)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("training loss")
        if all(_positive_losses(g) for g in groups):
            ax.set_yscale("log")
        ax.legend(fontsize=6, frameon=False, ncols=2 if len(groups) > 8 else 1)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, out_dir, stem)


def _positive_losses(group: RunGroup) -> bool:
    return bool((read_history(group)["loss"].dropna() > 0).all())


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


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

    written += plot_training_curves({f"3D U-Net ({cfg.modality_model}) per input subset": mod_groups},
                                    "Modality study: training loss", out_dir, "training_modality")
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
    "plot_qualitative", "plot_training_curves", "choose_case", "largest_lesion_slice",
]
