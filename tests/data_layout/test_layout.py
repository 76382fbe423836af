"""`brainmets index`: discovery, every validation rule, lesion statistics, fail/skip modes."""

from __future__ import annotations

import gzip
import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmets.cli import main
from brainmets.data.layout import (
    CASE_COLUMNS,
    case_files,
    discover_cases,
    index_cohort,
    lesion_statistics,
    load_cases,
    validate_case,
)
from brainmets.errors import BrainmetsError, CaseError

CASE = "BraTS-MET-00001-000"
SHAPE = (24, 24, 16)  # as written by the write_case fixture


def nifti_path(root, suffix, case=CASE):
    return root / case / f"{case}-{suffix}.nii.gz"


def case_error(root, case=CASE) -> CaseError:
    with pytest.raises(CaseError) as info:
        validate_case(root, case)
    assert case in str(info.value)
    return info.value


# ----------------------------------------------------------------- valid cases


def test_valid_case_row(tmp_path, write_case, kit):
    write_case(tmp_path, CASE)
    row = validate_case(tmp_path, CASE)
    assert set(row) == set(CASE_COLUMNS)
    assert row["status"] == "ok" and row["reason"] == ""
    assert row["shape"] == "24x24x16" and row["spacing"] == "1.0x1.0x1.0"
    assert row["t1c"].endswith(f"{CASE}/{CASE}-t1c.nii.gz")
    seg = kit.default_seg()
    assert (row["n_lesions"], row["n_netc"], row["n_snfh"], row["n_et"]) == (2, 1, 1, 2)
    assert row["vol_netc"] == 1.0
    assert row["vol_et"] == float(np.sum(seg == 3))
    assert row["vol_wt"] == float(np.sum(seg > 0))


def test_two_diagonal_voxels_are_one_lesion():
    seg = np.zeros((6, 6, 6), np.uint8)
    seg[1, 1, 1] = 3
    seg[2, 2, 2] = 3  # touches the first only at a corner: 26-connected, not 6- or 18-connected
    seg[4, 4, 4] = 2  # separate
    stats = lesion_statistics(seg, (1, 1, 1))
    assert stats["n_lesions"] == 2
    assert stats["n_et"] == 1 and stats["n_snfh"] == 1 and stats["n_netc"] == 0


def test_volumes_use_anisotropic_header_spacing(tmp_path, write_case):
    seg = np.zeros(SHAPE, np.uint8)
    seg[2:4, 2:4, 2:4] = 1  # 8 voxels
    seg[10:13, 10:12, 5] = 2  # 6 voxels
    write_case(tmp_path, CASE, seg=seg, spacing=(0.5, 1.0, 3.0))
    row = validate_case(tmp_path, CASE)
    assert row["spacing"] == "0.5x1.0x3.0"
    assert row["vol_netc"] == pytest.approx(8 * 1.5)
    assert row["vol_snfh"] == pytest.approx(6 * 1.5)
    assert row["vol_wt"] == pytest.approx(14 * 1.5)
    assert row["n_lesions"] == 2


def test_empty_segmentation_is_valid(tmp_path, write_case):
    write_case(tmp_path, CASE, seg=np.zeros(SHAPE, np.uint8))
    row = validate_case(tmp_path, CASE)
    assert row["status"] == "ok"
    assert row["n_lesions"] == row["n_et"] == 0 and row["vol_wt"] == 0.0


def test_integer_valued_float_labels_are_accepted(tmp_path, write_case, kit):
    write_case(tmp_path, CASE, seg=kit.default_seg().astype(np.float64))
    assert validate_case(tmp_path, CASE)["n_lesions"] == 2


def test_affine_within_tolerance_is_accepted(tmp_path, write_case):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-12.0, -12.0, -8.0)
    nudged = affine.copy()
    nudged[0, 3] += 1e-6
    write_case(tmp_path, CASE, affines={"t2w": nudged})
    assert validate_case(tmp_path, CASE)["status"] == "ok"


# ----------------------------------------------------------------- file problems


def test_missing_sequence_names_expected_and_found(tmp_path, write_case):
    write_case(tmp_path, CASE, skip=("t2f",))
    err = case_error(tmp_path)
    msg = str(err)
    assert f"{CASE}-t2f.nii.gz" in msg and "missing t2f" in msg
    assert f"{CASE}-t1n.nii.gz" in msg  # what is there


