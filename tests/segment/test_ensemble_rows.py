"""`brainmets ensemble`: one job gives, byte for byte, what the separate segment / tune / apply / evaluate jobs gave."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from brainmets.cli import main as cli_main
from brainmets.inference.segment import find_cases, segment_case, segment_case_variants

from .conftest import CASES, NEW
from .test_segment import model

GRID = ["5", "50"]
VARIANTS = ("mean", "mirror", "mirror_pp")


def _splits(tmp_path):
    """Two val and two test cases of the labelled raw cases (the rest train)."""
    names = [case for case, *_ in CASES]
    path = tmp_path / "splits.tsv"
    pd.DataFrame({"case": names, "split": ["train", "val", "test", "val", "test"]}).to_csv(path, sep="\t", index=False)
    return path


def _members(trained, name):
    if name == "seeds":
        return ["--model", *(str(trained.runs[f"unet{s}"]) for s in range(3))]
    return ["--model", str(trained.runs["segmentor"]), "--detector", str(trained.runs["detector"])]


def _separate_jobs(out, cohort, splits, members):
    """The commands of the former segment_ensemble (x2), tune_postprocessing, postprocess_ensemble and
    evaluate_ensemble (x6) rules, in their order."""
    common = ["--splits", str(splits), "--split", "val", "test", "--no-postprocessing", "--device", "cpu",
              "--no-progress"]
    for variant, mirror in (("mean", "--no-mirror"), ("mirror", "--mirror")):
        assert cli_main(["segment", str(cohort), *members, "--out", str(out / variant / "predictions"), mirror,
                         *common]) == 0
    assert cli_main(["postprocess", "tune", "--pred-dir", str(out / "mirror" / "predictions" / "val"),
                     "--gt-dir", str(cohort), "--splits", str(splits), "--split", "val", "--grid", *GRID,
                     "--out", str(out / "postprocessing.json")]) == 0
    assert cli_main(["postprocess", "apply", "--decision", str(out / "postprocessing.json"), "--in-dir",
                     str(out / "mirror" / "predictions"), "--out-dir", str(out / "mirror_pp" / "predictions"),
                     "--subdirs", "val", "test"]) == 0
    for variant in VARIANTS:
        for split in ("val", "test"):
            metrics = out / variant / "metrics"
            assert cli_main(["evaluate", "--pred-dir", str(out / variant / "predictions" / split), "--gt-dir",
                             str(cohort), "--out", str(metrics / f"{split}.tsv"), "--lesions-out",
                             str(metrics / f"{split}_lesions.tsv"), "--cases-from", str(splits), "--split", split,
                             "--workers", "1"]) == 0


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("members", ["seeds", "two-stage"])
def test_one_job_writes_the_bytes_of_the_separate_jobs(tmp_path, trained, members):
    splits = _splits(tmp_path)
    _separate_jobs(tmp_path / "old", trained.raw, splits, _members(trained, members))
    new = tmp_path / "new"
    assert cli_main(["ensemble", str(trained.raw), *_members(trained, members), "--splits", str(splits),
                     "--grid", *GRID, "--out", str(new), "--device", "cpu", "--no-progress"]) == 0

    old_files, new_files = _files(tmp_path / "old"), _files(new)
    assert sorted(old_files) == sorted(new_files)
    for variant in VARIANTS:
        for split in ("val", "test"):
            assert f"{variant}/metrics/{split}.tsv" in new_files
            assert len([f for f in new_files if f.startswith(f"{variant}/predictions/{split}/BraTS")]) == 2
    # the decision names the folder it was tuned on; everything else is the same
    old_decision = json.loads(old_files.pop("postprocessing.json"))
    new_decision = json.loads(new_files.pop("postprocessing.json"))
    assert new_decision.pop("predictions") == str(new / "mirror" / "predictions" / "val")
    old_decision.pop("predictions")
    assert new_decision == old_decision and new_decision["chosen_on"] == "val" and new_decision["n_cases"] == 2
    different = [name for name in old_files if old_files[name] != new_files[name]]
    assert not different, different


def test_both_variants_from_one_pass_are_the_separate_models_floats(trained, new_cases):
    """Not only the same labels: the same probabilities, to the bit (the plain prediction is the identity
    image of the mirror average, whose sum keeps its order)."""
    case = NEW[0]
    files = find_cases(new_cases)[case]
    seeds = ("unet0", "unet1", "unet2")
    both = segment_case_variants(case, files, model(trained, *seeds, mirror=True))
    for mirror in (False, True):
        alone = segment_case(case, files, model(trained, *seeds, mirror=mirror))
        np.testing.assert_array_equal(both[mirror].probabilities, alone.probabilities)
        np.testing.assert_array_equal(both[mirror].member_probabilities, alone.member_probabilities)
        np.testing.assert_array_equal(both[mirror].labels, alone.labels)
    assert not np.array_equal(both[False].probabilities, both[True].probabilities)


def test_bad_input_names_the_problem_and_writes_nothing(tmp_path, trained, capsys):
    splits = _splits(tmp_path)
    cohort = tmp_path / "cohort"
    shutil.copytree(trained.raw, cohort)
    missing = cohort / CASES[3][0] / f"{CASES[3][0]}-t2f.nii.gz"
    missing.unlink()
    out = tmp_path / "out"
    args = ["ensemble", str(cohort), *_members(trained, "seeds"), "--splits", str(splits), "--grid", *GRID,
            "--out", str(out), "--device", "cpu", "--no-progress"]
    assert cli_main(args) == 2
    error = capsys.readouterr().err
    assert f"{CASES[3][0]}: t2f missing (expected {missing})" in error, error
    assert not out.exists()

    # the tuning split is never left out: refused before any work
    assert cli_main([*args, "--split", "test"]) == 2
    assert "postprocessing is tuned on the val split" in capsys.readouterr().err
    assert not out.exists()


def test_the_study_postprocessing_reaches_the_mean_and_mirror_rows_after_the_tuning(tmp_path, trained):
    """With --config, the mean and mirror rows get the config's minimum volumes, as every single run's
    prediction does; the tuning (and so mirror_pp) still sees the untouched mirrored predictions."""
    import nibabel as nib
    import yaml

    from brainmets.inference.postprocess import apply_to_dir

    from .conftest import _config

    splits = _splits(tmp_path)
    outs = {}
    for name, minimum in (("none", 0), ("study", 1e9)):
        config = _config()
        config["postprocessing"] = {"min_volume_mm3": {"WT": minimum, "TC": 0, "ET": 0}}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        outs[name] = tmp_path / name
        assert cli_main(["ensemble", str(trained.raw), *_members(trained, "seeds"), "--splits", str(splits),
                         "--grid", *GRID, "--out", str(outs[name]), "--config", str(path), "--device", "cpu",
                         "--no-progress"]) == 0
    untouched, study = _files(outs["none"]), _files(outs["study"])
    assert json.loads(untouched["postprocessing.json"])["min_volume_mm3"] == \
        json.loads(study["postprocessing.json"])["min_volume_mm3"]
    for name in untouched:
        if name.startswith("mirror_pp/predictions/"):
            assert untouched[name] == study[name], name
    expected = tmp_path / "expected"
    for variant in ("mean", "mirror"):
        for split in ("val", "test"):
            source = outs["none"] / variant / "predictions" / split
            apply_to_dir({"min_volume_mm3": {"WT": 1e9}}, source, expected / variant / split)
            for label in sorted(source.glob("*.nii.gz")):
                assert np.asanyarray(nib.load(label).dataobj).any(), f"{label}: nothing predicted to remove"
                got = outs["study"] / variant / "predictions" / split / label.name
                assert not np.asanyarray(nib.load(got).dataobj).any(), got
                assert (expected / variant / split / label.name).read_bytes() == got.read_bytes()
            card = json.loads((outs["study"] / variant / "predictions" / split / "model.json").read_text())
            assert card["postprocessing"]["min_volume_mm3"] == {"WT": 1e9, "TC": 0, "ET": 0}
    # the metrics follow the labels: an empty WT has no true positive lesion
    metrics = pd.read_csv(outs["study"] / "mean" / "metrics" / "test.tsv", sep="\t")
    wt = metrics[metrics["region"] == "WT"]
    assert (wt["num_tp"] == 0).all() and (wt["pred_volume"] == 0).all()
