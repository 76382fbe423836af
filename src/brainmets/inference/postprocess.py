"""Postprocessing for lesion-wise metrics: drop connected components below a minimum volume per region.

BraTS-MET's lesion-wise score counts every predicted component that touches no
ground-truth lesion as a false positive worth Dice 0, so a speck of a few
voxels costs as much as a missed lesion. Challenge entries therefore remove
small components; the paper does not. Here the minimum volume (mm^3) of each
nested region is chosen on the **validation** split only
(:func:`tune_min_volumes`) and written to a decision file
(``postprocessing.json``) that the model card records and ``segment`` applies.

Removal keeps a valid BraTS label map and the nesting WT ⊇ TC ⊇ ET. Regions
are visited from the outside in, each on the map left by the previous one:

* a WT component (26-connected, labels 1-3) below its minimum becomes background;
* a TC component (labels 1 and 3) below its minimum stays tumour: it becomes SNFH (2);
* an ET component (label 3) below its minimum stays core: it becomes NETC (1).

Volumes are voxel counts times the voxel volume (the header spacing, as the
evaluator measures them). A minimum of 0 leaves the region untouched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainmets.constants import REGIONS, TRAIN_REGIONS
from brainmets.errors import BrainmetsError
from brainmets.io import read_json, write_json

log = logging.getLogger(__name__)

DECISION_FORMAT = "brainmets-postprocessing/1"
DECISION_NAME = "postprocessing.json"
#: The label a removed component of each region takes: the next region outwards.
REMOVED_LABEL: dict[str, int] = {"WT": 0, "TC": 2, "ET": 1}
#: The score the minimum volumes maximise: the mean over cases of the region's lesion-wise Dice.
TUNING_METRIC = "lesion_dice"


def remove_small_components(
    labels: np.ndarray, min_volume_mm3: Mapping[str, float], spacing: Sequence[float]
) -> np.ndarray:
    """A copy of ``labels`` without the components smaller than each region's minimum (module docstring)."""
    import cc3d

    unknown = sorted(set(min_volume_mm3) - set(TRAIN_REGIONS))
    if unknown:
        raise BrainmetsError(f"postprocessing: unknown region(s) {unknown}; expected some of {', '.join(TRAIN_REGIONS)}")
    voxel_mm3 = float(np.prod([float(s) for s in spacing]))
    out = np.array(labels, dtype=np.uint8, copy=True)
    for region in TRAIN_REGIONS:
        minimum = float(min_volume_mm3.get(region, 0.0))
        if minimum <= 0:
            continue
        mask = np.isin(out, REGIONS[region])
        components = cc3d.connected_components(mask, connectivity=26)
        volumes = np.bincount(components.ravel()) * voxel_mm3
        small = np.flatnonzero(volumes < minimum)
        small = small[small > 0]
        if small.size:
            out[np.isin(components, small)] = REMOVED_LABEL[region]
    return out


# --------------------------------------------------------------------------- the decision


def check_decision(decision: Any, source: str | Path) -> dict[str, Any]:
    """A postprocessing decision checked for what :func:`remove_small_components` needs."""
    if not isinstance(decision, dict) or decision.get("format") != DECISION_FORMAT:
        raise BrainmetsError(f"{source} is not a postprocessing decision (expected format {DECISION_FORMAT!r})")
    volumes = decision.get("min_volume_mm3")
    if not isinstance(volumes, dict) or set(volumes) != set(TRAIN_REGIONS) or not all(
        isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in volumes.values()
    ):
        raise BrainmetsError(
            f"{source}: min_volume_mm3 must give a volume >= 0 (mm^3) for each of {', '.join(TRAIN_REGIONS)}, "
            f"got {volumes!r}"
        )
    return decision


def read_decision(path: str | Path) -> dict[str, Any]:
    return check_decision(read_json(path), path)


