"""Files, headers, determinism, resumability and the CLI of the synthetic cohort."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from brainmets.cli import main
from brainmets.constants import MODALITIES
from brainmets.data.synthetic import (
    CASE_FILES,
    brats_affine,
    case_id,
    case_paths,
    generate_case,
    synthesize_cohort,
    write_case,
)
from brainmets.errors import BrainmetsError, CaseError

SRI24_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1, 0, 239], [0, 0, 1, 0], [0, 0, 0, 1]])


def test_case_ids_are_brats_met_and_one_based():
    assert case_id(1) == "BraTS-MET-00001-000"
    assert case_id(238) == "BraTS-MET-00238-000"
    for bad in (0, -3, 100_000):
        with pytest.raises(BrainmetsError):
            case_id(bad)


def test_affine_is_sri24_lps_and_keeps_the_field_centre():
    assert np.array_equal(brats_affine(), SRI24_AFFINE)
    assert nib.aff2axcodes(brats_affine()) == ("L", "P", "S")
    coarse = brats_affine((80, 80, 52), 3.0)
    assert np.allclose(np.diag(coarse)[:3], [-3, -3, 3])
    centre = lambda affine, shape: affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]  # noqa: E731
    assert np.allclose(centre(coarse, (80, 80, 52)), centre(SRI24_AFFINE, (240, 240, 155)), atol=1.6)


def test_written_files_follow_the_brats_met_layout(tmp_path, full_case):
    paths = write_case(tmp_path, "BraTS-MET-00001-000", full_case)
    assert sorted(p.name for p in (tmp_path / "BraTS-MET-00001-000").iterdir()) == sorted(
        f"BraTS-MET-00001-000-{suffix}.nii.gz" for suffix in ("t1n", "t1c", "t2w", "t2f", "seg")
    )
    for suffix, path in paths.items():
        image = nib.load(path)
        assert image.shape == (240, 240, 155)
        assert image.header.get_zooms() == (1.0, 1.0, 1.0)
        assert np.array_equal(image.affine, SRI24_AFFINE)
        assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1
        assert image.get_data_dtype() == (np.uint8 if suffix == "seg" else np.int16)
        data = np.asanyarray(image.dataobj)
        expected = full_case.seg if suffix == "seg" else full_case.images[suffix]
        assert np.array_equal(data, expected), suffix
    # no temporary files left behind by the atomic writes
    assert not [p for p in (tmp_path / "BraTS-MET-00001-000").iterdir() if p.name.startswith(".")]


def test_same_seed_same_case_other_seed_other_case(grid_3mm):
    first = generate_case(3, 7, *grid_3mm)
    again = generate_case(3, 7, *grid_3mm)
    for sequence in MODALITIES:
        assert np.array_equal(first.images[sequence], again.images[sequence])
    assert np.array_equal(first.seg, again.seg)
    assert [l.summary() for l in first.lesions] == [l.summary() for l in again.lesions]
    other_seed = generate_case(3, 8, *grid_3mm)
    other_case = generate_case(4, 7, *grid_3mm)
    for other in (other_seed, other_case):
        assert not np.array_equal(first.images["t1c"], other.images["t1c"])
        assert [l.summary() for l in first.lesions] != [l.summary() for l in other.lesions]


def test_cohort_files_do_not_depend_on_cohort_size_or_workers(tmp_path, grid_3mm):
    shape, spacing = grid_3mm
    alone, serial, pooled = tmp_path / "alone", tmp_path / "serial", tmp_path / "pooled"
    write_case(alone, case_id(2), generate_case(2, 5, shape, spacing))
    ids = synthesize_cohort(serial, 2, seed=5, shape=shape, spacing=spacing, progress=False)
    assert ids == [case_id(1), case_id(2)]
    synthesize_cohort(pooled, 2, seed=5, workers=2, shape=shape, spacing=spacing, progress=False)
    for suffix in CASE_FILES:
        reference = case_paths(alone, case_id(2))[suffix].read_bytes()
        assert case_paths(serial, case_id(2))[suffix].read_bytes() == reference, suffix
        assert case_paths(pooled, case_id(2))[suffix].read_bytes() == reference, suffix
    for suffix in CASE_FILES:  # case 1 too, from two different processes
        assert case_paths(pooled, case_id(1))[suffix].read_bytes() == case_paths(serial, case_id(1))[suffix].read_bytes()


def test_resume_keeps_complete_cases_and_redoes_incomplete_ones(tmp_path, grid_3mm):
    shape, spacing = grid_3mm
    synthesize_cohort(tmp_path, 2, seed=1, shape=shape, spacing=spacing, progress=False)
    kept = {s: os.stat(p) for s, p in case_paths(tmp_path, case_id(1)).items()}
    broken = case_paths(tmp_path, case_id(2))
    reference_t2f = broken["t2f"].read_bytes()
    broken["t2f"].unlink()  # as if killed while writing case 2

    synthesize_cohort(tmp_path, 3, seed=1, shape=shape, spacing=spacing, progress=False)
    for suffix, before in kept.items():
        after = os.stat(case_paths(tmp_path, case_id(1))[suffix])
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), suffix
    assert broken["t2f"].read_bytes() == reference_t2f
    assert all(p.is_file() for p in case_paths(tmp_path, case_id(3)).values())


def test_resume_refuses_a_cohort_made_with_other_settings(tmp_path, grid_3mm):
    shape, spacing = grid_3mm
    synthesize_cohort(tmp_path, 1, seed=1, shape=shape, spacing=spacing, progress=False)
    with pytest.raises(CaseError, match="BraTS-MET-00001-000.*seed=2"):
        synthesize_cohort(tmp_path, 1, seed=2, shape=shape, spacing=spacing, progress=False)
    with pytest.raises(CaseError, match="shape"):
        synthesize_cohort(tmp_path, 1, seed=1, shape=(80, 80, 50), spacing=spacing, progress=False)


def test_cli_help_and_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--help"])
    assert exit_info.value.code == 0
    assert "--n-cases" in capsys.readouterr().out

    out = tmp_path / "cohort"
    code = main(["synth", "--out-dir", str(out), "--n-cases", "1", "--seed", "4",
                 "--shape", "80", "80", "52", "--spacing", "3", "--no-progress"])
    assert code == 0
    image = nib.load(case_paths(out, case_id(1))["t1c"])
    assert image.shape == (80, 80, 52) and image.header.get_zooms() == (3.0, 3.0, 3.0)
    assert np.array_equal(np.asanyarray(image.dataobj), generate_case(1, 4, (80, 80, 52), 3.0).images["t1c"])


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out-dir", str(tmp_path), "--n-cases", "0"])
    assert exit_info.value.code == 2
    assert "at least 1" in capsys.readouterr().err
    # a seed mismatch on resume is a user error: message, exit 2, no traceback
    main(["synth", "--out-dir", str(tmp_path), "--n-cases", "1", "--shape", "80", "80", "52",
          "--spacing", "3", "--no-progress"])
    code = main(["synth", "--out-dir", str(tmp_path), "--n-cases", "1", "--seed", "9",
                 "--shape", "80", "80", "52", "--spacing", "3", "--no-progress"])
    assert code == 2
    assert "brainmets synth: error: BraTS-MET-00001-000" in capsys.readouterr().err
