"""Geometry of the cache: RAS reorientation, crop, resampling and their inverse.

"Nearest-neighbour equivalent" is defined here, in world coordinates:

- forward: every cache voxel holds the original label of the original voxel nearest
  (in mm) to the cache voxel's centre, where the centre is ``cache_affine @ index``;
- backward: every original voxel inside the crop holds the cache label of the cache
  voxel nearest to its centre; voxels outside the crop are background;
- at ties (a centre exactly halfway between two voxels) either neighbour is accepted;
- where the two grids coincide (a cache centre on an original centre) the round trip
  returns the original label exactly.

The reference uses only the affines (``conftest.matches_nearest``), not the module's
per-axis index arithmetic.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from brainmets.data.preprocess import CROP_MARGIN, LABEL_CHANNEL, load_case, preprocess_case, to_original_grid


@pytest.mark.parametrize("kind", ["ras", "lps", "permuted", "thick"])
def test_round_trip_without_resampling_is_identical(case_factory, tmp_path, kind):
    synthetic = case_factory(kind)
    preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache")
    _, label, meta = load_case(tmp_path / "cache", synthetic.case)

    restored, affine = to_original_grid(label, meta)

    seg_file = nib.load(synthetic.paths["seg"])
    assert restored.dtype == np.uint8
    assert restored.shape == seg_file.shape
    np.testing.assert_array_equal(restored, np.asarray(seg_file.dataobj))
    np.testing.assert_array_equal(affine, seg_file.affine)
    assert meta["resampled"] is False


@pytest.mark.parametrize("kind", ["lps", "permuted"])
def test_cache_is_ras_and_matches_the_original_voxel_by_voxel(case_factory, tmp_path, ref, kind):
    synthetic = case_factory(kind)
    preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache")
    _, label, meta = load_case(tmp_path / "cache", synthetic.case)

    cache_affine = np.asarray(meta["cache_affine"])
    linear = cache_affine[:3, :3]
    # RAS: a positive diagonal direction matrix, spacing = the original voxel sizes in RAS order.
    np.testing.assert_allclose(linear, np.diag(np.diag(linear)))
    assert (np.diag(linear) > 0).all()
    np.testing.assert_allclose(sorted(np.diag(linear)), sorted(meta["original_spacing"]), rtol=1e-6)

    coords = np.linalg.solve(synthetic.affine, cache_affine @ ref.voxel_coordinates(label.shape))[:3]
    assert np.allclose(coords, np.rint(coords), atol=1e-4)  # grids coincide: no interpolation
    assert ref.matches_nearest(np.asarray(label).ravel(), synthetic.seg, coords).all()


@pytest.mark.parametrize("kind", ["ras", "lps", "permuted"])
def test_crop_keeps_every_labelled_voxel_and_is_tight(case_factory, tmp_path, kind):
    synthetic = case_factory(kind)
    preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache")
    image, label, meta = load_case(tmp_path / "cache", synthetic.case)

    original_counts = {str(v): int((synthetic.seg == v).sum()) for v in range(4)}
    assert meta["original_label_counts"] == original_counts
    cache_counts = {str(v): int((np.asarray(label) == v).sum()) for v in range(4)}
    assert {k: v for k, v in cache_counts.items() if k != "0"} == \
        {k: v for k, v in original_counts.items() if k != "0"}
    assert meta["label_counts"] == cache_counts

    # The stray labelled voxel lies outside the brain; the crop still holds it.
    world = synthetic.affine @ np.r_[synthetic.stray_label_voxel, 1.0]
    cache_index = np.rint(np.linalg.solve(np.asarray(meta["cache_affine"]), world)[:3]).astype(int)
    assert (cache_index >= 0).all() and (cache_index < label.shape).all()
    assert label[tuple(cache_index)] == synthetic.seg[synthetic.stray_label_voxel]
    assert not np.asarray(image)[(slice(None), *cache_index)].any()

    # Tight: brain-or-label spans the cache up to exactly the margin on every side.
    keep = np.asarray(image).any(axis=0) | (np.asarray(label) > 0)
    for axis in range(3):
        span = np.flatnonzero(keep.any(axis=tuple(a for a in range(3) if a != axis)))
        assert span[0] == CROP_MARGIN
        assert span[-1] == label.shape[axis] - 1 - CROP_MARGIN


@pytest.mark.parametrize(
    ("kind", "spacing", "min_coinciding"),
    [
        ("lps", (2.0, 2.0, 2.0), 0.05),  # every 2nd voxel per axis coincides
        ("thick", (1.5, 1.5, 1.5), 0.05),  # 1x1x3 mm: every 3rd in-plane voxel, every slice
        ("permuted", (2.0, 1.5, 2.5), 0.0),  # 0.9/1.1/1.3 mm: incommensurate grids
    ],
)
def test_resampled_round_trip_is_the_nearest_neighbour_equivalent(
    case_factory, tmp_path, ref, kind, spacing, min_coinciding
):
    synthetic = case_factory(kind)
    preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache", spacing=spacing)
    _, label, meta = load_case(tmp_path / "cache", synthetic.case)
    label = np.asarray(label)
    cache_affine = np.asarray(meta["cache_affine"])

    assert meta["resampled"] is True
    np.testing.assert_allclose(np.abs(np.diag(cache_affine[:3, :3])), spacing, rtol=1e-9)
    np.testing.assert_allclose(meta["spacing"], spacing)
    crop_extent = (np.array(meta["crop_stop"]) - meta["crop_start"]) * np.array(meta["ras_spacing"])
    np.testing.assert_array_equal(meta["cache_shape"], np.floor(crop_extent / spacing + 0.5))

    # Forward: each cache voxel = original label at the nearest original voxel.
    to_original = np.linalg.solve(synthetic.affine, cache_affine)
    forward_coords = (to_original @ ref.voxel_coordinates(label.shape))[:3]
    assert ref.matches_nearest(label.ravel(), synthetic.seg, forward_coords).all()

    # Backward: each original voxel = cache label at the nearest cache voxel (inside the crop).
    restored, affine = to_original_grid(label, meta)
    np.testing.assert_array_equal(affine, synthetic.affine)
    assert restored.shape == synthetic.seg.shape
    cache_coords = np.linalg.solve(cache_affine, synthetic.affine @ ref.voxel_coordinates(restored.shape))[:3]
    crop_coords = np.rint(cache_coords * np.array(meta["cache_to_crop_scale"])[:, None])
    crop_shape = (np.array(meta["crop_stop"]) - meta["crop_start"])[:, None]
    in_crop = np.all((crop_coords >= 0) & (crop_coords < crop_shape), axis=0)
    clamped = np.clip(cache_coords, 0, np.array(label.shape)[:, None] - 1)
    backward_ok = ref.matches_nearest(restored.ravel(), label, clamped)
    assert backward_ok[in_crop].all()
    assert (restored.ravel()[~in_crop] == 0).all()

    # Where the grids coincide the round trip is exact; elsewhere it stays close.
    coincide = in_crop & np.all(np.abs(cache_coords - np.rint(cache_coords)) < 1e-6, axis=0)
    assert coincide.sum() >= min_coinciding * restored.size
    np.testing.assert_array_equal(restored.ravel()[coincide], synthetic.seg.ravel()[coincide])
    tumour, restored_tumour = synthetic.seg > 0, restored > 0
    dice = 2 * (tumour & restored_tumour).sum() / (tumour.sum() + restored_tumour.sum())
    assert dice > 0.8


def test_resampled_images_are_linear_between_original_voxels(case_factory, tmp_path, ref):
    """On 1 -> 2 mm every cache centre falls on an original centre: linear = exact sample."""
    synthetic = case_factory("lps")
    preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache", spacing=(2.0, 2.0, 2.0))
    image, label, meta = load_case(tmp_path / "cache", synthetic.case)
    cache_affine = np.asarray(meta["cache_affine"])
    coords = np.linalg.solve(synthetic.affine, cache_affine @ ref.voxel_coordinates(label.shape))[:3]
    index = tuple(np.rint(coords).astype(int))
    brain = synthetic.brain[index].reshape(label.shape)
    for channel, modality in enumerate(meta["modalities"]):
        stats = meta["normalization"][modality]
        expected = ((synthetic.images[modality][index].reshape(label.shape) - stats["mean"]) / stats["std"])
        np.testing.assert_allclose(np.asarray(image[channel])[brain], expected[brain], atol=1e-4)
        assert not np.asarray(image[channel])[~brain].any()
    assert meta["label_channel"] == LABEL_CHANNEL
