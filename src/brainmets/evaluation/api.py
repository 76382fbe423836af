"""Evaluate predicted BraTS-MET label maps against ground truth: arrays, files, directories.

Numbers follow the BraTS 2023 lesion-wise evaluation with BraTS-MET settings
(see :mod:`brainmets.evaluation.lesionwise`), for the regions of
``brainmets.constants.REGIONS`` (WT, TC, ET and the single labels NETC, SNFH).

Conventions taken from the official code, so results compare with the
challenge's:
* the voxel spacing (volumes, distances) is the prediction header's;
* volumes are in mm^3; an infinite HD95 (one side empty) is reported as 374.

Layouts: ground truth ``<gt-dir>/<case>/<case>-seg.nii.gz`` (BraTS) or
``<gt-dir>/<case>-seg.nii.gz`` (flat); predictions ``<pred-dir>/<case>.nii.gz``
(BraTS submission layout). A prediction file whose case has no ground truth is
an error rather than a warning: it almost always means a naming mistake that
would otherwise drop the case silently.
"""

from __future__ import annotations

import logging
from operator import itemgetter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from brainmets.boxes import bounding_box
from brainmets.constants import REGIONS, SEG_SUFFIX
from brainmets.errors import BrainmetsError, CaseError
from brainmets.evaluation.lesionwise import evaluate_region
from brainmets.evaluation.surface import as_spacing
from brainmets.nifti import check_labels, check_same_grid, grid_of, read_image, read_voxels
from brainmets.parallel import parallel_map

log = logging.getLogger(__name__)

CASE_COLUMNS: tuple[str, ...] = (
    "case", "region", "legacy_dice", "legacy_hd95", "lesion_dice", "lesion_hd95",
    "num_tp", "num_fp", "num_fn", "gt_volume", "pred_volume",
)
LESION_COLUMNS: tuple[str, ...] = (
    "case", "region", "lesion_id", "kind", "volume", "counted", "detected", "dice", "hd95",
    "matched_components",
)
PRED_SUFFIX = ".nii.gz"
GT_SUFFIX = f"-{SEG_SUFFIX}.nii.gz"


def _as_label_map(array: np.ndarray, case: str, what: str, file: str | Path | None) -> np.ndarray:
    """Return ``array`` as uint8 labels after checking it is a 3-D map of the BraTS-MET labels."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise CaseError(case, file, f"{what} must be a 3-D label map, got shape {array.shape}")
    if array.size == 0:
        raise CaseError(case, file, f"{what} is empty (shape {array.shape})")
    return check_labels(array, case, file, what=f"{what} label")


def _region_mask(label_map: np.ndarray, labels: tuple[int, ...]) -> np.ndarray:
    """Voxels carrying any of ``labels`` (comparisons: a lookup-table gather is ~50x slower)."""
    mask = label_map == labels[0]
    for label in labels[1:]:
        mask |= label_map == label
    return mask


def _case_crop(gt: np.ndarray, pred: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of every labelled voxel of either map, grown by one voxel inside the volume.

    The one-voxel margin is what the lesion merging needs: a GT voxel then lies
    on a crop face only where that face is a face of the volume, so the dilation
    is cut exactly where the official full-volume dilation is.
    """
    return bounding_box((gt > 0) | (pred > 0), margin=1)