def test_wrong_file_names_are_explained(tmp_path, write_case):
    case_dir = write_case(tmp_path, CASE)
    (case_dir / f"{CASE}-t1c.nii.gz").rename(case_dir / f"{CASE}_t1c.nii.gz")
    (case_dir / f"{CASE}-t2f.nii.gz").rename(case_dir / f"{CASE}-flair.nii.gz")
    msg = str(case_error(tmp_path))
    assert "missing t1c, t2f" in msg
    assert f"{CASE}_t1c.nii.gz looks like the t1c file: rename it to {CASE}-t1c.nii.gz" in msg
    assert f"{CASE}-flair.nii.gz looks like the t2f file" in msg


def test_t1ce_name_is_explained(tmp_path, write_case):
    case_dir = write_case(tmp_path, CASE)
    (case_dir / f"{CASE}-t1c.nii.gz").rename(case_dir / f"{CASE}-t1ce.nii.gz")
    assert f"{CASE}-t1ce.nii.gz looks like the t1c file" in str(case_error(tmp_path))


def test_truncated_gzip_is_caught(tmp_path, write_case):
    write_case(tmp_path, CASE)
    path = nifti_path(tmp_path, "t2w")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # The header still loads lazily; only decoding the voxels fails.
    assert nib.load(str(path)).shape == SHAPE
    err = case_error(tmp_path)
    assert err.file == str(path) and f"{CASE}-t2w.nii.gz" in str(err)
    assert "truncated or corrupt" in str(err)


def test_corrupt_bytes_are_caught(tmp_path, write_case):
    write_case(tmp_path, CASE)
    path = nifti_path(tmp_path, "t1n")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    err = case_error(tmp_path)
    assert err.file == str(path)


def test_uncompressed_file_named_nii_gz_is_caught(tmp_path, write_case):
    write_case(tmp_path, CASE)
    path = nifti_path(tmp_path, "seg")
    path.write_bytes(gzip.decompress(path.read_bytes()))
    err = case_error(tmp_path)
    assert err.file == str(path) and "gzip" in str(err)


def test_shape_mismatch_names_both_files(tmp_path, write_case):
    write_case(tmp_path, CASE, images={"t2f": np.ones((24, 24, 15), np.float32)})
    msg = str(case_error(tmp_path))
    assert f"{CASE}-t2f.nii.gz" in msg and f"{CASE}-t1n.nii.gz" in msg
    assert "24x24x15" in msg and "24x24x16" in msg


def test_affine_mismatch_names_both_files(tmp_path, write_case):
    shifted = np.diag([1.0, 1.0, 1.0, 1.0])
    shifted[:3, 3] = (-12.0, -12.0, -6.0)
    write_case(tmp_path, CASE, affines={"seg": shifted})
    err = case_error(tmp_path)
    assert err.file.endswith(f"{CASE}-seg.nii.gz")
    assert "affine differs from" in str(err) and f"{CASE}-t1n.nii.gz" in str(err)


@pytest.mark.parametrize(
    "value, expected",
    [(5, "label values 5 (1 voxel) outside {0, 1, 2, 3}"), (4, "relabel 4 to 3")],
)
def test_labels_outside_brats_set(tmp_path, write_case, value, expected):
    seg = np.zeros(SHAPE, np.uint8)
    seg[1, 1, 1] = value
    seg[2, 2, 2] = 2
    write_case(tmp_path, CASE, seg=seg)
    err = case_error(tmp_path)
    assert expected in str(err) and err.file.endswith("-seg.nii.gz")


def test_non_integer_labels(tmp_path, write_case, kit):
    seg = kit.default_seg().astype(np.float32)
    seg[0, 0, :3] = 1.5
    write_case(tmp_path, CASE, seg=seg)
    assert "non-integer label values 1.5 (3 voxels)" in str(case_error(tmp_path))


@pytest.mark.parametrize("bad, expected", [(np.nan, "2 NaN voxels"), (np.inf, "2 Inf voxels")])
def test_non_finite_intensities_are_counted(tmp_path, write_case, bad, expected):
    image = np.ones(SHAPE, np.float32)
    image[0, 0, :2] = bad
    write_case(tmp_path, CASE, images={"t1c": image})
    err = case_error(tmp_path)
    assert expected in str(err) and err.file.endswith(f"{CASE}-t1c.nii.gz")


def test_all_zero_sequence(tmp_path, write_case):
    write_case(tmp_path, CASE, images={"t2w": np.zeros(SHAPE, np.int16)})
    err = case_error(tmp_path)
    assert "all voxels are zero" in str(err) and err.file.endswith("-t2w.nii.gz")


def test_non_3d_image(tmp_path, write_case):
    write_case(tmp_path, CASE, images={"t1n": np.ones((*SHAPE, 2), np.float32)})
    err = case_error(tmp_path)
    assert "expected a 3D volume" in str(err) and err.file.endswith("-t1n.nii.gz")


