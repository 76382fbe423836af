"""`brainmets.boxes.bounding_box` against the box read off np.argwhere."""

from __future__ import annotations

import numpy as np
import pytest

from brainmets.boxes import bounding_box


def _argwhere_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    where = np.argwhere(mask)
    low = np.maximum(where.min(axis=0) - margin, 0)
    high = np.minimum(where.max(axis=0) + 1 + margin, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


@pytest.mark.parametrize("margin", [0, 1, 3])
def test_box_of_random_masks_matches_argwhere(margin):
    rng = np.random.default_rng(7)
    for _ in range(50):
        shape = tuple(rng.integers(1, 12, 3))
        mask = rng.random(shape) < rng.choice([0.002, 0.05, 0.5])
        if not mask.any():
            mask[tuple(rng.integers(0, s) for s in shape)] = True
        assert bounding_box(mask, margin) == _argwhere_box(mask, margin)


def test_empty_mask_has_no_box_and_labels_count_as_non_zero():
    assert bounding_box(np.zeros((4, 5, 6), bool)) is None
    assert bounding_box(np.zeros((4, 5, 6), np.uint8), margin=2) is None
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2, 3, 4] = 3
    labels[5, 3, 7] = 1
    assert bounding_box(labels) == (slice(2, 6), slice(3, 4), slice(4, 8))


def test_margin_is_clipped_to_the_volume():
    mask = np.zeros((5, 5, 5), bool)
    mask[0, 4, 2] = True
    assert bounding_box(mask, margin=2) == (slice(0, 3), slice(2, 5), slice(0, 5))
    assert mask[bounding_box(mask, margin=2)].sum() == 1