def evaluate_case(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    case: str = "case",
    regions: Iterable[str] = tuple(REGIONS),
) -> tuple[list[dict], list[dict]]:
    """Metrics of one case from label arrays in memory.

    Returns ``(rows, lesion_rows)``: one dict per region with ``CASE_COLUMNS``
    and one dict per GT lesion / false-positive component with
    ``LESION_COLUMNS``. ``spacing`` is the voxel size in mm along the array axes.
    """
    spacing = as_spacing(spacing)
    gt = _as_label_map(gt, case, "ground truth", None)
    pred = _as_label_map(pred, case, "prediction", None)
    if gt.shape != pred.shape:
        raise CaseError(case, None, f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    unknown = [r for r in regions if r not in REGIONS]
    if unknown:
        raise BrainmetsError(f"unknown region(s) {unknown}; expected some of {', '.join(REGIONS)}")

    crop = _case_crop(gt, pred)
    if crop is not None:
        gt, pred = gt[crop], pred[crop]
    rows: list[dict] = []
    lesion_rows: list[dict] = []
    for region in regions:
        labels = REGIONS[region]
        if crop is None:
            result = evaluate_region(np.zeros((1, 1, 1), bool), np.zeros((1, 1, 1), bool), spacing)
        else:
            result = evaluate_region(_region_mask(gt, labels), _region_mask(pred, labels), spacing)
        rows.append({"case": case, "region": region, **result.summary()})
        for lesion in result.lesions:
            lesion_rows.append(
                {
                    "case": case, "region": region, "lesion_id": lesion.lesion_id, "kind": lesion.kind,
                    "volume": lesion.volume, "counted": lesion.counted, "detected": lesion.detected,
                    "dice": lesion.dice, "hd95": lesion.hd95, "matched_components": lesion.matched_components,
                }
            )
    return rows, lesion_rows


def _load_nifti(path: Path, case: str, what: str):
    image = read_image(case, path, what)
    return image, read_voxels(case, path, image)


def evaluate_files(
    pred_path: str | Path | None,
    gt_path: str | Path,
    case: str | None = None,
    regions: Iterable[str] = tuple(REGIONS),
) -> tuple[list[dict], list[dict]]:
    """Metrics of one case from NIfTI files; ``pred_path=None`` scores an empty prediction.

    The prediction must have the ground truth's shape and affine. Spacing comes
    from the prediction header (as in the official code), or the GT header when
    the prediction is empty.
    """
    gt_path = Path(gt_path)
    case = case or gt_path.name.removesuffix(".nii.gz").removesuffix(f"-{SEG_SUFFIX}")
    gt_image, gt = _load_nifti(gt_path, case, "ground truth")
    if pred_path is None:
        pred = np.zeros(gt.shape, np.uint8)
        header_image = gt_image
    else:
        pred_path = Path(pred_path)
        pred_image, pred = _load_nifti(pred_path, case, "prediction")
        check_same_grid(case, grid_of(pred_path, pred_image), grid_of(gt_path, gt_image),
                        expected="the prediction on the ground truth's voxel grid")
        header_image = pred_image
    gt = _as_label_map(gt, case, "ground truth", gt_path)
    pred = _as_label_map(pred, case, "prediction", pred_path)
    # Header zooms are float32; the official code uses them as such.
    spacing = tuple(float(z) for z in header_image.header.get_zooms()[:3])
    return evaluate_case(pred, gt, spacing, case=case, regions=regions)


def find_gt_cases(gt_dir: str | Path) -> dict[str, Path]:
    """Ground-truth files by case: BraTS layout ``<case>/<case>-seg.nii.gz`` or flat ``<case>-seg.nii.gz``."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise BrainmetsError(f"ground-truth directory not found: {gt_dir}")
    found: dict[str, Path] = {}
    for entry in sorted(gt_dir.iterdir()):
        if entry.is_dir():
            path = entry / f"{entry.name}{GT_SUFFIX}"
            case = entry.name
            if not path.is_file():
                continue
        elif entry.name.endswith(GT_SUFFIX):
            path, case = entry, entry.name.removesuffix(GT_SUFFIX)
        else:
            continue
        if case in found:
            raise CaseError(case, path, f"ground truth found twice (also {found[case]})", "keep one layout")
        found[case] = path
    if not found:
        raise BrainmetsError(
            f"no ground truth in {gt_dir}: expected <case>/<case>{GT_SUFFIX} (BraTS layout) "
            f"or <case>{GT_SUFFIX} files"
        )
    return found


def find_predictions(pred_dir: str | Path) -> dict[str, Path]:
    """Prediction files by case: ``<pred-dir>/<case>.nii.gz``."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise BrainmetsError(f"prediction directory not found: {pred_dir}")
    return {
        p.name.removesuffix(PRED_SUFFIX): p
        for p in sorted(pred_dir.iterdir())
        if p.is_file() and p.name.endswith(PRED_SUFFIX) and not p.name.startswith(".")
    }


def _evaluate_job(job: tuple[str, str | None, str]) -> tuple[list[dict], list[dict]]:
    case, pred_path, gt_path = job
    return evaluate_files(pred_path, gt_path, case=case)


def evaluate_dirs(
    pred_dir: str | Path,
    gt_dir: str | Path,
    cases: Iterable[str] | None = None,
    missing: str = "error",
    workers: int = 1,
    progress: bool = True,
):
    """Evaluate every GT case (or ``cases``) against ``<pred_dir>/<case>.nii.gz``.

    ``missing="error"`` fails on a GT case without prediction; ``"empty"``
    scores it as an empty prediction, as the challenge does. Returns
    ``(df, lesions_df)`` with ``CASE_COLUMNS`` and ``LESION_COLUMNS``, cases in
    sorted order, evaluated in ``workers`` processes.
    """
    import pandas as pd

    if missing not in ("error", "empty"):
        raise BrainmetsError(f"missing must be 'error' or 'empty', got {missing!r}")
    gt_files = find_gt_cases(gt_dir)
    predictions = find_predictions(pred_dir)
    strays = sorted(set(predictions) - set(gt_files))
    if strays:
        raise CaseError(
            strays[0], predictions[strays[0]],
            f"prediction has no ground truth in {gt_dir}"
            + (f" ({len(strays) - 1} more: {', '.join(strays[1:4])}{', ...' if len(strays) > 4 else ''})" if len(strays) > 1 else ""),
            f"predictions must be named <case>{PRED_SUFFIX} after a GT case",
        )
    if cases is None:
        selected = sorted(gt_files)
    else:
        selected = sorted(dict.fromkeys(cases))
        unknown = [c for c in selected if c not in gt_files]
        if unknown:
            raise CaseError(unknown[0], None, f"case has no ground truth in {gt_dir}", f"{len(unknown)} such case(s)")
    jobs = []
    for case in selected:
        pred_path = predictions.get(case)
        if pred_path is None:
            expected = Path(pred_dir) / f"{case}{PRED_SUFFIX}"
            if missing == "error":
                raise CaseError(case, expected, "prediction missing", "use --missing-as-empty to score it as empty")
            log.warning("%s: no prediction (%s); scored as empty", case, expected)
        jobs.append((case, None if pred_path is None else str(pred_path), str(gt_files[case])))

    rows, lesion_rows = [], []
    for case_rows, case_lesions in parallel_map(_evaluate_job, jobs, workers=workers, desc="evaluate",
                                                progress=progress, name=itemgetter(0)):
        rows.extend(case_rows)
        lesion_rows.extend(case_lesions)
    df = pd.DataFrame(rows, columns=list(CASE_COLUMNS))
    lesions_df = pd.DataFrame(lesion_rows, columns=list(LESION_COLUMNS))
    return df, lesions_df


def cases_from_table(path: str | Path, split: str | None = None) -> list[str]:
    """The ``case`` column of a TSV/CSV table (a splits table), in file order; only ``split``'s rows when given."""
    from brainmets.io import read_table

    table = read_table(path, what="case list")
    if "case" not in table.columns:
        raise BrainmetsError(f"{path}: no 'case' column (columns: {', '.join(map(str, table.columns))})")
    if split is not None:
        if "split" not in table.columns:
            raise BrainmetsError(f"{path}: split {split!r} asked for but the table has no 'split' column")
        table = table[table["split"].astype(str) == split]
        if table.empty:
            raise BrainmetsError(f"{path}: no case in split {split!r}")
    return [str(c) for c in table["case"]]


def evaluate_to_files(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out: str | Path,
    lesions_out: str | Path | None = None,
    cases: Iterable[str] | None = None,
    missing: str = "error",
    workers: int = 1,
    progress: bool = True,
):
    """:func:`evaluate_dirs`, then its tables written (atomically) to ``out`` and ``lesions_out``.

    What `brainmets evaluate` does, and what a prediction job does right after
    predicting (:func:`evaluate_run_split`): one writer, so both give the same bytes.
    Returns the case x region table.
    """
    from brainmets.io import write_table

    df, lesions = evaluate_dirs(pred_dir, gt_dir, cases=cases, missing=missing, workers=workers, progress=progress)
    write_table(df, out)
    if lesions_out:
        write_table(lesions, lesions_out)
    return df


def evaluate_run_split(
    run_dir: str | Path,
    split: str,
    gt_dir: str | Path,
    splits_table: str | Path,
    workers: int = 1,
    progress: bool = True,
):
    """Score ``RUN_DIR/predictions/<split>/`` on the cases of ``split`` in ``splits_table``.

    Writes ``RUN_DIR/metrics/<split>.tsv`` and ``<split>_lesions.tsv``, byte for byte what
    ``brainmets evaluate --pred-dir RUN_DIR/predictions/<split> --gt-dir GT
    --cases-from SPLITS --split <split> --out ... --lesions-out ...`` writes.
    Returns the case x region table and its path.
    """
    metrics = Path(run_dir) / "metrics"
    df = evaluate_to_files(Path(run_dir) / "predictions" / split, gt_dir, metrics / f"{split}.tsv",
                           metrics / f"{split}_lesions.tsv", cases=cases_from_table(splits_table, split),
                           workers=workers, progress=progress)
    return df, metrics / f"{split}.tsv"
