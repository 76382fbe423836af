"""`brainmets evaluate` end to end on real NIfTI files: layouts, errors, options, workers."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmets.cli import main
from brainmets.evaluation import CASE_COLUMNS, LESION_COLUMNS, evaluate_dirs

SHAPE = (16, 16, 12)
AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])


def _label(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    label = np.zeros(SHAPE, np.uint8)
    for _ in range(2):
        x, y, z = rng.integers(1, 10, 3)
        label[x : x + 4, y : y + 4, z : z + 3] = 2
        label[x + 1 : x + 3, y + 1 : y + 3, z : z + 2] = 3
    return label


def _save(path, data, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


@pytest.fixture()
def cohort(tmp_path):
    """Three cases in BraTS layout; predictions = GT shifted by one voxel."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    cases = [f"BraTS-MET-0000{i}-000" for i in range(3)]
    for i, case in enumerate(cases):
        label = _label(i)
        _save(gt_dir / case / f"{case}-seg.nii.gz", label)
        _save(pred_dir / f"{case}.nii.gz", np.roll(label, 1, axis=0))
    return gt_dir, pred_dir, cases


def test_cli_writes_case_and_lesion_tables(cohort, tmp_path, capsys):
    gt_dir, pred_dir, cases = cohort
    out, lesions_out = tmp_path / "m" / "metrics.csv", tmp_path / "m" / "lesions.tsv"
    code = main(["evaluate", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--out", str(out),
                 "--lesions-out", str(lesions_out)])
    assert code == 0
    df = pd.read_csv(out)  # .csv -> comma separated
    assert list(df.columns) == list(CASE_COLUMNS)
    assert len(df) == 3 * 5 and sorted(df["case"].unique()) == cases
    lesions = pd.read_csv(lesions_out, sep="\t")
    assert list(lesions.columns) == list(LESION_COLUMNS)
    assert set(lesions["kind"]) <= {"gt", "fp"}
    # Numbers equal the in-memory API on the same arrays (spacing from the header).
    from brainmets.evaluation import evaluate_case

    gt = np.asarray(nib.load(gt_dir / cases[0] / f"{cases[0]}-seg.nii.gz").dataobj)
    rows, _ = evaluate_case(np.roll(gt, 1, axis=0), gt, (1.0, 1.0, 1.5), case=cases[0])
    expected = pd.DataFrame(rows)
    got = df[df["case"] == cases[0]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert "evaluated 3 case(s)" in capsys.readouterr().out


def test_flat_gt_layout_and_parallel_workers_agree(cohort, tmp_path):
    gt_dir, pred_dir, cases = cohort
    flat = tmp_path / "flat"
    for case in cases:
        data = np.asarray(nib.load(gt_dir / case / f"{case}-seg.nii.gz").dataobj)
        _save(flat / f"{case}-seg.nii.gz", data)
    serial, serial_lesions = evaluate_dirs(pred_dir, gt_dir, workers=1, progress=False)
    parallel, parallel_lesions = evaluate_dirs(pred_dir, flat, workers=2, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)
    pd.testing.assert_frame_equal(serial_lesions, parallel_lesions)


def test_missing_prediction_is_an_error_unless_scored_empty(cohort, tmp_path, capsys):
    gt_dir, pred_dir, cases = cohort
    (pred_dir / f"{cases[1]}.nii.gz").unlink()
    out = tmp_path / "metrics.tsv"
    args = ["evaluate", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert cases[1] in err and "prediction missing" in err and f"{cases[1]}.nii.gz" in err
    assert not out.exists()
    assert main(args + ["--missing-as-empty"]) == 0
    df = pd.read_csv(out, sep="\t")
    wt = df[(df["case"] == cases[1]) & (df["region"] == "WT")].iloc[0]
    assert (wt["legacy_dice"], wt["legacy_hd95"], wt["pred_volume"]) == (0.0, 374.0, 0.0)
    assert wt["num_tp"] == 0 and wt["num_fn"] >= 1


def test_shape_and_affine_mismatch_name_the_case_and_files(cohort, capsys, tmp_path):
    gt_dir, pred_dir, cases = cohort
    _save(pred_dir / f"{cases[0]}.nii.gz", np.zeros((16, 16, 11), np.uint8))
    args = ["evaluate", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--out", str(tmp_path / "m.tsv")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert cases[0] in err and "shape 16x16x11 differs" in err and f"{cases[0]}.nii.gz" in err
    shifted = AFFINE.copy()
    shifted[0, 3] = 5.0
    _save(pred_dir / f"{cases[0]}.nii.gz", _label(0), affine=shifted)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert cases[0] in err and "affine differs" in err and f"{cases[0]}-seg.nii.gz" in err


def test_prediction_without_ground_truth_and_bad_labels_are_errors(cohort, capsys, tmp_path):
    gt_dir, pred_dir, cases = cohort
    args = ["evaluate", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--out", str(tmp_path / "m.tsv")]
    _save(pred_dir / "BraTS-MET-09999-000.nii.gz", _label(0))
    assert main(args) == 2
    assert "BraTS-MET-09999-000" in capsys.readouterr().err
    (pred_dir / "BraTS-MET-09999-000.nii.gz").unlink()
    bad = _label(0)
    bad[0, 0, 0] = 4
    _save(pred_dir / f"{cases[0]}.nii.gz", bad)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert cases[0] in err and "prediction label values 4 (1 voxel) outside {0, 1, 2, 3}" in err


def test_cases_from_split_table(cohort, tmp_path):
    gt_dir, pred_dir, cases = cohort
    splits = tmp_path / "splits.tsv"
    pd.DataFrame({"case": cases, "split": ["train", "val", "val"]}).to_csv(splits, sep="\t", index=False)
    (pred_dir / f"{cases[0]}.nii.gz").unlink()  # a train case: not needed
    out = tmp_path / "val.tsv"
    code = main(["evaluate", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--out", str(out),
                 "--cases-from", str(splits), "--split", "val", "--workers", "2"])
    assert code == 0
    assert sorted(pd.read_csv(out, sep="\t")["case"].unique()) == cases[1:]


def test_evaluation_does_not_import_torch_or_monai():
    code = (
        "import sys, brainmets.evaluation, brainmets.cli.evaluate;"
        "bad = [m for m in ('torch', 'monai') if m in sys.modules];"
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