# ----------------------------------------------------------------- discovery


def test_discovery_ignores_stray_files_with_warning(cohort, caplog):
    (cohort / "README.txt").write_text("notes")
    (cohort / ".DS_Store").write_text("")
    with caplog.at_level(logging.WARNING, logger="brainmets.data.layout"):
        cases = discover_cases(cohort)
    assert cases == [f"BraTS-MET-0000{i}-000" for i in (1, 2, 3)]
    assert "README.txt" in caplog.text and ".DS_Store" not in caplog.text
    assert set(case_files(cohort, cases[0])) == {"t1n", "t1c", "t2w", "t2f", "seg"}


def test_missing_and_empty_roots(tmp_path, kit):
    with pytest.raises(BrainmetsError, match="does not exist"):
        discover_cases(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BrainmetsError, match="no case directories"):
        discover_cases(empty)
    kit.save_nifti(empty / f"{CASE}-t1n.nii.gz", np.ones(SHAPE, np.float32))
    with pytest.raises(BrainmetsError, match="each case needs its own directory"):
        discover_cases(empty)


# ----------------------------------------------------------------- cohort and CLI


def _break_two_cases(cohort, write_case, kit):
    write_case(cohort, "BraTS-MET-00004-000", skip=("seg",))
    seg = kit.default_seg()
    seg[0, 0, 0] = 7
    write_case(cohort, "BraTS-MET-00005-000", seg=seg)


def test_cli_fail_mode_reports_all_bad_cases_and_keeps_old_table(cohort, write_case, tmp_path, capsys, kit):
    out = tmp_path / "results" / "cases.tsv"
    assert main(["index", "--root", str(cohort), "--out", str(out), "--no-progress"]) == 0
    before = out.read_bytes()
    _break_two_cases(cohort, write_case, kit)
    code = main(["index", "--root", str(cohort), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "2 of 5 cases" in err
    assert "BraTS-MET-00004-000: missing seg" in err and "BraTS-MET-00005-000-seg.nii.gz" in err
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == ["cases.tsv"]  # no temporary file left


def test_cli_skip_mode_lists_skipped_cases(cohort, write_case, tmp_path, capsys, kit):
    _break_two_cases(cohort, write_case, kit)
    out = tmp_path / "cases.tsv"
    code = main(["index", "--root", str(cohort), "--out", str(out), "--on-bad-case", "skip", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "3 ok, 2 skipped" in stdout
    assert "skipped BraTS-MET-00004-000: missing seg" in stdout
    assert "skipped BraTS-MET-00005-000: label values 7" in stdout
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == list(CASE_COLUMNS)
    assert table.set_index("case")["status"].to_dict()["BraTS-MET-00005-000"] == "skipped"
    everything = load_cases(out, ok_only=False)
    assert len(everything) == 5 and everything["reason"].str.contains("label values 7").any()
    ok = load_cases(out)
    assert ok["case"].tolist() == [f"BraTS-MET-0000{i}-000" for i in (1, 2, 3)]
    assert ok["n_lesions"].dtype == np.int64 and ok["n_lesions"].tolist() == [2, 2, 2]


def test_skip_mode_with_no_valid_case_is_an_error(tmp_path, write_case):
    write_case(tmp_path / "c", CASE, skip=("t1n",))
    with pytest.raises(BrainmetsError, match="none of the 1 cases"):
        index_cohort(tmp_path / "c", on_bad_case="skip", progress=False)


def test_parallel_index_matches_serial(cohort, write_case, kit):
    _break_two_cases(cohort, write_case, kit)
    serial = index_cohort(cohort, on_bad_case="skip", workers=1, progress=False)
    parallel = index_cohort(cohort, on_bad_case="skip", workers=2, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)


def test_load_cases_errors(tmp_path):
    with pytest.raises(BrainmetsError, match="brainmets index"):
        load_cases(tmp_path / "cases.tsv")
    pd.DataFrame({"case": ["a"], "status": ["ok"]}).to_csv(tmp_path / "cases.tsv", sep="\t", index=False)
    with pytest.raises(BrainmetsError, match="lacks column.*root"):
        load_cases(tmp_path / "cases.tsv")


def test_index_and_split_do_not_import_torch_or_monai():
    import subprocess
    import sys

    code = (
        "import sys, argparse, brainmets.cli.index as i, brainmets.cli.split as s;"
        "i.add_arguments(argparse.ArgumentParser()); s.add_arguments(argparse.ArgumentParser());"
        "import brainmets.data.layout, brainmets.data.splits, cc3d, nibabel, pandas, tqdm;"
        "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
