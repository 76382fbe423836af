"""The cache file: normalisation, memory mapping, idempotence, NIfTI output, clear errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from brainmets.constants import MODALITIES, subset_channels
from brainmets.data.preprocess import (
    LABEL_CHANNEL,
    cache_paths,
    load_case,
    preprocess_case,
    probabilities_to_original_grid,
    to_original_grid,
    write_label_nifti,
)
from brainmets.errors import BrainmetsError, CaseError


def _zscored(synthetic, modality):
    values = synthetic.images[modality]
    brain = synthetic.brain
    mean, std = values[brain].mean(dtype=np.float64), values[brain].std(dtype=np.float64)
    return np.where(brain, (values - mean) / std, 0.0)


@pytest.mark.parametrize("spacing", [None, (2.0, 2.0, 2.0)])
def test_zscore_over_brain_and_zero_outside(case_factory, tmp_path, ref, spacing):
    synthetic = case_factory("lps")
    preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache", spacing=spacing)
    image, label, meta = load_case(tmp_path / "cache", synthetic.case)

    # The brain on the cache grid: nearest original voxel of each cache centre (exact on
    # both grids tested here, where cache centres fall on original centres).
    coords = np.linalg.solve(synthetic.affine,
                             np.asarray(meta["cache_affine"]) @ ref.voxel_coordinates(label.shape))[:3]
    brain = synthetic.brain[tuple(np.rint(coords).astype(int))].reshape(label.shape)
    assert brain.sum() == meta["brain_voxels"]
    for channel in range(len(MODALITIES)):
        values = np.asarray(image[channel])
        assert abs(values[brain].mean(dtype=np.float64)) < 1e-5
        assert values[brain].std(dtype=np.float64) == pytest.approx(1.0, abs=1e-5)
        assert not values[~brain].any()


def test_memory_map_and_channel_slicing_give_the_right_sequence(case_factory, tmp_path):
    synthetic = case_factory("permuted")
    npy_path = preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache")
    assert npy_path == cache_paths(tmp_path / "cache", synthetic.case)[0]

    raw = np.load(npy_path, mmap_mode="r")
    assert isinstance(raw, np.memmap)
    assert raw.dtype == np.float32 and raw.shape[0] == LABEL_CHANNEL + 1 == 5

    image, label, meta = load_case(tmp_path / "cache", synthetic.case)
    assert isinstance(image.base, np.memmap) or isinstance(image, np.memmap)
    assert not image.flags.writeable
    assert meta["modalities"] == list(MODALITIES)

    # Channel c of the cache, mapped back to the original grid, is the z-scored file c.
    for modality in MODALITIES:
        channel = MODALITIES.index(modality)
        back, _ = probabilities_to_original_grid(raw[channel], meta)
        np.testing.assert_allclose(back, _zscored(synthetic, modality), atol=1e-4)
    # Subset selection (how training reads it) keeps channel order.
    subset = image[subset_channels("t1c+t2f")]
    np.testing.assert_array_equal(subset[0], raw[1])
    np.testing.assert_array_equal(subset[1], raw[3])
    np.testing.assert_array_equal(label, raw[LABEL_CHANNEL])


def test_write_label_nifti_reproduces_the_segmentation_file(case_factory, tmp_path):
    synthetic = case_factory("permuted")
    preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache")
    _, label, meta = load_case(tmp_path / "cache", synthetic.case)

    out = write_label_nifti(label, meta, tmp_path / "pred" / f"{synthetic.case}.nii.gz")

    written, original = nib.load(out), nib.load(synthetic.paths["seg"])
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(original.dataobj))
    np.testing.assert_array_equal(written.affine, original.affine)
    np.testing.assert_allclose(written.header.get_zooms(), original.header.get_zooms())
    assert int(written.header["sform_code"]) > 0 and int(written.header["qform_code"]) > 0
    np.testing.assert_allclose(written.get_qform(), original.affine, atol=1e-5)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp files left


def test_preprocess_is_idempotent(case_factory, tmp_path):
    synthetic = case_factory("lps")
    cache_dir = tmp_path / "cache"
    npy_path, json_path = cache_paths(cache_dir, synthetic.case)

    preprocess_case(synthetic.case, synthetic.paths, cache_dir, spacing=(2, 2, 2))
    first = npy_path.read_bytes(), json_path.read_bytes(), npy_path.stat().st_mtime_ns

    # Same inputs: the complete cache is kept as it is.
    preprocess_case(synthetic.case, synthetic.paths, cache_dir, spacing=(2, 2, 2))
    assert npy_path.stat().st_mtime_ns == first[2]
    # Forced rebuild: byte-identical (deterministic).
    preprocess_case(synthetic.case, synthetic.paths, cache_dir, spacing=(2, 2, 2), overwrite=True)
    assert (npy_path.read_bytes(), json_path.read_bytes()) == first[:2]
    # Another spacing: rebuilt, not silently kept.
    preprocess_case(synthetic.case, synthetic.paths, cache_dir, spacing=None)
    assert load_case(cache_dir, synthetic.case)[2]["resampled"] is False
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([npy_path.name, json_path.name])


def test_metadata_records_what_is_needed_to_undo_it(case_factory, tmp_path):
    synthetic = case_factory("lps")
    preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache", spacing=(2, 2, 2))
    meta = json.loads(cache_paths(tmp_path / "cache", synthetic.case)[1].read_text())
    for key in ("case", "modalities", "original_shape", "original_affine", "original_spacing",
                "orientation", "ras_shape", "crop_start", "crop_stop", "spacing", "cache_shape",
                "resampled", "label_counts", "sources"):
        assert key in meta, key
    assert meta["case"] == synthetic.case
    assert meta["original_shape"] == list(synthetic.seg.shape)
    assert meta["orientation"] == [[0.0, -1.0], [1.0, -1.0], [2.0, 1.0]]  # LPS -> RAS: flip x, y
    assert meta["sources"] == {k: str(v) for k, v in synthetic.paths.items()}
    assert sum(meta["label_counts"].values()) == int(np.prod(meta["cache_shape"]))


# --------------------------------------------------------------------------- errors


def test_load_case_names_case_and_file_when_cache_is_missing(tmp_path):
    with pytest.raises(CaseError) as info:
        load_case(tmp_path, "BraTS-MET-00001-000")
    message = str(info.value)
    assert "BraTS-MET-00001-000" in message and str(tmp_path / "BraTS-MET-00001-000.json") in message
    assert "brainmets preprocess" in message


def test_load_case_rejects_a_truncated_array(case_factory, tmp_path):
    synthetic = case_factory("ras")
    npy_path = preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache")
    data = npy_path.read_bytes()
    npy_path.write_bytes(data[: len(data) // 2])
    for mmap in (True, False):
        with pytest.raises(CaseError, match="truncated") as info:
            load_case(tmp_path / "cache", synthetic.case, mmap=mmap)
        assert synthetic.case in str(info.value) and str(npy_path) in str(info.value)


def test_load_case_rejects_an_array_inconsistent_with_its_metadata(case_factory, tmp_path):
    synthetic = case_factory("ras")
    npy_path = preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache")
    np.save(npy_path, np.zeros((5, 3, 3, 3), dtype=np.float32))
    with pytest.raises(CaseError, match=r"expected float32 \(5, ") as info:
        load_case(tmp_path / "cache", synthetic.case)
    assert str(npy_path) in str(info.value)
    # ... and the next preprocess run sees the cache as incomplete and rebuilds it.
    preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache")
    assert load_case(tmp_path / "cache", synthetic.case)[0].shape[1:] != (3, 3, 3)


def test_missing_source_names_case_and_file_and_writes_nothing(case_factory, tmp_path):
    synthetic = case_factory("ras")
    synthetic.paths["t2f"].unlink()
    with pytest.raises(CaseError, match="t2f file missing") as info:
        preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache")
    assert synthetic.case in str(info.value) and str(synthetic.paths["t2f"]) in str(info.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_bad_labels_and_mismatched_grids_are_named(case_factory, tmp_path):
    synthetic = case_factory("ras")
    seg = synthetic.seg.copy()
    seg[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(seg, synthetic.affine), synthetic.paths["seg"])
    with pytest.raises(CaseError, match=r"label values 5 \(1 voxel\) outside \{0, 1, 2, 3\}") as info:
        preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache")
    assert str(synthetic.paths["seg"]) in str(info.value)

    other = case_factory("lps", case="other")
    mixed = dict(synthetic.paths, seg=other.paths["seg"], t1c=other.paths["t1c"])
    with pytest.raises(CaseError, match="affine differs from other-seg.nii.gz") as info:
        preprocess_case(synthetic.case, mixed, tmp_path / "cache")
    assert str(synthetic.paths["t1n"]) in str(info.value)


def test_inverse_rejects_a_map_of_the_wrong_shape(case_factory, tmp_path):
    synthetic = case_factory("ras")
    preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache")
    _, label, meta = load_case(tmp_path / "cache", synthetic.case)
    with pytest.raises(BrainmetsError, match="expected the cache shape"):
        to_original_grid(np.zeros((4, 4, 4), np.uint8), meta)
    with pytest.raises(BrainmetsError, match="0..255"):
        to_original_grid(np.full(label.shape, -1.0), meta)


def test_float_stored_labels_are_accepted_when_integral_and_nan_images_rejected(case_factory, tmp_path):
    synthetic = case_factory("lps")
    nib.save(nib.Nifti1Image(synthetic.seg.astype(np.float32), synthetic.affine), synthetic.paths["seg"])
    preprocess_case(synthetic.case, synthetic.paths, tmp_path / "cache")
    _, label, meta = load_case(tmp_path / "cache", synthetic.case)
    restored, _ = to_original_grid(label, meta)
    np.testing.assert_array_equal(restored, synthetic.seg)

    seg = synthetic.seg.astype(np.float32)
    seg[synthetic.seg == 3] = 2.5
    nib.save(nib.Nifti1Image(seg, synthetic.affine), synthetic.paths["seg"])
    with pytest.raises(CaseError, match=r"non-integer label values 2\.5"):
        preprocess_case(synthetic.case, synthetic.paths, tmp_path / "other")

    nib.save(nib.Nifti1Image(synthetic.seg, synthetic.affine), synthetic.paths["seg"])
    flair = synthetic.images["t2f"].copy()
    flair[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(flair, synthetic.affine), synthetic.paths["t2f"])
    with pytest.raises(CaseError, match="non-finite intensities: 1 NaN voxel") as info:
        preprocess_case(synthetic.case, synthetic.paths, tmp_path / "other")
    assert str(synthetic.paths["t2f"]) in str(info.value)
