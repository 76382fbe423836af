"""End to end: cached cases + model files -> NIfTI label maps on the original grid and inference tables."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from brainmets.cli import main as cli_main
from brainmets.errors import BrainmetsError
from brainmets.config import ConfigError
from brainmets.inference import TABLE_COLUMNS, TWO_STAGE_COLUMNS, predict_splits

from .conftest import CASES, DETECTOR, SEGMENTOR, UNET, inference_settings


def _check_predictions(out_dir, cohort, splits=("val", "test")):
    for case, split, shape, _ in CASES:
        if split not in splits:
            continue
        path = out_dir / "predictions" / split / f"{case}.nii.gz"
        image = nib.load(path)
        source = nib.load(cohort["sources"][case]["seg"])
        assert image.shape == shape
        np.testing.assert_allclose(image.affine, source.affine, atol=1e-5)
        data = np.asanyarray(image.dataobj)
        assert data.dtype == np.uint8
        assert set(np.unique(data)) <= {0, 1, 2, 3}
    assert not list(out_dir.rglob(".*.part*"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("cache", ["cache", "cache_2mm"])
def test_single_pass_writes_original_grid_labels_and_table(tmp_path, cohort, model_files, cache):
    settings = inference_settings(batch_size=2, device="cpu")
    tables = predict_splits(
        model_files["unet"], cohort[cache], cohort["splits"], ["val", "test"], tmp_path, settings, progress=False
    )
    _check_predictions(tmp_path, cohort)
    for split in ("val", "test"):
        table = pd.read_csv(tmp_path / "inference" / f"{split}.tsv", sep="\t")
        assert list(table.columns) == list(TABLE_COLUMNS)
        assert len(table) == 1 and table.loc[0, "mode"] == "single_pass"
        row = table.iloc[0]
        assert row["windows_total"] == row["windows_kept"] >= 1 and row["fraction_kept"] == 1.0
        assert row["flops"] == pytest.approx(row["flops_single_pass"]) and row["flops"] > 0
        assert row["flops"] == pytest.approx(row["gmac_per_window"] * 2e9 * row["windows_total"])
        assert tables[split]["case"].tolist() == table["case"].tolist() == [c for c, s, _, _ in CASES if s == split]
        # which weights predicted: the file and the training iteration saved with it (no validation score)
        assert (row["checkpoint"], row["checkpoint_iteration"]) == (model_files["unet"].name, 1)
        assert pd.isna(row["checkpoint_score"])


def _config(tmp_path, **inference):
    config = {
        "models": {"unet": UNET, "segmentor": SEGMENTOR, "detector": DETECTOR},
        "modality_study": {"model": "unet"},
        "inference": {"overlap": 0.5, "detector_threshold": 0.0, "batch_size": 3, "device": "cpu", **inference},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_stage_cli_records_kept_windows_and_flops(tmp_path, cohort, model_files, capsys):
    out = tmp_path / "twostage"
    argv = [
        "predict", "--config", str(_config(tmp_path)), "--model", str(model_files["segmentor"]),
        "--detector", str(model_files["detector_accept_all"]), "--cache", str(cohort["cache"]),
        "--splits", str(cohort["splits"]), "--split", "val", "test", "--out-dir", str(out), "--no-progress",
    ]
    assert cli_main(argv) == 0
    assert "val: 1 cases" in capsys.readouterr().out
    _check_predictions(out, cohort)
    table = pd.read_csv(out / "inference" / "val.tsv", sep="\t")
    assert list(table.columns) == list(TABLE_COLUMNS) + list(TWO_STAGE_COLUMNS)
    row = table.iloc[0]
    assert row["mode"] == "two_stage" and row["windows_kept"] == row["windows_total"] > 1
    assert row["fraction_kept"] == pytest.approx(row["windows_kept"] / row["windows_total"])
    assert row["flops"] == pytest.approx(row["flops_detector"] + row["flops_segmentor"])
    # the reference is the config's modality-study U-Net, run (on paper) with MONAI's sliding window
    assert row["single_pass_model"] == "unet" and row["flops_single_pass"] > 0
    assert row["detector_checkpoint"] == model_files["detector_accept_all"].name
    assert row["detector_checkpoint_iteration"] == row["checkpoint_iteration"] == 1


def test_two_stage_cli_evaluates_its_predictions_as_brainmets_evaluate(tmp_path, cohort, model_files, capsys):
    """--evaluate-gt (the workflow's predict_twostage): each split's metric files, byte for byte those of a
    separate `brainmets evaluate`; a ground truth lacking a predicted case fails the command naming it."""
    raw = cohort["root"] / "raw"
    config = _config(tmp_path)

    def predict(splits, out_dir, gt):
        return cli_main([
            "predict", "--config", str(config), "--model", str(model_files["segmentor"]),
            "--detector", str(model_files["detector_accept_all"]), "--cache", str(cohort["cache"]),
            "--splits", str(cohort["splits"]), "--split", *splits, "--out-dir", str(out_dir), "--no-progress",
            "--evaluate-gt", str(gt),
        ])

    out = tmp_path / "twostage"
    assert predict(["val", "test"], out, raw) == 0
    assert f"evaluated 1 case(s) -> {out / 'metrics' / 'test.tsv'}" in capsys.readouterr().out
    alone = tmp_path / "alone"
    for split in ("val", "test"):
        assert cli_main(["evaluate", "--pred-dir", str(out / "predictions" / split), "--gt-dir", str(raw),
                         "--out", str(alone / f"{split}.tsv"), "--lesions-out", str(alone / f"{split}_lesions.tsv"),
                         "--cases-from", str(cohort["splits"]), "--split", split]) == 0
        for name in (f"{split}.tsv", f"{split}_lesions.tsv"):
            assert (out / "metrics" / name).read_bytes() == (alone / name).read_bytes(), name

    test_case = next(c for c, split, _, _ in CASES if split == "test")
    partial = tmp_path / "partial"
    shutil.copytree(raw, partial, ignore=lambda folder, names: [n for n in names if n == test_case])
    failed = tmp_path / "failed"
    capsys.readouterr()
    assert predict(["test"], failed, partial) == 2
    err = capsys.readouterr().err
    assert test_case in err and "no ground truth" in err, err
    assert not (failed / "metrics" / "test.tsv").exists() and not list(failed.rglob(".*.part*"))


def test_config_postprocessing_removes_small_components_before_writing(tmp_path, cohort, model_files):
    """The CLI reads the config's postprocessing minima: a WT minimum above any component clears the map."""
    def predict(out, **config_keys):
        config = _config(tmp_path)
        config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), **config_keys}))
        argv = ["predict", "--config", str(config), "--model", str(model_files["unet"]), "--cache", str(cohort["cache"]),
                "--splits", str(cohort["splits"]), "--split", "val", "--out-dir", str(out), "--no-progress"]
        assert cli_main(argv) == 0
        case = next(c for c, split, _, _ in CASES if split == "val")
        return np.asanyarray(nib.load(out / "predictions" / "val" / f"{case}.nii.gz").dataobj)

    plain = predict(tmp_path / "plain")
    assert plain.any()  # the random network labels something, so removing it shows
    cleared = predict(tmp_path / "cleared", postprocessing={"min_volume_mm3": {"WT": 1.0e9}})
    assert not cleared.any()
    zero = predict(tmp_path / "zero", postprocessing={"min_volume_mm3": {"WT": 0, "TC": 0, "ET": 0}})
    np.testing.assert_array_equal(zero, plain)


