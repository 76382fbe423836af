"""One patient's normal anatomy: tissue fractions of every brain voxel on the output grid.

The warped template is sampled only where the brain can be. A first pass on a
coarse grid (about :data:`COARSE_MM` apart, at least every other voxel) finds the cells the brain reaches;
the full-resolution pass samples the voxels of those cells (plus one cell of
margin), about a quarter of a 240 x 240 x 155 field of view. Voxels whose
interpolated brain mask is at least 0.5 are the patient's brain; everything
else stays zero, as in skull-stripped BraTS images.

The coarse pass is kept: lesion placement uses its tissue maps and its depth
below the brain surface (:class:`CoarseAnatomy`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainmets.boxes import bounding_box
from brainmets.data.synthetic.geometry import SmoothField, Warp
from brainmets.data.synthetic.template import Template, sample_template

#: Approximate distance (mm) between points of the coarse pass.
COARSE_MM = 4.0
#: A voxel is brain when its interpolated template mask reaches this.
BRAIN_LEVEL = 0.5
TISSUES: tuple[str, ...] = ("gm", "wm", "csf")


@dataclass
class CoarseAnatomy:
    """Tissue maps on a grid of every ``stride``-th voxel (``axes[a]`` are the voxel indices)."""

    stride: int
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray  # bool
    depth_mm: np.ndarray  # distance to the nearest non-brain coarse point


@dataclass
class Anatomy:
    """Brain voxels of one patient and their tissue fractions.

    ``index`` are the flat (C-order) indices of the brain voxels in ``shape``,
    ``ijk`` their voxel coordinates (3, N), ``fractions`` (N, 3) their grey
    matter, white matter and CSF fractions (rows sum to 1).
    """

    shape: tuple[int, int, int]
    index: np.ndarray
    ijk: np.ndarray
    fractions: np.ndarray
    coarse: CoarseAnatomy

    def dense(self, values: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Scatter per-brain-voxel ``values`` into a zero volume of ``shape``."""
        out = np.zeros(int(np.prod(self.shape)), dtype=dtype)
        out[self.index] = values
        return out.reshape(self.shape)

    def brain_mask(self) -> np.ndarray:
        return self.dense(np.ones(len(self.index), dtype=bool), dtype=bool)

    def evaluate(self, field: SmoothField) -> np.ndarray:
        """Values (float32, N) of a smooth field at the brain voxels, via its box evaluation."""
        low = self.ijk.min(axis=1)
        high = self.ijk.max(axis=1) + 1
        box = field.on_box(*(np.arange(a, b) for a, b in zip(low, high)))
        local = np.ravel_multi_index(tuple(self.ijk - low[:, None]), box.shape)
        return box.reshape(-1)[local]


def _coarse_pass(template: Template, warp: Warp) -> tuple[CoarseAnatomy, np.ndarray]:
    """Sample the warped template every ``stride`` voxels; return it and the voxel mask to refine."""
    shape = warp.shape
    # at least every other voxel, or the coarse pass would cost as much as the fine one
    stride = max(2, int(round(COARSE_MM / warp.spacing)))
    # points at 0, stride, 2 stride, ... up to one past the last voxel (clamped), so
    # that every voxel lies in a cell with sampled corners
    axes = tuple(np.minimum(np.arange(0, n + stride, stride), n - 1) for n in shape)
    coords = warp.template_coords_on_box(*axes)
    values = sample_template(template, coords.reshape(3, -1)).reshape(*coords.shape[1:], 3)
    brain = values[..., 2] >= BRAIN_LEVEL

    touched = values[..., 2] > 0.0
    cells = np.zeros(tuple(len(a) - 1 for a in axes), dtype=bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                cells |= touched[dx : dx + cells.shape[0], dy : dy + cells.shape[1], dz : dz + cells.shape[2]]
    cells = ndimage.binary_dilation(cells, structure=np.ones((3, 3, 3), dtype=bool))
    voxels = cells.repeat(stride, 0).repeat(stride, 1).repeat(stride, 2)[: shape[0], : shape[1], : shape[2]]

    depth = ndimage.distance_transform_edt(brain, sampling=stride * warp.spacing)
    coarse = CoarseAnatomy(
        stride=stride,
        axes=axes,  # type: ignore[arg-type]
        gm=values[..., 0],
        wm=values[..., 1],
        brain=brain,
        depth_mm=depth.astype(np.float32),
    )
    return coarse, voxels


def sample_anatomy(template: Template, warp: Warp) -> Anatomy:
    """The patient's brain voxels and tissue fractions on the output grid."""
    coarse, candidates = _coarse_pass(template, warp)
    box = bounding_box(candidates)
    if box is None:  # random_warp keeps the brain in the field of view: this is a bug, not bad input
        raise RuntimeError(f"the warped brain misses the {warp.shape} field of view")
    local = candidates[box]
    local_index = np.flatnonzero(local)
    coords = warp.template_coords_on_box(*(np.arange(s.start, s.stop) for s in box)).reshape(3, -1)[:, local_index]
    values = sample_template(template, coords)
    inside = values[:, 2] >= BRAIN_LEVEL
    values = values[inside]
    i, j, k = np.unravel_index(local_index[inside], local.shape)
    i, j, k = i + box[0].start, j + box[1].start, k + box[2].start

    # The grey/white maps are probabilities of the whole voxel; whatever part of
    # the brain mask they leave is CSF (ventricles, sulci, cisterns).
    total = np.maximum(values[:, 2], values[:, 0] + values[:, 1])
    fractions = np.empty((len(i), 3), dtype=np.float32)
    np.divide(values[:, 0], total, out=fractions[:, 0])
    np.divide(values[:, 1], total, out=fractions[:, 1])
    np.subtract(1.0, fractions[:, 0] + fractions[:, 1], out=fractions[:, 2])
    np.clip(fractions[:, 2], 0.0, 1.0, out=fractions[:, 2])

    shape = warp.shape
    index = (i * shape[1] + j) * shape[2] + k
    return Anatomy(
        shape=shape,
        index=index,
        ijk=np.stack([i, j, k]).astype(np.int32),
        fractions=fractions,
        coarse=coarse,
    )
