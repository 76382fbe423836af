"""Model cards: built from a run's files, rewritten by `brainmets card`, summarising metrics when present."""

from __future__ import annotations

import hashlib
import json
import shutil

import pandas as pd
import pytest
import yaml

from brainmets.cli import main as cli_main
from brainmets.errors import BrainmetsError
from brainmets.inference.card import build_run_card, read_run_card


def test_card_of_a_run_from_its_files(trained):
    run = trained.runs["unet1"]
    card = build_run_card(run)
    info = json.loads((run / "model_info.json").read_text())
    assert card["kind"] == "run" and card["task"] == "segmentation"
    assert card["network"]["name"] == "unet" and card["network"]["arch"] == "dynunet"
    assert card["network"]["parameters"] == info["parameters"] > 0
    assert card["subset"] == "t1c+t1n+t2f" and card["channels"] == ["t1n", "t1c", "t2f"]
    assert card["patch"] == info["patch"]
    assert card["preprocessing"]["spacing_mm"] is None  # the training cache kept the native grid
    assert card["training"]["seed"] == 1 and card["training"]["iterations"] == 4
    assert card["training"]["config_sha256"] == hashlib.sha256((run / "config.yaml").read_bytes()).hexdigest()
    chosen = json.loads((run / "checkpoints.json").read_text())
    for choice, name in (("final", "model.pt"), ("best", "best.pt")):
        assert card["checkpoints"][choice] == {**chosen[choice], "file": name,
                                               "sha256": hashlib.sha256((run / name).read_bytes()).hexdigest()}
    assert card["metrics"] == {}  # not evaluated
    assert {"python", "torch", "monai", "brainmets"} <= set(card["software"])
    assert build_run_card(trained.runs["detector"])["network"]["outputs"] == ["tumour-in-window logit"]


def test_card_summarises_metrics_and_is_rewritten_by_the_verb(tmp_path, trained):
    run = tmp_path / "run"
    shutil.copytree(trained.runs["unet0"], run)
    (run / "metrics").mkdir()
    pd.DataFrame({
        "case": ["a", "a", "b", "b"], "region": ["WT", "ET", "WT", "ET"],
        "legacy_dice": [0.8, 0.5, 0.6, 0.7], "legacy_hd95": [3.0, 5.0, 4.0, float("inf")],
        "lesion_dice": [0.7, 0.4, 0.5, 0.6], "lesion_hd95": [10.0, 20.0, 30.0, 40.0],
    }).to_csv(run / "metrics" / "val.tsv", sep="\t", index=False)
    assert cli_main(["card", str(run)]) == 0
    card = json.loads((run / "model.json").read_text())
    assert card["metrics"]["val"]["cases"] == 2
    assert card["metrics"]["val"]["mean_by_region"]["WT"]["legacy_dice"] == pytest.approx(0.7)
    assert card["metrics"]["val"]["mean_by_region"]["ET"]["legacy_hd95"] is None  # not finite
    assert "test" not in card["metrics"]
    assert read_run_card(run, "best") == {**card, "checkpoint": {"choice": "best", **card["checkpoints"]["best"]}}


def test_card_needs_the_spacing_once_the_cache_is_gone(tmp_path, trained, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained.runs["unet0"], run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["cache"] = str(tmp_path / "gone")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert cli_main(["card", str(run)]) == 2
    assert "--spacing" in capsys.readouterr().err
    assert not (run / "model.json").exists()
    with pytest.raises(BrainmetsError, match="--spacing"):
        read_run_card(run, "best")
    assert cli_main(["card", str(run), "--native"]) == 0
    assert read_run_card(run, "best")["preprocessing"]["spacing_mm"] is None


def test_not_a_run(tmp_path, trained):
    with pytest.raises(BrainmetsError, match="not found"):
        read_run_card(tmp_path / "nothing", "best")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BrainmetsError, match="no model.pt"):
        read_run_card(tmp_path / "empty", "final")
    run = tmp_path / "run"
    shutil.copytree(trained.runs["unet0"], run)
    (run / "model.json").write_text("{}")
    with pytest.raises(BrainmetsError, match="not a run's model card"):
        read_run_card(run, "best")


def test_a_run_without_the_chosen_weights(tmp_path, trained):
    run = tmp_path / "run"
    shutil.copytree(trained.runs["unet0"], run)
    (run / "best.pt").unlink()
    with pytest.raises(BrainmetsError, match=r"holds no best\.pt, the weights inference\.checkpoint: best names"):
        read_run_card(run, "best")
    assert read_run_card(run, "final")["checkpoint"]["file"] == "model.pt"
    with pytest.raises(BrainmetsError, match="inference.checkpoint is 'last'"):
        read_run_card(run, "last")


def test_a_moved_run_keeps_its_card(tmp_path, trained):
    first = tmp_path / "first"
    shutil.copytree(trained.runs["unet2"], first)
    assert cli_main(["card", str(first)]) == 0
    moved = tmp_path / "moved"
    first.rename(moved)
    card = read_run_card(moved, "final")
    assert card["run_dir"] == str(moved.resolve()) and card["training"]["seed"] == 2
