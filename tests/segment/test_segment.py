"""`brainmets segment` end to end: unlabelled cases in, label maps on each case's own grid out."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from brainmets.cli import main as cli_main
from brainmets.config import validate_section
from brainmets.constants import CHECKPOINT_FILES, LABELS
from brainmets.data.preprocess import load_case, preprocess_unlabelled, probabilities_to_original_grid
from brainmets.errors import BrainmetsError
from brainmets.inference import InferenceSettings, predict_single_pass, predict_splits
from brainmets.inference.card import weights_path
from brainmets.inference.labels import regions_to_labels
from brainmets.inference.segment import (
    COLOUR_TABLE,
    find_cases,
    load_model,
    segment,
    segment_case,
)

from ..training.conftest import TINY_CONFIG
from .conftest import CASES, NEW

SETTINGS = InferenceSettings(**validate_section("inference", {"batch_size": 4, "device": "cpu"}))


def model(trained, *names, mirror=False, detectors=()):
    return load_model([trained.runs[n] for n in names], [trained.runs[d] for d in detectors], SETTINGS, mirror)


def snapshot(folder):
    """Every path under ``folder`` with its bytes: to show that a failed call wrote nothing."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def test_unlabelled_folder_gives_labels_on_each_case_grid(tmp_path, trained, new_cases):
    out = tmp_path / "out"
    rc = cli_main(["segment", str(new_cases), "--model", str(trained.runs["unet0"]), "--out", str(out),
                   "--no-mirror", "--device", "cpu", "--no-progress"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{c}.nii.gz" for c in NEW] + ["model.json", COLOUR_TABLE])
    for case in NEW:
        source = nib.load(new_cases / case / f"{case}-t1c.nii.gz")
        result = nib.load(out / f"{case}.nii.gz")
        assert result.shape == source.shape
        np.testing.assert_array_equal(result.affine, source.affine)
        assert result.get_data_dtype() == np.uint8
        labels = np.asanyarray(result.dataobj)
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
    card = json.loads((out / "model.json").read_text())
    assert card["kind"] == "run" and card["subset"] == "t1c+t1n+t2f"
    assert card["channels"] == ["t1n", "t1c", "t2f"]
    assert card["inference"]["mirror"] is False
    assert card["run_dir"] == str(trained.runs["unet0"].resolve())


def test_same_preprocessing_and_labels_as_the_study_path(tmp_path, trained, new_cases):
    """The in-memory preprocessing equals the training cache bit for bit, so segment equals predict."""
    case = NEW[0]
    files = find_cases(new_cases)[case]
    image, meta = preprocess_unlabelled(case, files)
    cached, _, cached_meta = load_case(trained.cache, case)
    np.testing.assert_array_equal(image, cached)
    for key in ("original_shape", "original_affine", "orientation", "crop_start", "crop_stop", "cache_shape",
                "normalization", "cache_affine"):
        assert meta[key] == cached_meta[key], key

    splits = tmp_path / "splits.tsv"
    splits.write_text(f"case\tsplit\n{case}\ttest\n")
    predict_splits(weights_path(trained.runs["unet0"], SETTINGS.checkpoint), trained.cache, splits, ["test"], tmp_path / "predict",
                   SETTINGS, progress=False)
    expected = np.asanyarray(nib.load(tmp_path / "predict" / "predictions" / "test" / f"{case}.nii.gz").dataobj)
    result = segment_case(case, files, model(trained, "unet0"))
    np.testing.assert_array_equal(result.labels, expected)


@pytest.mark.parametrize(("checkpoint", "source", "other"), [("best", "unet1", "unet0"), ("final", "unet0", "unet1")])
def test_each_run_contributes_the_weights_inference_checkpoint_names(tmp_path, trained, new_cases, checkpoint,
                                                                     source, other):
    """As the study's predict rule: best -> best.pt, final -> model.pt, through the API, --config and --checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(trained.runs["unet0"], run)
    shutil.copy(trained.runs["unet1"] / "best.pt", run / "best.pt")  # best and final now hold different weights
    files = find_cases(new_cases)

    def probabilities(runs, settings):
        net = load_model(runs, settings=settings, mirror=False)
        return {case: segment_case(case, files[case], net) for case in NEW}

    got = probabilities([run], dataclasses.replace(SETTINGS, checkpoint=checkpoint))
    expected = probabilities([trained.runs[source]], SETTINGS)
    unexpected = probabilities([trained.runs[other]], SETTINGS)
    for case in NEW:
        np.testing.assert_array_equal(got[case].probabilities, expected[case].probabilities)
        assert not np.allclose(got[case].probabilities, unexpected[case].probabilities)

    config = {**copy.deepcopy(TINY_CONFIG), "inference": {"checkpoint": checkpoint}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    common = ["-m", str(run), "--no-mirror", "--device", "cpu", "--no-progress"]
    assert cli_main(["segment", str(new_cases), *common, "-o", str(tmp_path / "config"),
                     "--config", str(tmp_path / "config.yaml")]) == 0
    assert cli_main(["segment", str(new_cases), *common, "-o", str(tmp_path / "flag"), "--checkpoint", checkpoint]) == 0
    for out in ("config", "flag"):
        for case in NEW:
            labels = np.asanyarray(nib.load(tmp_path / out / f"{case}.nii.gz").dataobj)
            np.testing.assert_array_equal(labels, expected[case].labels)
        card = json.loads((tmp_path / out / "model.json").read_text())
        assert card["inference"]["checkpoint"] == checkpoint
        assert card["checkpoint"]["file"] == CHECKPOINT_FILES[checkpoint]
        assert card["checkpoint"]["sha256"] == card["checkpoints"][checkpoint]["sha256"]


def _reoriented_copy(source_dir, target_dir, case, renamed):
    """The case stored with permuted and flipped axes, as float64: the same image in world space."""
    target_dir.mkdir(parents=True)
    for path in source_dir.glob(f"{case}-*.nii.gz"):
        image = nib.load(path)
        data = np.asanyarray(image.dataobj).astype(np.float64)
        # new[a, b, c] = old[n - 1 - b, c, a]: the affine maps new voxel indices to the old ones first
        data = np.flip(np.transpose(data, (2, 0, 1)), axis=1)
        n = data.shape[1]
        new_to_old = np.zeros((4, 4))
        new_to_old[0, 1], new_to_old[0, 3] = -1, n - 1
        new_to_old[1, 2] = new_to_old[2, 0] = new_to_old[3, 3] = 1
        affine = image.affine @ new_to_old
        out = nib.Nifti1Image(data, affine)
        out.header.set_data_dtype(np.float64)
        out.header.set_qform(affine, code=1)
        out.header.set_sform(affine, code=1)
        nib.save(out, target_dir / path.name.replace(case, renamed))


def test_permuted_flipped_float_case_gives_the_same_labels_in_world_space(tmp_path, trained, new_cases):
    case = NEW[0]
    _reoriented_copy(new_cases / case, tmp_path / "turned" / "turned", case, "turned")
    out = tmp_path / "out"
    net = model(trained, "unet0")
    segment({**find_cases(new_cases), **find_cases(tmp_path / "turned")}, net, out, progress=False)
    original = nib.as_closest_canonical(nib.load(out / f"{case}.nii.gz"))
    turned = nib.as_closest_canonical(nib.load(out / "turned.nii.gz"))
    np.testing.assert_allclose(turned.affine, original.affine, atol=1e-6)
    a, b = np.asanyarray(original.dataobj), np.asanyarray(turned.dataobj)
    assert (a > 0).any()  # the comparison is about a real segmentation
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(nib.load(out / "turned.nii.gz").shape, nib.load(out / f"{case}.nii.gz").shape)


def test_ensemble_is_the_mean_of_its_members_and_uncertainty_their_spread(tmp_path, trained, new_cases):
    case = NEW[1]
    files = find_cases(new_cases)[case]
    singles = [segment_case(case, files, model(trained, name)).probabilities for name in ("unet0", "unet1", "unet2")]
    ensemble = segment_case(case, files, model(trained, "unet0", "unet1", "unet2"))
    np.testing.assert_allclose(ensemble.probabilities, np.mean(singles, axis=0), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ensemble.labels, regions_to_labels(ensemble.probabilities))
    assert not np.allclose(singles[0], singles[1])  # the seeds really differ

    out = tmp_path / "out"
    rc = cli_main(["segment", str(new_cases), "-m", *(str(trained.runs[f"unet{s}"]) for s in range(3)),
                   "-o", str(out), "--no-mirror", "--uncertainty", "--device", "cpu", "--no-progress"])
    assert rc == 0
    spread = nib.load(out / f"{case}_uncertainty.nii.gz")
    assert spread.get_data_dtype() == np.float32
    assert spread.shape == (*ensemble.labels.shape, 3)
    np.testing.assert_array_equal(spread.affine, nib.load(files["t1c"]).affine)
    np.testing.assert_allclose(np.moveaxis(np.asanyarray(spread.dataobj), -1, 0), np.std(singles, axis=0), atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(nib.load(out / f"{case}.nii.gz").dataobj), ensemble.labels)
    card = json.loads((out / "model.json").read_text())
    assert card["kind"] == "ensemble" and len(card["members"]) == 3
    assert [m["training"]["seed"] for m in card["members"]] == [0, 1, 2]


def test_mirroring_averages_the_eight_mirror_images(trained, new_cases):
    case = NEW[0]
    files = find_cases(new_cases)[case]
    plain = segment_case(case, files, model(trained, "unet0", mirror=False))
    mirrored = segment_case(case, files, model(trained, "unet0", mirror=True))
    assert not np.allclose(plain.probabilities, mirrored.probabilities, atol=1e-4)

    net = model(trained, "unet0").members[0].segmentor
    image, meta = preprocess_unlabelled(case, files)
    volume = torch.from_numpy(image)
    flips = [dims for r in range(4) for dims in itertools.combinations((1, 2, 3), r)]
    runtime = model(trained, "unet0").runtime
    expected = sum(
        torch.flip(predict_single_pass(net, torch.flip(volume, dims), SETTINGS, runtime).probabilities, dims)
        for dims in flips
    ) / len(flips)
    expected, _ = probabilities_to_original_grid(expected.numpy(), meta)
    np.testing.assert_allclose(mirrored.probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(plain.probabilities, probabilities_to_original_grid(
        predict_single_pass(net, volume, SETTINGS, runtime).probabilities.numpy(), meta)[0], atol=1e-6)


def test_mirror_axes_choose_the_images_averaged(tmp_path, capsys, trained, new_cases):
    """inference.mirror_axes [0]: the plain prediction and its x flip averaged, nothing else; the card says so."""
    case = NEW[0]
    files = find_cases(new_cases)[case]
    settings = dataclasses.replace(SETTINGS, mirror_axes=[0])
    x_only = load_model([trained.runs["unet0"]], settings=settings, mirror=True)
    mirrored = segment_case(case, files, x_only)

    net, runtime = x_only.members[0].segmentor, x_only.runtime
    image, meta = preprocess_unlabelled(case, files)
    volume = torch.from_numpy(image)
    expected = (predict_single_pass(net, volume, settings, runtime).probabilities
                + torch.flip(predict_single_pass(net, torch.flip(volume, (1,)), settings, runtime).probabilities,
                             (1,))) / 2
    np.testing.assert_allclose(mirrored.probabilities, probabilities_to_original_grid(expected.numpy(), meta)[0],
                               atol=1e-6)
    all_eight = segment_case(case, files, model(trained, "unet0", mirror=True))
    assert not np.allclose(mirrored.probabilities, all_eight.probabilities, atol=1e-4)

    out = tmp_path / "out"
    assert cli_main(["segment", str(new_cases / case), "-m", str(trained.runs["unet0"]), "-o", str(out),
                     "--mirror-axes", "2", "0", "--device", "cpu", "--no-progress"]) == 0
    card = json.loads((out / "model.json").read_text())
    assert card["inference"]["mirror"] is True and card["inference"]["mirror_axes"] == [0, 2]
    assert cli_main(["segment", str(new_cases / case), "-m", str(trained.runs["unet0"]), "-o", str(tmp_path / "o2"),
                     "--mirror-axes", "0", "0", "--device", "cpu", "--no-progress"]) != 0
    assert "--mirror-axes 0 0: each axis once" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_two_stage_pair_and_explicit_files(tmp_path, trained, new_cases):
    case = NEW[0]
    out = tmp_path / "out"
    rc = cli_main(["segment", "--t1c", str(new_cases / case / f"{case}-t1c.nii.gz"),
                   "--t1n", str(new_cases / case / f"{case}-t1n.nii.gz"),
                   "--t2f", str(new_cases / case / f"{case}-t2f.nii.gz"),
                   "-m", str(trained.runs["segmentor"]), "--detector", str(trained.runs["detector"]),
                   "-o", str(out), "--device", "cpu", "--no-progress"])
    assert rc == 0
    labels = nib.load(out / f"{case}.nii.gz")
    assert labels.shape == nib.load(new_cases / case / f"{case}-t1c.nii.gz").shape
    card = json.loads((out / "model.json").read_text())
    assert card["kind"] == "two_stage"
    assert card["detector"]["task"] == "detection" and card["segmentor"]["task"] == "segmentation"
    assert card["inference"]["mirror"] is True


def test_a_sequence_the_model_does_not_use_may_be_absent(tmp_path, trained, new_cases):
    for case in NEW:
        (new_cases / case / f"{case}-t2w.nii.gz").unlink()
    out = tmp_path / "out"
    written = segment(find_cases(new_cases), model(trained, "unet0"), out, progress=False)
    assert [p.name for p in written] == [f"{c}.nii.gz" for c in NEW]


def test_colour_table_is_a_slicer_colour_table(tmp_path, trained, new_cases):
    out = tmp_path / "out"
    segment(find_cases(new_cases), model(trained, "unet0"), out, progress=False)
    lines = (out / COLOUR_TABLE).read_text().splitlines()
    assert lines[0].startswith("# Color table file")
    entries = [line.split() for line in lines if not line.startswith("#")]
    assert [(int(e[0]), e[1]) for e in entries[1:]] == sorted(LABELS.items())
    assert all(len(e) == 6 and all(0 <= int(v) <= 255 for v in e[2:]) for e in entries)


# --------------------------------------------------------------------------- bad input writes nothing


@pytest.mark.parametrize("existing", [False, True])
def test_missing_sequence_names_case_and_file(tmp_path, trained, new_cases, existing, capsys):
    case = NEW[1]
    (new_cases / case / f"{case}-t1c.nii.gz").rename(new_cases / case / f"{case}_t1ce.nii.gz")
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "earlier.nii.gz").write_bytes(b"kept")
    before = snapshot(out)
    rc = cli_main(["segment", str(new_cases), "-m", str(trained.runs["unet0"]), "-o", str(out),
                   "--device", "cpu", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{case}: t1c missing" in err and f"{case}-t1c.nii.gz" in err
    assert f"{case}_t1ce.nii.gz looks like the t1c file" in err
    assert snapshot(out) == before


def test_missing_sequence_in_one_case_folder(tmp_path, trained, new_cases):
    case = NEW[0]
    (new_cases / case / f"{case}-t2f.nii.gz").unlink()
    with pytest.raises(BrainmetsError, match=re.escape(f"{case}: t2f missing (expected {new_cases / case / case}-t2f")):
        segment(find_cases(new_cases / case), model(trained, "unet0"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_unreadable_file_fails_and_writes_nothing(tmp_path, trained, new_cases):
    case = NEW[1]  # the second case: the first is segmented before the bad file is read
    path = new_cases / case / f"{case}-t2f.nii.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BrainmetsError, match=f"{case}: .*{re.escape(str(path))}"):
        segment(find_cases(new_cases), model(trained, "unet0"), out, progress=False)
    assert list(out.iterdir()) == []


def test_empty_folder(tmp_path, trained):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BrainmetsError, match="no case directories"):
        segment(find_cases(tmp_path / "empty"), model(trained, "unet0"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_t1c_model_on_a_folder_without_t1c(tmp_path, trained, new_cases, capsys):
    for case in NEW:
        (new_cases / case / f"{case}-t1c.nii.gz").unlink()
    rc = cli_main(["segment", str(new_cases), "-m", str(trained.runs["t1c"]), "-o", str(tmp_path / "out"),
                   "--device", "cpu", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "the model needs t1c" in err and all(f"{case}: t1c missing" in err for case in NEW)
    assert not (tmp_path / "out").exists()


def test_ensemble_members_must_share_subset_and_preprocessing(tmp_path, trained):
    with pytest.raises(BrainmetsError, match="differ in modality subset"):
        model(trained, "unet0", "t1c")
    other = tmp_path / "unet1_2mm"
    shutil.copytree(trained.runs["unet1"], other)
    assert cli_main(["card", str(other), "--spacing", "2", "2", "2"]) == 0
    with pytest.raises(BrainmetsError, match="differ in preprocessing"):
        load_model([trained.runs["unet0"], other], settings=SETTINGS)


def test_stale_or_wrong_card_is_refused(tmp_path, trained):
    run = tmp_path / "run"
    shutil.copytree(trained.runs["unet1"], run)
    assert cli_main(["card", str(run)]) == 0
    final = dataclasses.replace(SETTINGS, checkpoint="final")
    shutil.copy(trained.runs["unet2"] / "best.pt", run / "best.pt")
    with pytest.raises(BrainmetsError, match=f"does not match {re.escape(str(run / 'best.pt'))}"):
        load_model([run], settings=SETTINGS)
    load_model([run], settings=final)  # the card still describes model.pt
    shutil.copy(trained.runs["unet2"] / "model.pt", run / "model.pt")
    with pytest.raises(BrainmetsError, match=f"does not match {re.escape(str(run / 'model.pt'))}"):
        load_model([run], settings=final)
    with pytest.raises(BrainmetsError, match="detection model.*--detector"):
        load_model([trained.runs["detector"]], settings=SETTINGS)
    with pytest.raises(BrainmetsError, match="uncertainty"):
        segment({}, model(trained, "unet0"), tmp_path / "out", uncertainty=True, source=tmp_path, progress=False)


def test_postprocessing_recorded_in_the_card_is_applied_and_can_be_turned_off(tmp_path, trained, new_cases):
    from brainmets.inference.postprocess import DECISION_FORMAT, remove_small_components

    run = tmp_path / "run"
    shutil.copytree(trained.runs["unet0"], run)
    decision = tmp_path / "postprocessing.json"
    decision.write_text(json.dumps({"format": DECISION_FORMAT, "chosen_on": "val",
                                    "min_volume_mm3": {"WT": 60.0, "TC": 20.0, "ET": 10.0}}))
    assert cli_main(["card", str(run), "--postprocessing", str(decision)]) == 0
    common = ["--no-mirror", "--device", "cpu", "--no-progress"]
    assert cli_main(["segment", str(new_cases), "-m", str(run), "-o", str(tmp_path / "pp"), *common]) == 0
    assert cli_main(["segment", str(new_cases), "-m", str(run), "-o", str(tmp_path / "raw"),
                     "--no-postprocessing", *common]) == 0
    card = json.loads((tmp_path / "pp" / "model.json").read_text())
    assert card["postprocessing"]["min_volume_mm3"] == {"WT": 60.0, "TC": 20.0, "ET": 10.0}
    assert card["postprocessing"]["chosen_on"] == "val"
    assert json.loads((tmp_path / "raw" / "model.json").read_text())["postprocessing"] is None
    changed = 0
    for case in NEW:
        raw = nib.load(tmp_path / "raw" / f"{case}.nii.gz")
        cleaned = np.asanyarray(nib.load(tmp_path / "pp" / f"{case}.nii.gz").dataobj)
        expected = remove_small_components(np.asanyarray(raw.dataobj), card["postprocessing"]["min_volume_mm3"],
                                           raw.header.get_zooms()[:3])
        np.testing.assert_array_equal(cleaned, expected)
        changed += int((cleaned != np.asanyarray(raw.dataobj)).sum())
    assert changed > 0


def test_segment_the_cases_of_given_splits(tmp_path, trained):
    splits = tmp_path / "splits.tsv"
    splits.write_text("case\tsplit\n" + "".join(f"{c}\t{'test' if s == 'new' else s}\n" for c, s, _, _ in CASES))
    out = tmp_path / "out"
    assert cli_main(["segment", str(trained.raw), "-m", str(trained.runs["unet0"]), "-o", str(out),
                     "--splits", str(splits), "--split", "val", "test", "--no-mirror", "--device", "cpu",
                     "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "val").glob("*.nii.gz")) == [f"{c}.nii.gz" for c, s, _, _ in CASES
                                                                      if s == "val"]
    assert sorted(p.name for p in (out / "test").glob("*.nii.gz")) == [f"{c}.nii.gz" for c in NEW]
