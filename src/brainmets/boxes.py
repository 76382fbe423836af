"""The bounding box of a 3-D mask: where the brain, the tumour or a lesion is.

Every crop to "where something is" (the preprocessing crop, the evaluation's
case and lesion boxes, lesion statistics, the synthetic brain) takes its box
from :func:`bounding_box`.
"""

from __future__ import annotations

import numpy as np


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice, slice] | None:
    """Smallest box holding every non-zero voxel of a 3-D array, or None when there is none.

    The box is grown by ``margin`` voxels on each side and clipped to the array,
    so ``mask[box]`` is always valid; ``box[a].start`` / ``.stop`` are the
    half-open limits along axis ``a``.
    """
    # Two cheap reductions (over the last, contiguous axis, then over the first) and a third
    # only over the rows that hold something: ~1 pass over the volume instead of 3.
    plane = np.any(mask, axis=2)
    rows = np.flatnonzero(np.any(plane, axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.any(plane, axis=0))
    depth = np.flatnonzero(np.logical_or.reduce(mask[rows[0] : rows[-1] + 1], axis=0).any(axis=0))
    lo = (int(rows[0]), int(cols[0]), int(depth[0]))
    hi = (int(rows[-1]) + 1, int(cols[-1]) + 1, int(depth[-1]) + 1)
    return tuple(  # type: ignore[return-value]
        slice(max(a - margin, 0), min(b + margin, n)) for a, b, n in zip(lo, hi, mask.shape)
    )
