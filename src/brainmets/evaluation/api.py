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
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from brainmets.constants import LABELS, REGIONS, SEG_SUFFIX
from brainmets.errors import BrainmetsError, CaseError
from brainmets.evaluation.lesionwise import evaluate_region
from brainmets.evaluation.surface import as_spacing

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
#: Affines may differ by this much (mm) after NIfTI float32 round trips.
AFFINE_ATOL = 1e-4
_MAX_LABEL = max(LABELS)


def _as_label_map(array: np.ndarray, case: str, what: str, file: str | Path | None) -> np.ndarray:
    """Return ``array`` as uint8 labels after checking they are integers in 0..3."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise CaseError(case, file, f"{what} must be a 3-D label map, got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise CaseError(case, file, f"{what} has dtype {array.dtype}; expected integer labels 0-{_MAX_LABEL}")
    if array.size == 0:
        raise CaseError(case, file, f"{what} is empty (shape {array.shape})")
    # Two reductions settle the usual case; np.unique (a sort) only to word the error.
    in_range = array.min() >= 0 and array.max() <= _MAX_LABEL
    if in_range and (array.dtype.kind != "f" or np.array_equal(array, np.round(array))):
        return array if array.dtype == np.uint8 else array.astype(np.uint8)
    values = np.unique(array)
    bad = values[(values < 0) | (values > _MAX_LABEL) | (values != np.round(values))]
    shown = ", ".join(f"{v:g}" for v in bad[:5])
    raise CaseError(
        case, file, f"{what} contains label value(s) {shown}; expected only 0-{_MAX_LABEL} "
        "(0 background, 1 NETC, 2 SNFH, 3 ET)",
    )


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
    from brainmets.evaluation.surface import bounding_box

    box = bounding_box((gt > 0) | (pred > 0))
    if box is None:
        return None
    lo, hi = box
    return tuple(slice(max(a - 1, 0), min(b + 1, n)) for a, b, n in zip(lo, hi, gt.shape))


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
    import nibabel as nib

    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except FileNotFoundError as exc:
        raise CaseError(case, path, f"{what} file not found") from exc
    except Exception as exc:  # nibabel raises several types for corrupt files
        raise CaseError(case, path, f"cannot read {what} as NIfTI: {exc}") from exc
    return image, data


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
        if pred.shape != gt.shape:
            raise CaseError(
                case, pred_path, f"prediction shape {pred.shape} differs from ground truth shape {gt.shape} "
                f"of {gt_path}", "predictions must be on the ground-truth grid",
            )
        if not np.allclose(pred_image.affine, gt_image.affine, atol=AFFINE_ATOL):
            raise CaseError(
                case, pred_path, f"prediction affine differs from the ground truth's ({gt_path}):\n"
                f"{np.array2string(pred_image.affine, precision=4)}\nvs\n"
                f"{np.array2string(gt_image.affine, precision=4)}",
                "predictions must be on the ground-truth grid",
            )
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


def _evaluate_job(job: tuple[str, str | None, str]) -> tuple[str, object, object]:
    """Worker entry: returns ("ok", rows, lesions) or ("error", message, None).

    Errors travel as text because exception classes with custom constructors
    (CaseError) do not survive pickling between processes.
    """
    case, pred_path, gt_path = job
    try:
        rows, lesions = evaluate_files(pred_path, gt_path, case=case)
    except BrainmetsError as exc:
        return "error", str(exc), None
    return "ok", rows, lesions


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
    from tqdm.auto import tqdm

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

    def collect(outcome) -> None:
        status, first, second = outcome
        if status == "error":
            raise BrainmetsError(first)
        rows.extend(first)
        lesion_rows.extend(second)
        bar.update()

    bar = tqdm(total=len(jobs), desc="evaluate", unit="case", disable=not progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                collect(_evaluate_job(job))
        else:
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)))
            try:
                for outcome in pool.map(_evaluate_job, jobs, chunksize=1):
                    collect(outcome)
            finally:
                # On the first error, drop the cases not started yet.
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
    df = pd.DataFrame(rows, columns=list(CASE_COLUMNS))
    lesions_df = pd.DataFrame(lesion_rows, columns=list(LESION_COLUMNS))
    return df, lesions_df
