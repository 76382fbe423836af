"""Legacy and BraTS 2023 lesion-wise Dice / HD95 of one region, with BraTS-MET settings.

The rules (BraTS 2023 lesion-wise evaluation, as its official code applies them):

* Lesions are 26-connected components. Ground-truth components are merged
  when their dilations touch: the GT mask is dilated once with the 3-D
  structuring element of connectivity 2 (the 18-neighbourhood), and the GT
  voxels inside one 26-connected component of that dilation form one lesion,
  numbered like that component.
* Every predicted component touching a lesion's dilation is a true positive
  for it (one component may serve several lesions); the lesion's Dice and HD95
  compare the lesion with the union of those components only. A lesion with
  none is missed (Dice 0, HD95 374).
* Predicted components touching no lesion's dilation are false positives
  (Dice 0, HD95 374 each). *All* lesions count here, including the small ones
  the score leaves out, so a component on a tiny GT speck is neither TP nor FP.
* Lesions of volume <= 2 mm^3 (header spacing) are left out of the score and of
  the TP/FN counts.
* Score = sum over kept lesions / (kept lesions + false positives); with
  nothing to score, Dice 1 and HD95 0.
* Legacy metrics compare the whole region; both empty gives Dice 1, HD95 0;
  one side empty gives HD95 374.

How it stays fast without changing a number:
* The dilation of one merged lesion is exactly its component of the dilated GT
  (dilating a union is the union of the dilations, and each voxel's
  neighbourhood is connected), so one dilation per region serves every lesion.
* Two 26-components never share a 2x2x2 neighbourhood, so the surface of a
  union of components is the union of their surfaces: surfels are extracted
  once per region and side, split by component, and reused for the legacy and
  every lesion-wise HD95.
* Voxel overlaps come from one pass over (GT component, predicted component)
  label pairs; labelling runs on the bounding boxes of the masks only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import Iterable

import numpy as np

from brainmets.boxes import bounding_box
from brainmets.evaluation.surface import (
    HD95_EMPTY_PENALTY,
    Surface,
    robust_hausdorff,
    surface_codes,
    surfel_area_table,
)

#: BraTS-MET settings of the official lesion-wise code.
DILATION_ITERATIONS: int = 1
LESION_VOLUME_THRESHOLD_MM3: float = 2.0


@dataclass
class LesionResult:
    """One scored object: a (merged) GT lesion, or a false-positive predicted component."""

    lesion_id: int
    kind: str  # "gt" or "fp"
    volume: float  # mm^3 of the GT lesion (kind gt) or of the predicted component (kind fp)
    counted: bool  # GT lesion above the volume threshold; every FP counts
    detected: bool  # GT lesion touched by at least one predicted component; False for FPs
    dice: float
    hd95: float
    matched_components: int  # predicted components matched to this GT lesion (0 for FPs)


@dataclass
class RegionResult:
    legacy_dice: float
    legacy_hd95: float
    lesion_dice: float
    lesion_hd95: float
    num_tp: int
    num_fp: int
    num_fn: int
    gt_volume: float
    pred_volume: float
    lesions: list[LesionResult] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "legacy_dice": self.legacy_dice,
            "legacy_hd95": self.legacy_hd95,
            "lesion_dice": self.lesion_dice,
            "lesion_hd95": self.lesion_hd95,
            "num_tp": self.num_tp,
            "num_fp": self.num_fp,
            "num_fn": self.num_fn,
            "gt_volume": self.gt_volume,
            "pred_volume": self.pred_volume,
        }


def volume_mm3(n_voxels: int, spacing: tuple[float, float, float]) -> float:
    """Voxel count times voxel volume, multiplied in the reference's order."""
    return float(n_voxels) * spacing[0] * spacing[1] * spacing[2]


def _finite_hd(value: float) -> float:
    return HD95_EMPTY_PENALTY if np.isinf(value) else float(value)


def _dice(intersection: int, size_a: int, size_b: int) -> float:
    return 2.0 * intersection / (size_a + size_b)


def _dilate_18(mask: np.ndarray) -> np.ndarray:
    """One binary dilation with the 18-neighbourhood; nothing outside the array.

    The 18-neighbourhood (3x3x3 cube minus its 8 corners) is the union of the
    three axis-plane 3x3 squares, and each square is two 1-D dilations, so this
    is a dozen boolean ORs rather than a generic morphology call.
    """

    def grow(x: np.ndarray, axis: int) -> np.ndarray:
        out = x.copy()
        lead = [slice(None)] * 3
        trail = [slice(None)] * 3
        lead[axis], trail[axis] = slice(1, None), slice(None, -1)
        out[tuple(lead)] |= x[tuple(trail)]
        out[tuple(trail)] |= x[tuple(lead)]
        return out

    along0, along1 = grow(mask, 0), grow(mask, 1)
    return grow(along0, 1) | grow(along0, 2) | grow(along1, 2)