def test_two_stage_with_a_rejecting_detector_predicts_background(tmp_path, cohort, model_files):
    from .conftest import save_model

    rejecting = save_model(tmp_path / "reject" / "model.pt", "detector", DETECTOR, "detection", -50.0)
    settings = inference_settings(batch_size=4, device="cpu")
    tables = predict_splits(
        model_files["segmentor"], cohort["cache"], cohort["splits"], ["test"], tmp_path / "out", settings,
        detector_path=rejecting, progress=False,
    )
    row = tables["test"].iloc[0]
    assert row["windows_kept"] == 0 and row["flops_segmentor"] == 0 and row["flops"] > 0
    case = next(c for c, split, _, _ in CASES if split == "test")
    data = np.asanyarray(nib.load(tmp_path / "out" / "predictions" / "test" / f"{case}.nii.gz").dataobj)
    assert not data.any()


def test_wrong_model_kinds_and_settings_are_clear_errors(tmp_path, cohort, model_files):
    common = dict(cache_dir=cohort["cache"], splits_path=cohort["splits"], splits=["val"], out_dir=tmp_path, progress=False)
    with pytest.raises(BrainmetsError, match="holds a detection model.*expected segmentation"):
        predict_splits(model_files["detector"], settings=inference_settings(device="cpu"), **common)
    with pytest.raises(BrainmetsError, match="holds a segmentation model.*expected detection"):
        predict_splits(model_files["unet"], detector_path=model_files["unet"], settings=inference_settings(device="cpu"), **common)
    with pytest.raises(ConfigError, match=r"unknown config key inference.overlapp \(did you mean inference.overlap\?\)"):
        inference_settings(overlapp=0.5)
    with pytest.raises(ConfigError, match="inference.overlap: 1.0 is greater than or equal to the maximum of 1"):
        inference_settings(overlap=1.0)
    with pytest.raises(BrainmetsError, match="not found"):
        predict_splits(tmp_path / "nope.pt", settings=inference_settings(device="cpu"), **common)