def tune_min_volumes(
    predictions: Mapping[str, np.ndarray],
    ground_truth: Mapping[str, np.ndarray],
    spacings: Mapping[str, Sequence[float]],
    grid: Sequence[float],
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Per region, the minimum volume of ``grid`` maximising the mean lesion-wise Dice over the cases.

    Each region is searched on its own with the others untouched (ties go to
    the smaller volume: the least change). Returns ``(chosen, scores)`` with
    ``scores[region][str(volume)]`` the mean score of each candidate.
    """
    from brainmets.evaluation.api import evaluate_case

    if not predictions:
        raise BrainmetsError("postprocessing tuning: no cases")
    grid = sorted({float(v) for v in grid} | {0.0})
    chosen, scores = {}, {}
    for region in TRAIN_REGIONS:
        scores[region] = {}
        for minimum in grid:
            values = []
            for case, pred in predictions.items():
                cleaned = remove_small_components(pred, {region: minimum}, spacings[case])
                rows, _ = evaluate_case(cleaned, ground_truth[case], spacings[case], case=case, regions=[region])
                values.append(rows[0][TUNING_METRIC])
            scores[region][f"{minimum:g}"] = float(np.mean(values))
        best = max(scores[region].values())
        chosen[region] = next(v for v in grid if scores[region][f"{v:g}"] == best)
    return chosen, scores


def tune_on_split(
    pred_dir: str | Path,
    gt_dir: str | Path,
    cases: Sequence[str],
    split: str,
    grid: Sequence[float],
    out: str | Path,
) -> dict[str, Any]:
    """Choose the minimum volumes on ``cases`` of ``split`` from their predictions; write the decision to ``out``.

    Only the files of ``cases`` are read, so predictions of other splits cannot
    move the decision.
    """
    from brainmets.evaluation.api import PRED_SUFFIX, find_gt_cases
    from brainmets.nifti import read_image, read_voxels

    gt_files = find_gt_cases(gt_dir)
    predictions, truths, spacings = {}, {}, {}
    for case in cases:
        pred_path = Path(pred_dir) / f"{case}{PRED_SUFFIX}"
        if not pred_path.is_file():
            raise BrainmetsError(f"{case}: prediction missing (expected {pred_path})")
        if case not in gt_files:
            raise BrainmetsError(f"{case}: no ground truth in {gt_dir}")
        image = read_image(case, pred_path, "prediction")
        predictions[case] = np.asarray(read_voxels(case, pred_path, image))
        truths[case] = np.asarray(read_voxels(case, gt_files[case], read_image(case, gt_files[case], "ground truth")))
        spacings[case] = tuple(float(z) for z in image.header.get_zooms()[:3])
    chosen, scores = tune_min_volumes(predictions, truths, spacings, grid)
    decision = {
        "format": DECISION_FORMAT,
        "decision": "minimum connected-component volume per region (smaller components removed)",
        "chosen_on": split,
        "split": split,
        "n_cases": len(cases),
        "predictions": str(pred_dir),
        "metric": f"mean over {split} cases of the region's {TUNING_METRIC} (brainmets.evaluation)",
        "search": "each region on its own over the grid, the others untouched; ties to the smaller volume",
        "grid_mm3": sorted({float(v) for v in grid} | {0.0}),
        "min_volume_mm3": chosen,
        "scores": scores,
        "removed_label": dict(REMOVED_LABEL),
        "connectivity": 26,
    }
    write_json(out, decision)
    log.info("postprocessing chosen on %s (%d cases): %s", split, len(cases), chosen)
    return decision


def apply_to_dir(decision: Mapping[str, Any], in_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Postprocess every ``<case>.nii.gz`` of ``in_dir`` into ``out_dir`` (same grid, header and name)."""
    import nibabel as nib

    from brainmets.evaluation.api import find_predictions
    from brainmets.io import atomic_path
    from brainmets.nifti import read_image, read_voxels

    written = []
    for case, path in find_predictions(in_dir).items():
        image = read_image(case, path, "prediction")
        labels = np.asarray(read_voxels(case, path, image))
        cleaned = remove_small_components(labels, decision["min_volume_mm3"], image.header.get_zooms()[:3])
        header = image.header.copy()
        header.set_data_dtype(np.uint8)
        target = Path(out_dir) / path.name
        with atomic_path(target) as tmp:
            nib.save(nib.Nifti1Image(cleaned, image.affine, header), str(tmp))
        written.append(target)
    return written


__all__ = [
    "DECISION_FORMAT",
    "DECISION_NAME",
    "REMOVED_LABEL",
    "apply_to_dir",
    "check_decision",
    "read_decision",
    "remove_small_components",
    "tune_min_volumes",
    "tune_on_split",
]
