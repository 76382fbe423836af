"""`brainmets.nifti`: reading real NIfTI files, the one affine tolerance, the BraTS-MET label check."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainmets.errors import CaseError
from brainmets.nifti import (
    AFFINE_TOLERANCE,
    Grid,
    check_finite,
    check_labels,
    check_same_grid,
    grid_of,
    read_image,
    read_voxels,
)

CASE = "BraTS-MET-00001-000"
SHAPE = (6, 5, 4)
#: BraTS/SRI24-like: LPS axes, origin far from zero, so absolute and relative tolerances differ.
AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1, 0, 239], [0, 0, 1, 0], [0, 0, 0, 1]])


def _grid(name: str, affine: np.ndarray, shape=SHAPE) -> Grid:
    return Grid(Path(name), shape, np.asarray(affine, dtype=np.float64))


def _shifted(entry: tuple[int, int], by: float) -> np.ndarray:
    affine = AFFINE.copy()
    affine[entry] += by
    return affine


# --------------------------------------------------------------------------- grid


def test_affine_tolerance_accepts_at_the_boundary_and_refuses_past_it():
    reference = _grid("seg.nii.gz", AFFINE)
    # Entries that are 0 in AFFINE: the shift is represented exactly, so this is the boundary itself.
    check_same_grid(CASE, _grid("t1n.nii.gz", _shifted((0, 3), AFFINE_TOLERANCE)), reference)
    check_same_grid(CASE, _grid("t1n.nii.gz", _shifted((0, 1), -AFFINE_TOLERANCE)), reference)
    past = np.nextafter(AFFINE_TOLERANCE, 1.0)
    with pytest.raises(CaseError) as info:
        check_same_grid(CASE, _grid("t1n.nii.gz", _shifted((0, 3), past)), reference)
    assert info.value.file == "t1n.nii.gz"
    assert f"affine differs from seg.nii.gz by up to 0.0001 (tolerance {AFFINE_TOLERANCE:g})" in str(info.value)
    assert "same orientation, origin and spacing" in str(info.value)


def test_affine_tolerance_is_absolute_far_from_the_origin():
    # 5e-4 mm at 239 mm is within a relative tolerance of 1e-5 (np.allclose's default), not within 1e-4 mm.
    with pytest.raises(CaseError, match="affine differs"):
        check_same_grid(CASE, _grid("t2w.nii.gz", _shifted((1, 3), 5e-4)), _grid("seg.nii.gz", AFFINE))


def test_shape_mismatch_names_both_files_and_what_the_caller_expects():
    with pytest.raises(CaseError) as info:
        check_same_grid(CASE, _grid("pred.nii.gz", AFFINE, (6, 5, 3)), _grid("gt-seg.nii.gz", AFFINE),
                        expected="the prediction on the ground truth's voxel grid")
    assert str(info.value) == (f"{CASE}: shape 6x5x3 differs from gt-seg.nii.gz (6x5x4) (pred.nii.gz); "
                               "expected the prediction on the ground truth's voxel grid "
                               "(co-registered, same resolution)")


def test_float32_header_rounding_of_a_real_file_is_within_the_tolerance(tmp_path):
    affine = AFFINE.copy()
    affine[:3, 3] = [119.7, -239.3, 77.1]  # not representable in float32
    paths = []
    for name, shift in (("a.nii.gz", 0.0), ("b.nii.gz", 5e-5), ("c.nii.gz", 2e-4)):
        shifted = affine.copy()
        shifted[0, 3] += shift
        paths.append(tmp_path / name)
        nib.save(nib.Nifti1Image(np.ones(SHAPE, np.int16), shifted), paths[-1])
    grids = [grid_of(p, read_image(CASE, p, "t1n")) for p in paths]
    assert not np.array_equal(grids[0].affine, affine)  # the header did round it
    check_same_grid(CASE, grids[1], grids[0])
    with pytest.raises(CaseError, match="affine differs from a.nii.gz"):
        check_same_grid(CASE, grids[2], grids[0])


# --------------------------------------------------------------------------- reading


def test_read_image_decodes_compressed_uncompressed_and_nifti2_files_alike(tmp_path):
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    for name, image_class in (("a.nii.gz", nib.Nifti1Image), ("b.nii", nib.Nifti1Image),
                              ("c.nii.gz", nib.Nifti2Image)):
        path = tmp_path / name
        nib.save(image_class(data, AFFINE), path)
        image = read_image(CASE, path, "t1n")
        assert isinstance(image, image_class)
        np.testing.assert_array_equal(read_voxels(CASE, path, image), np.asanyarray(nib.load(path).dataobj))
        np.testing.assert_array_equal(image.affine, nib.load(path).affine)


def test_read_image_names_the_case_the_file_and_the_problem(tmp_path):
    missing = tmp_path / f"{CASE}-t2f.nii.gz"
    with pytest.raises(CaseError, match="t2f file missing") as info:
        read_image(CASE, missing, "t2f")
    assert info.value.case == CASE and info.value.file == str(missing)

    truncated = tmp_path / "truncated.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), AFFINE), truncated)
    truncated.write_bytes(truncated.read_bytes()[:-20])
    with pytest.raises(CaseError, match="unreadable gzip data.*truncated or corrupt, copy it again"):
        read_image(CASE, truncated, "t1n")

    not_nifti = tmp_path / "notes.nii.gz"
    not_nifti.write_bytes(gzip.compress(b"x" * 400))
    with pytest.raises(CaseError, match="not a valid NIfTI image.*expected a NIfTI-1 or NIfTI-2 image"):
        read_image(CASE, not_nifti, "t1n")

    four_d = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((*SHAPE, 2), np.float32), AFFINE), four_d)
    with pytest.raises(CaseError, match=r"image has shape \(6, 5, 4, 2\) \(4D\); expected a 3D volume"):
        read_image(CASE, four_d, "t1n")


def test_read_voxels_names_a_file_with_less_data_than_its_header_says(tmp_path):
    path = tmp_path / "short.nii"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), AFFINE), path)
    path.write_bytes(path.read_bytes()[:-16])
    image = read_image(CASE, path, "t1n")
    with pytest.raises(CaseError, match="(?s)cannot read the voxel data.*truncated or its header does not match"):
        read_voxels(CASE, path, image)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.float32, np.float64])
def test_labels_stored_as_any_integer_or_integral_float_come_back_as_uint8(dtype):
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:3, 1:3, 1:3] = 2
    labels[2, 2, 2] = 3
    labels[0, 0, 0] = 1
    out = check_labels(labels.astype(dtype), CASE, "seg.nii.gz")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels)
    np.testing.assert_array_equal(check_labels(labels > 0, CASE, None), (labels > 0).astype(np.uint8))


@pytest.mark.parametrize(("value", "dtype", "message"), [
    (5, np.uint8, "label values 5 (2 voxels) outside {0, 1, 2, 3}"),
    (-1, np.int16, "label values -1 (2 voxels) outside {0, 1, 2, 3}"),
    (2.5, np.float32, "non-integer label values 2.5 (2 voxels)"),
    (np.nan, np.float32, "non-finite label values in 2 voxels"),
    (np.inf, np.float64, "non-finite label values in 2 voxels"),
])
def test_labels_outside_brats_met_are_named_with_their_voxel_counts(value, dtype, message):
    labels = np.zeros(SHAPE, dtype)
    labels[0, 0, :2] = value
    with pytest.raises(CaseError) as info:
        check_labels(labels, CASE, "seg.nii.gz")
    assert str(info.value) == (f"{CASE}: {message} (seg.nii.gz); "
                               "expected integer labels 0 background, 1 NETC, 2 SNFH, 3 ET")


def test_label_messages_say_which_map_and_hint_at_the_brats_2021_label():
    labels = np.zeros(SHAPE, np.uint8)
    labels[0, 0, 0] = 4
    with pytest.raises(CaseError, match=r"prediction label values 4 \(1 voxel\) outside.*relabel 4 to 3"):
        check_labels(labels, CASE, "pred.nii.gz", what="prediction label")
    with pytest.raises(CaseError, match="label map has data type complex64"):
        check_labels(labels.astype(np.complex64), CASE, "seg.nii.gz")


def test_non_finite_intensities_are_counted_by_kind():
    image = np.ones(SHAPE, np.float32)
    check_finite(CASE, "t1c.nii.gz", image)
    check_finite(CASE, "t1c.nii.gz", image.astype(np.int16))
    image[0, 0, :3] = np.nan
    image[1, 1, 1] = -np.inf
    with pytest.raises(CaseError, match=r"non-finite intensities: 3 NaN voxels, 1 Inf voxel \(t1c.nii.gz\)"):
        check_finite(CASE, "t1c.nii.gz", image)