def _label26(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components (cc3d, raster-order labels) of a boolean array.

    cc3d 4.1 underestimates its union-find size on line-shaped arrays (two
    axes of length 1) and fails; a one-voxel zero margin avoids it and changes
    neither the components nor their order.
    """
    import cc3d

    if min(mask.shape) >= 3:
        return cc3d.connected_components(mask, connectivity=26, return_N=True)
    labels, count = cc3d.connected_components(np.pad(mask, 1), connectivity=26, return_N=True)
    return np.ascontiguousarray(labels[1:-1, 1:-1, 1:-1]), count


class _Components:
    """26-connected components of a mask, labelled on a sub-box of the evaluated array.

    Also holds each component's surfels: two different 26-components never
    share a 2x2x2 neighbourhood, so the surface of any union of components is
    the concatenation of their surfaces. Surfels are extracted once for the
    box and split by component.
    """

    def __init__(self, mask: np.ndarray, box: tuple[slice, ...] | None, spacing: tuple[float, float, float]):
        self.offset = np.zeros(3, np.int64) if box is None else np.array([s.start for s in box], np.int64)
        if box is None:
            self.labels, self.count = np.zeros((0, 0, 0), np.uint32), 0
            self.voxels = np.zeros(1, np.int64)
            self.surfaces: list[Surface] = []
            return
        self.labels, self.count = _label26(mask[box])
        self.voxels = np.bincount(self.labels.reshape(-1), minlength=self.count + 1).astype(np.int64)
        # Surfels of the whole box at once; each belongs to the one component
        # present in its 2x2x2 neighbourhood (the largest label there).
        corners, codes = surface_codes(self.labels > 0)
        padded = np.pad(self.labels, 1)
        owner = np.zeros(len(corners), self.labels.dtype)
        for a in (0, 1):
            for b in (0, 1):
                for c in (0, 1):
                    np.maximum(owner, padded[corners[:, 0] + a, corners[:, 1] + b, corners[:, 2] + c], out=owner)
        areas = surfel_area_table(spacing)[codes]
        corners += self.offset
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(self.count + 2))
        self.surfaces = [
            Surface(corners[order[bounds[k] : bounds[k + 1]]], areas[order[bounds[k] : bounds[k + 1]]])
            for k in range(self.count + 1)
        ]

    def surface(self, labels: Iterable[int]) -> Surface:
        parts = [self.surfaces[int(label)] for label in labels]
        if not parts:
            return Surface(np.zeros((0, 3), np.int64), np.zeros(0))
        return Surface(np.concatenate([p.corners for p in parts]), np.concatenate([p.areas for p in parts]))


def _pred_pairs(pred_labels, pred_box, gt_box, gt_labelling: list[np.ndarray]) -> list[np.ndarray]:
    """For every predicted voxel inside the GT box: its component and each GT labelling there."""
    lo = [max(a.start, b.start) for a, b in zip(pred_box, gt_box)]
    hi = [min(a.stop, b.stop) for a, b in zip(pred_box, gt_box)]
    if any(h <= l for l, h in zip(lo, hi)):
        return [np.zeros(0, np.int64) for _ in range(len(gt_labelling) + 1)]
    pred_sub = pred_labels[tuple(slice(l - s.start, h - s.start) for l, h, s in zip(lo, hi, pred_box))]
    inside = pred_sub > 0
    gt_window = tuple(slice(l - s.start, h - s.start) for l, h, s in zip(lo, hi, gt_box))
    return [pred_sub[inside].astype(np.int64)] + [g[gt_window][inside].astype(np.int64) for g in gt_labelling]


def evaluate_region(
    gt: np.ndarray,
    pred: np.ndarray,
    spacing: tuple[float, float, float],
    volume_threshold: float = LESION_VOLUME_THRESHOLD_MM3,
) -> RegionResult:
    """Legacy and lesion-wise metrics of one binary region.

    ``gt`` and ``pred`` are boolean arrays of one shape. They may be a crop of the
    full volume provided every crop face is either a volume face or at least one
    voxel away from any GT voxel (the dilation must not be cut short).
    """

    gt = np.ascontiguousarray(gt, dtype=bool)
    pred = np.ascontiguousarray(pred, dtype=bool)
    n_gt = int(np.count_nonzero(gt))
    n_pred = int(np.count_nonzero(pred))
    gt_volume, pred_volume = volume_mm3(n_gt, spacing), volume_mm3(n_pred, spacing)
    if n_gt == 0 and n_pred == 0:
        return RegionResult(1.0, 0.0, 1.0, 0.0, 0, 0, 0, gt_volume, pred_volume)

    # GT box grown by the dilation reach; clipped at the array, which is where
    # the official full-volume dilation is clipped too (see the docstring).
    gt_box = bounding_box(gt, margin=DILATION_ITERATIONS)
    pred_box = bounding_box(pred)
    gt_parts = _Components(gt, gt_box, spacing)
    pred_parts = _Components(pred, pred_box, spacing)

    if gt_box is None or pred_box is None:
        lesion_labels, n_lesions = None, 0
        pred_at, gt_at, lesion_at = (np.zeros(0, np.int64),) * 3
    else:
        lesion_labels, n_lesions = _label26(_dilate_18(gt[gt_box]))
        pred_at, gt_at, lesion_at = _pred_pairs(pred_parts.labels, pred_box, gt_box, [gt_parts.labels, lesion_labels])
    legacy_dice = _dice(int(np.count_nonzero(gt_at)), n_gt, n_pred)
    legacy_hd95 = _finite_hd(
        robust_hausdorff(gt_parts.surface(range(1, gt_parts.count + 1)),
                         pred_parts.surface(range(1, pred_parts.count + 1)), spacing)
    )

    lesions: list[LesionResult] = []
    matched_any = np.zeros(pred_parts.count + 1, bool)
    if n_gt:
        if lesion_labels is None:
            lesion_labels, n_lesions = _label26(_dilate_18(gt[gt_box]))
        # GT component -> merged lesion (the dilated component containing it).
        on_gt = gt_parts.labels > 0
        keys = np.unique(gt_parts.labels[on_gt].astype(np.int64) * (n_lesions + 1) + lesion_labels[on_gt])
        component_lesion = np.zeros(gt_parts.count + 1, np.int64)
        component_lesion[keys // (n_lesions + 1)] = keys % (n_lesions + 1)
        # Predicted components touching each lesion's dilation.
        touching = np.unique((lesion_at * (pred_parts.count + 1) + pred_at)[lesion_at > 0])
        touch_lesion, touch_component = np.divmod(touching, pred_parts.count + 1)
        matched_any[touch_component] = True
        # Voxel overlap of each lesion with the predicted mask: any overlapping
        # component touches the lesion, so this is the overlap with its matches.
        lesion_overlap = np.bincount(component_lesion[gt_at[gt_at > 0]], minlength=n_lesions + 1)
        lesion_voxels = np.bincount(component_lesion[1:], weights=gt_parts.voxels[1:], minlength=n_lesions + 1)
        members = [[] for _ in range(n_lesions + 1)]
        for component in range(1, gt_parts.count + 1):
            members[component_lesion[component]].append(component)
        for lesion_id in range(1, n_lesions + 1):
            components = touch_component[touch_lesion == lesion_id]
            n_lesion = int(lesion_voxels[lesion_id])
            volume = volume_mm3(n_lesion, spacing)
            counted = volume > volume_threshold
            if len(components) == 0:
                lesions.append(LesionResult(lesion_id, "gt", volume, counted, False, 0.0, HD95_EMPTY_PENALTY, 0))
                continue
            dice = _dice(int(lesion_overlap[lesion_id]), n_lesion, int(pred_parts.voxels[components].sum()))
            hd = robust_hausdorff(gt_parts.surface(members[lesion_id]), pred_parts.surface(components), spacing)
            lesions.append(LesionResult(lesion_id, "gt", volume, counted, True, dice, _finite_hd(hd), len(components)))

    false_positives = np.flatnonzero(~matched_any[1:]) + 1
    for fp_id, component in enumerate(false_positives, start=1):
        volume = volume_mm3(int(pred_parts.voxels[component]), spacing)
        lesions.append(LesionResult(fp_id, "fp", volume, True, False, 0.0, HD95_EMPTY_PENALTY, 0))

    kept = [les for les in lesions if les.kind == "gt" and les.counted]
    n_fp = len(false_positives)
    denominator = len(kept) + n_fp
    if denominator == 0:
        lesion_dice, lesion_hd95 = 1.0, 0.0
    else:
        lesion_dice = float(np.sum([les.dice for les in kept])) / denominator
        lesion_hd95 = (float(np.sum([les.hd95 for les in kept])) + n_fp * HD95_EMPTY_PENALTY) / denominator
    num_tp = sum(les.detected for les in kept)
    return RegionResult(
        legacy_dice=legacy_dice,
        legacy_hd95=legacy_hd95,
        lesion_dice=lesion_dice,
        lesion_hd95=lesion_hd95,
        num_tp=num_tp,
        num_fp=n_fp,
        num_fn=len(kept) - num_tp,
        gt_volume=gt_volume,
        pred_volume=pred_volume,
        lesions=lesions,
    )
