"""configs/paper.yaml end to end on CPU, cut only in size (tests/workflow/paper_smoke.yaml states every cut):
full-size 240x240x155 1 mm synthetic cases, the paper's networks and patches, train-on-detected,
validation on whole volumes choosing the checkpoint every prediction uses, and the tables.

A dry-run proves the DAG; this proves the paper setup's code paths and memory on real-size volumes.
It is the suite's longest test (README, "A paper-setup smoke run", says how long it takes).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "configs" / "paper.yaml"
SMOKE = REPO / "tests" / "workflow" / "paper_smoke.yaml"
SPLIT = REPO / "tests" / "workflow" / "paper_smoke_split.tsv"

BASELINE = yaml.safe_load(SMOKE.read_text())["baselines"]["models"][0]
SUBSETS = yaml.safe_load(SMOKE.read_text())["modality_study"]["subsets"]
#: runs predicted by their training job, and the two-stage model predicted by its own
SINGLE_PASS = [f"modality/unet/{subset}/seed0" for subset in SUBSETS] + [f"baselines/{BASELINE}/t1c+t1n+t2f+t2w/seed0"]
TWO_STAGE = ["twostage/detector/selected/seed0", "twostage/segmentor/selected/seed0"]
COMBINED = "twostage/combined/selected/seed0"
#: rules every paper-setup run has (evaluation may happen inside these jobs or in rules of its own)
RULES = {"synthesise", "index", "split", "preprocess_case", "preprocess_all", "train_modality", "select_subset",
         "train_detector", "train_segmentor", "predict_twostage", "train_baseline", "tables", "figures", "all"}


@pytest.mark.slow
def test_paper_setup_runs_end_to_end_on_full_size_cases(snakemake):
    results = snakemake.workdir / "results" / "paper"
    configs = ("--configfile", str(PAPER), str(SMOKE))
    run = snakemake(*configs, "--cores", "2", timeout=3600)
    assert run.returncode == 0, run.output[-6000:]
    assert RULES <= {rule for rule, _ in run.jobs()}, sorted({rule for rule, _ in run.jobs()})
    again = snakemake(*configs, "-n", timeout=300)
    assert again.returncode == 0 and "Nothing to be done" in again.output, again.output[-3000:]

    # the split file's three cases, full size at 1 mm
    splits = pd.read_csv(results / "data" / "splits.tsv", sep="\t").set_index("case")["split"].to_dict()
    assert splits == pd.read_csv(SPLIT, sep="\t").set_index("case")["split"].to_dict()
    truth = {case: nib.load(snakemake.workdir / "results" / "synthetic" / case / f"{case}-seg.nii.gz")
             for case in splits}
    for image in truth.values():
        assert image.shape == (240, 240, 155) and tuple(image.header.get_zooms()) == (1.0, 1.0, 1.0)

    # every run validated once, on the whole val case; best.pt and checkpoints.json say which weights and score
    for run_dir in SINGLE_PASS + TWO_STAGE:
        chosen = json.loads((results / run_dir / "checkpoints.json").read_text())
        assert chosen["best"]["basis"] == "best validation score" and chosen["best"]["iteration"] == 1, run_dir
        assert 0 <= chosen["best"]["score"] <= 1 and (results / run_dir / "best.pt").is_file(), run_dir
    detector = json.loads((results / TWO_STAGE[0] / "checkpoints.json").read_text())
    assert detector["metric"].startswith("F1")

    # the segmentor trained on what the detector's best.pt passed, and says how much
    history = pd.read_csv(results / TWO_STAGE[1] / "history.tsv", sep="\t")
    assert history["detector_seen"].tolist() == [1]
    assert history["detector_kept"].isin([0, 1]).all()
    assert history["zero_loss_steps"].tolist() == [1 - history["detector_kept"].iloc[0]]

    # predictions with best.pt on the full grid and the case's affine; metrics of every evaluated run
    for run_dir in SINGLE_PASS + [COMBINED]:
        for split in ("val", "test"):
            (case,) = [c for c, s in splits.items() if s == split]
            table = pd.read_csv(results / run_dir / "inference" / f"{split}.tsv", sep="\t")
            assert table["case"].tolist() == [case], (run_dir, split)
            assert table["checkpoint"].eq("best.pt").all() and table["checkpoint_iteration"].eq(1).all()
            prediction = nib.load(results / run_dir / "predictions" / split / f"{case}.nii.gz")
            assert prediction.shape == (240, 240, 155), (run_dir, split)
            np.testing.assert_allclose(prediction.affine, truth[case].affine, atol=1e-5)
            assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2, 3}
            metrics = pd.read_csv(results / run_dir / "metrics" / f"{split}.tsv", sep="\t")
            assert set(metrics["case"]) == {case}, (run_dir, split)
    combined = pd.read_csv(results / COMBINED / "inference" / "test.tsv", sep="\t")
    assert combined["detector_checkpoint"].eq("best.pt").all()

    # the selection chose the study's subset; the tables have their rows
    decision = json.loads((results / "selection" / "modality.json").read_text())
    assert decision["chosen_subset"] in SUBSETS
    assert len(pd.read_csv(results / "tables" / "table1_modality.csv")) == len(SUBSETS)
    table2 = pd.read_csv(results / "tables" / "table2_comparison.csv")
    assert sorted(table2["run"]) == sorted(run.removesuffix("/seed0") for run in [SINGLE_PASS[-1], COMBINED])
    for name in ("efficiency", "table2_significance", "detection"):
        assert (results / "tables" / f"{name}.csv").stat().st_size > 0, name
