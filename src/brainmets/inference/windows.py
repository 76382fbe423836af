"""Window grids: where windows go, and how many MONAI's sliding window would run.

Two grids are needed:

* the two-stage grid (:func:`window_starts`), which this package runs itself
  because the detector decides window by window;
* the single-pass count (:func:`sliding_window_count`), to state the FLOPs a
  single-pass model *would* spend on a case without running it. It follows
  MONAI's ``sliding_window_inference`` exactly (same scan interval, same
  ``dense_patch_slices``), which a test checks against a counted real run.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from brainmets.errors import BrainmetsError


def _check(patch: Sequence[int], overlap: float) -> None:
    if not 0.0 <= overlap < 1.0:
        raise BrainmetsError(f"window overlap must be in [0, 1), got {overlap}")
    if len(patch) != 3 or min(patch) < 1:
        raise BrainmetsError(f"window size must be 3 positive integers, got {list(patch)}")


def axis_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices along one axis of length ``size >= window``.

    Step ``max(1, int(window * (1 - overlap)))`` from 0; a last window flush with
    the end is added when the steps do not reach it, so every voxel is covered
    and no window leaves the volume (MONAI places windows the same way).
    """
    if size < window:
        raise BrainmetsError(f"axis of {size} voxels is smaller than the {window}-voxel window; pad first")
    step = max(1, int(window * (1 - overlap)))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def window_starts(shape: Sequence[int], patch: Sequence[int], overlap: float) -> list[tuple[int, int, int]]:
    """All window corners of a ``patch`` grid over a volume of ``shape`` (each axis >= patch), C order."""
    _check(patch, overlap)
    per_axis = [axis_starts(int(n), int(w), overlap) for n, w in zip(shape, patch)]
    return [tuple(corner) for corner in itertools.product(*per_axis)]  # type: ignore[misc]


def padded_shape(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    """``shape`` grown to at least ``patch`` on every axis (volumes smaller than a window are padded)."""
    return tuple(max(int(n), int(w)) for n, w in zip(shape, patch))


def sliding_window_count(shape: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """Number of windows ``monai.inferers.sliding_window_inference`` runs on a volume of ``shape``."""
    from monai.data.utils import dense_patch_slices

    _check(patch, overlap)
    image = padded_shape(shape, patch)
    # MONAI's scan interval: the window itself when it spans the axis, else window * (1 - overlap)
    interval = [w if w == n else max(1, int(w * (1 - overlap))) for n, w in zip(image, patch)]
    return len(dense_patch_slices(image, tuple(int(w) for w in patch), interval))
