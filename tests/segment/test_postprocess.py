"""Small-component removal (per region, valid label maps) and its tuning on the validation split only."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmets.cli import main
from brainmets.errors import BrainmetsError
from brainmets.inference.postprocess import read_decision, remove_small_components


def _blob(labels, corner, size, value):
    x, y, z = corner
    labels[x:x + size[0], y:y + size[1], z:z + size[2]] = value


def test_removes_exactly_the_small_components_of_each_region():
    labels = np.zeros((40, 40, 40), np.uint8)
    _blob(labels, (2, 2, 2), (2, 2, 2), 2)          # WT speck: 8 voxels
    _blob(labels, (10, 10, 10), (6, 6, 6), 2)       # big oedema (216) ...
    _blob(labels, (11, 11, 11), (1, 1, 3), 1)       # ... with a 3-voxel core speck
    _blob(labels, (20, 20, 20), (8, 8, 8), 2)       # big lesion (512) ...
    _blob(labels, (21, 21, 21), (5, 5, 5), 1)       # ... a 125-voxel core ...
    _blob(labels, (22, 22, 22), (1, 2, 2), 3)       # ... an ET speck of 4 voxels ...
    _blob(labels, (24, 24, 24), (2, 2, 2), 3)       # ... and an ET blob of 8 voxels
    spacing = (1.0, 1.0, 2.0)  # voxel volume 2 mm^3

    out = remove_small_components(labels, {"WT": 20.0, "TC": 10.0, "ET": 12.0}, spacing)

    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1, 2, 3}
    assert (out[2:4, 2:4, 2:4] == 0).all()                       # WT 16 mm^3 < 20: background
    assert out[11, 11, 11] == 2 and out[11, 11, 13] == 2           # TC 6 mm^3 < 10: oedema
    assert (out[22, 22:24, 22:24] == 1).all()                    # ET 8 mm^3 < 12: NETC
    assert (out[24:26, 24:26, 24:26] == 3).all()                 # ET 16 mm^3 kept
    changed = out != labels
    expected = np.zeros_like(changed)
    expected[2:4, 2:4, 2:4] = True
    expected[11, 11, 11:14] = True
    expected[22, 22:24, 22:24] = True
    assert (changed == expected).all()
    # nesting holds: every ET voxel in TC, every TC voxel in WT (by construction of labels, checked anyway)
    assert np.isin(out[out == 3], (1, 3)).all()
    # a minimum of 0 (or none) changes nothing
    assert (remove_small_components(labels, {}, spacing) == labels).all()
    with pytest.raises(BrainmetsError, match="unknown region"):
        remove_small_components(labels, {"NETC": 5.0}, spacing)


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.eye(4)), str(path))


@pytest.fixture()
def cohort(tmp_path):
    """Val and test cases: one lesion each, predictions with a few false-positive specks."""
    rows = []
    for i, split in enumerate(["val", "val", "val", "test", "test"]):
        case = f"BraTS-MET-9000{i}-000"
        gt = np.zeros((30, 30, 30), np.uint8)
        _blob(gt, (10, 10, 10), (8, 8, 8), 2)
        _blob(gt, (12, 12, 12), (4, 4, 4), 3)
        pred = gt.copy()
        for corner in [(1, 1, 1), (1, 6, 1), (6, 1, 1)][: 1 + i % 3]:
            _blob(pred, corner, (2, 2, 1), 2)  # 4-voxel WT specks: false positives
        _write(tmp_path / "gt" / case / f"{case}-seg.nii.gz", gt)
        _write(tmp_path / "pred" / f"{case}.nii.gz", pred)
        rows.append((case, split))
    pd.DataFrame(rows, columns=["case", "split"]).to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    return tmp_path


def _tune(root, out):
    assert main(["postprocess", "tune", "--pred-dir", str(root / "pred"), "--gt-dir", str(root / "gt"),
                 "--splits", str(root / "splits.tsv"), "--split", "val", "--grid", "2", "5", "50",
                 "--out", str(out)]) == 0
    return read_decision(out)


def test_tuned_on_validation_only(cohort):
    first = _tune(cohort, cohort / "first.json")
    assert first["chosen_on"] == "val" and first["n_cases"] == 3
    assert first["min_volume_mm3"]["WT"] == 5.0  # removes the 4 mm^3 specks, keeps the 512 mm^3 lesion
    assert first["scores"]["WT"]["5"] > first["scores"]["WT"]["0"]

    # rewrite the test split's predictions: large specks that a bigger minimum would pay to remove
    for case in ["BraTS-MET-90003-000", "BraTS-MET-90004-000"]:
        path = cohort / "pred" / f"{case}.nii.gz"
        pred = np.asarray(nib.load(str(path)).dataobj).copy()
        _blob(pred, (0, 0, 25), (3, 3, 3), 2)
        _blob(pred, (25, 25, 0), (3, 3, 3), 3)
        _write(path, pred)
    second = _tune(cohort, cohort / "second.json")
    assert second["min_volume_mm3"] == first["min_volume_mm3"] and second["scores"] == first["scores"]

    # applying it: the 4-voxel specks are gone from a test case, the lesion is untouched
    assert main(["postprocess", "apply", "--decision", str(cohort / "first.json"), "--in-dir",
                 str(cohort / "pred"), "--out-dir", str(cohort / "clean")]) == 0
    case = "BraTS-MET-90003-000"
    before = np.asarray(nib.load(str(cohort / "pred" / f"{case}.nii.gz")).dataobj)
    after = nib.load(str(cohort / "clean" / f"{case}.nii.gz"))
    assert after.get_data_dtype() == np.uint8 and np.allclose(after.affine, np.eye(4))
    after = np.asarray(after.dataobj)
    assert (after[10:18, 10:18, 10:18] == before[10:18, 10:18, 10:18]).all()
    assert (after[:8, :8, :3] == 0).all() and before[:8, :8, :3].any()


def test_tuning_on_test_is_refused(cohort):
    assert main(["postprocess", "tune", "--pred-dir", str(cohort / "pred"), "--gt-dir", str(cohort / "gt"),
                 "--splits", str(cohort / "splits.tsv"), "--split", "test", "--grid", "5",
                 "--out", str(cohort / "x.json")]) == 2
    assert not (cohort / "x.json").exists()


def test_bad_decision_file_is_named(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"format": "brainmets-postprocessing/1", "min_volume_mm3": {"WT": -1}}))
    with pytest.raises(BrainmetsError, match="d.json: min_volume_mm3"):
        read_decision(path)
