"""HD95 as the robust Hausdorff distance of Nikolov et al.: hand-derived cases and the reference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from brainmets.evaluation.surface import hd95, mask_surface, surfel_area_table


def _volume(shape=(8, 8, 10)):
    return np.zeros(shape, bool)


def test_face_surfel_area_is_the_scaled_unit_square():
    # Code 15 sets bits 0-3, i.e. the four voxels with offset a=1 along axis 0:
    # the surface inside the cell is the plane x0 = const, a unit square scaled
    # by the two other spacings -> 2 * 3 = 6 mm^2.
    table = surfel_area_table((0.5, 2.0, 3.0))
    assert table[15] == pytest.approx(6.0)
    assert table[240] == pytest.approx(6.0)
    # A single corner voxel cuts a triangle through three edge midpoints:
    # area sqrt(3)/8 at unit spacing.
    assert surfel_area_table((1.0, 1.0, 1.0))[1] == pytest.approx(np.sqrt(3) / 8)
    assert table[0] == 0 and table[255] == 0


def test_single_voxel_has_eight_equal_surfels_at_its_corners():
    mask = _volume()
    mask[2, 3, 4] = True
    surface = mask_surface(mask, (1.0, 1.0, 1.0))
    assert sorted(map(tuple, surface.corners)) == [
        (x, y, z) for x in (2, 3) for y in (3, 4) for z in (4, 5)
    ]
    assert np.allclose(surface.areas, np.sqrt(3) / 8)


def test_hd95_two_voxels_apart_anisotropic():
    # GT voxel at z=2 and prediction voxel at z=5, spacing (1, 1, 2) mm.
    # Surfels are voxel corners: GT at corner planes z=2,3, prediction at z=5,6.
    # GT corners at z=3 are 2 planes (4 mm) from the nearest prediction corner,
    # those at z=2 are 3 planes (6 mm). Eight equal areas: cumulative area hits
    # 95 % only at the 8th surfel, so the 95th percentile is 6 mm (no
    # interpolation), and the other direction is symmetric.
    gt, pred = _volume(), _volume()
    gt[3, 3, 2] = True
    pred[3, 3, 5] = True
    assert hd95(gt, pred, (1.0, 1.0, 2.0)) == pytest.approx(6.0)
    # The same shift along axis 0 is measured with that axis' spacing: corner
    # planes x=1,2 vs x=4,5, the far GT corners 3 planes = 1.5 mm away.
    gt2, pred2 = _volume(), _volume()
    gt2[1, 3, 3] = True
    pred2[4, 3, 3] = True
    assert hd95(gt2, pred2, (0.5, 1.0, 2.0)) == pytest.approx(3 * 0.5)


def test_hd95_identical_masks_is_zero_and_empty_is_inf():
    gt = _volume()
    gt[2:5, 2:6, 3:7] = True
    assert hd95(gt, gt.copy(), (1.0, 1.0, 1.0)) == 0.0
    assert hd95(gt, _volume(), (1.0, 1.0, 1.0)) == np.inf
    assert hd95(_volume(), gt, (1.0, 1.0, 1.0)) == np.inf


def test_mask_touching_the_volume_border_is_closed_by_background():
    # A slab filling the whole volume still has surfels on the volume faces
    # (outside counts as background, as in the reference): a slab and the same
    # slab one plane thicker differ by one plane of 2 mm on one side only.
    a = np.ones((4, 4, 3), bool)
    b = np.ones((4, 4, 3), bool)
    a[:, :, 2] = False
    # b's top face (corner plane z=3) is one plane = 2 mm from a's surface
    # (its top at z=2); the sides below coincide. That face is 16 of b's
    # 128 mm^2 (top 16, bottom 16, sides 4 x 4 mm x 6 mm), more than 5 %, so
    # b->a gives 2 mm; no a surfel is farther than 2 mm from b, so HD95 = 2 mm.
    assert hd95(a, b, (1.0, 1.0, 2.0)) == pytest.approx(2.0)


def _reference_hd95(a, b, spacing):
    surface_distance = pytest.importorskip("surface_distance")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy.ndimage.filters namespace
        distances = surface_distance.compute_surface_distances(a, b, spacing)
        return surface_distance.compute_robust_hausdorff(distances, 95)


def test_hd95_agrees_with_deepmind_surface_distance_on_random_masks():
    from scipy import ndimage

    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(60):
        shape = tuple(int(s) for s in rng.integers(5, 18, 3))
        a = ndimage.binary_dilation(rng.random(shape) < 0.03, iterations=int(rng.integers(0, 3)))
        b = ndimage.binary_dilation(rng.random(shape) < 0.03, iterations=int(rng.integers(0, 3)))
        if not a.any() or not b.any():
            continue  # the reference uses np.Inf there, which numpy 2 removed
        spacing = tuple(float(np.float32(s)) for s in rng.choice([0.6, 1.0, 1.2, 2.5], 3))
        assert hd95(a, b, spacing) == pytest.approx(_reference_hd95(a, b, spacing), abs=1e-9)
        checked += 1
    assert checked > 30
