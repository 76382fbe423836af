"""configs/paper.yaml end to end on CPU, cut only in size (tests/workflow/paper_smoke.yaml says every cut):
full-size 240x240x155 1 mm synthetic cases, the paper's networks and patches, train-on-detected,
validation on whole volumes choosing the checkpoint every prediction uses, and the tables.

A dry-run proves the DAG; this proves the paper setup's code paths and memory on real-size volumes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "configs" / "paper.yaml"
SMOKE = REPO / "tests" / "workflow" / "paper_smoke.yaml"
SPLIT = REPO / "tests" / "workflow" / "paper_smoke_split.tsv"


@pytest.mark.slow
def test_paper_setup_runs_end_to_end_on_full_size_cases(snakemake):
    shutil.copy(SPLIT, snakemake.workdir / SPLIT.name)  # the override names it relative to the working directory
    results = snakemake.workdir / "results" / "paper"
    run = snakemake("--configfile", str(PAPER), str(SMOKE), "--cores", "2", timeout=3000)
    assert run.returncode == 0, run.output[-6000:]

    splits = pd.read_csv(results / "data" / "splits.tsv", sep="\t")
    assert splits.set_index("case")["split"].to_dict() == pd.read_csv(SPLIT, sep="\t").set_index("case")["split"].to_dict()
    labels = sorted(snakemake.workdir.rglob("*-seg.nii.gz"))
    assert len(labels) == 4
    image = nib.load(labels[0])
    assert image.shape == (240, 240, 155) and tuple(image.header.get_zooms()) == (1.0, 1.0, 1.0)

    # the segmentor trained on what the paper's detector (its best.pt) passed, and says how much
    segmentor = results / "twostage" / "segmentor" / "selected" / "seed0"
    history = pd.read_csv(segmentor / "history.tsv", sep="\t")
    assert history["detector_seen"].tolist() == [1]
    assert history["detector_kept"].isin([0, 1]).all()
    assert history["zero_loss_steps"].tolist() == [1 - history["detector_kept"].iloc[0]]

    # every run validated on the whole val case; best.pt and checkpoints.json say which weights and score
    for run_dir in ["modality/unet/t1c/seed0", "modality/unet/t1c+t1n+t2f/seed0", "baselines/resunet/t1c+t1n+t2f+t2w/seed0",
                    "twostage/detector/selected/seed0", "twostage/segmentor/selected/seed0"]:
        chosen = json.loads((results / run_dir / "checkpoints.json").read_text())
        assert chosen["best"]["basis"] == "best validation score" and chosen["best"]["iteration"] == 1, run_dir
        assert 0 <= chosen["best"]["score"] <= 1, run_dir
    assert json.loads((results / "twostage/detector/selected/seed0/checkpoints.json").read_text())["metric"].startswith("F1")

    # predictions used best.pt (inference.checkpoint: best in configs/paper.yaml), on the paper's windows
    for run_dir in ["modality/unet/t1c/seed0", "twostage/combined/selected/seed0"]:
        for split in ("val", "test"):
            table = pd.read_csv(results / run_dir / "inference" / f"{split}.tsv", sep="\t")
            assert table["checkpoint"].eq("best.pt").all() and table["checkpoint_iteration"].eq(1).all()
            assert len(list((results / run_dir / "predictions" / split).glob("*.nii.gz"))) == 1
    combined = pd.read_csv(results / "twostage/combined/selected/seed0/inference/test.tsv", sep="\t")
    assert combined["detector_checkpoint"].eq("best.pt").all()

    for name in ("table1_modality", "table2_comparison", "efficiency"):
        assert (results / "tables" / f"{name}.csv").stat().st_size > 0, name
