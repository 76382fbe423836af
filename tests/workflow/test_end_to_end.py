"""The whole workflow, for real, on a toy study (tests/workflow/reduced.yaml merged over config.yaml):
synthetic cohort -> index -> split -> cache -> 2 modality subsets, the two-stage model with the
selected subset and all four sequences, one baseline (1 seed, 3 steps each) -> predictions ->
evaluation -> selection -> seed ensembles (+ mirroring, + postprocessing tuned on val) -> every table
and figure -> the HTML report; then nothing is left to do,
and a changed setting reruns exactly the jobs that depend on it.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
REDUCED = REPO / "tests" / "workflow" / "reduced.yaml"

TABLES = ["table1_modality", "table2_comparison", "table2_significance", "efficiency", "detection"]
FIGURES = ["patients_per_split", "modality_heatmap", "qualitative", "training_modality",
           "training_twostage", "training_baselines"]
RUNS = [
    "modality/unet/t1c/seed0",
    "modality/unet/t1n+t2f/seed0",
    "twostage/combined/selected/seed0",
    "twostage/combined/t1c+t1n+t2f+t2w/seed0",
    "baselines/resunet/t1c+t1n+t2f+t2w/seed0",
]

ENSEMBLES = [f"ensembles/{member}/{variant}" for member in ("twostage/selected", "modality/t1c")
             for variant in ("mean", "mirror", "mirror_pp")]


@pytest.mark.slow
def test_reduced_study_runs_end_to_end(snakemake):
    results = snakemake.workdir / "results"
    run = snakemake("--configfile", str(REDUCED), "--cores", "2", timeout=1200)
    assert run.returncode == 0, _failure_report(run, results)
    # never more threads at once than --cores, also after the index checkpoint (test_scheduling.py)
    assert run.max_cores_in_use() <= 2, run.output

    # data
    splits = pd.read_csv(results / "data" / "splits.tsv", sep="\t")
    assert len(splits) == 8 and set(splits["split"]) == {"train", "val", "test"}
    assert len(list((results / "data" / "preprocessed").glob("*.npy"))) == 8
    # the resolved config the jobs read, and the MLflow store created before them
    assert (results / "config.resolved.yaml").is_file()
    assert (results / "mlflow").is_dir()

    # every trained model, every prediction and metric file
    for trained in ["modality/unet/t1c/seed0", "modality/unet/t1n+t2f/seed0",
                    "twostage/detector/selected/seed0", "twostage/segmentor/selected/seed0",
                    "twostage/detector/t1c+t1n+t2f+t2w/seed0", "twostage/segmentor/t1c+t1n+t2f+t2w/seed0",
                    "baselines/resunet/t1c+t1n+t2f+t2w/seed0"]:
        assert (results / trained / "model.pt").is_file(), trained
    for run_dir in RUNS:
        for split in ("val", "test"):
            n_cases = int((splits["split"] == split).sum())
            assert len(list((results / run_dir / "predictions" / split).glob("*.nii.gz"))) == n_cases
            metrics = pd.read_csv(results / run_dir / "metrics" / f"{split}.tsv", sep="\t")
            assert metrics["case"].nunique() == n_cases, (run_dir, split)
            assert (results / run_dir / "inference" / f"{split}.tsv").is_file()

    decision = json.loads((results / "selection" / "modality.json").read_text())
    assert decision["chosen_subset"] in {"t1c", "t1n+t2f"}
    assert decision["split"] == "val"
    assert {row["subset"] for row in decision["ranking"]} == {"t1c", "t1n+t2f"}

    for name in TABLES:
        assert (results / "tables" / f"{name}.csv").stat().st_size > 0, name
        assert "\\begin{tabular}" in (results / "tables" / f"{name}.tex").read_text(), name
        assert "<table " in (results / "tables" / f"{name}.html").read_text(), name
    table1 = pd.read_csv(results / "tables" / "table1_modality.csv")
    assert len(table1) == 2

    # seed ensembles: Table 2 rows evaluated like every run; postprocessing chosen on val only
    for ensemble in ENSEMBLES:
        for split in ("val", "test"):
            n_cases = int((splits["split"] == split).sum())
            metrics = pd.read_csv(results / ensemble / "metrics" / f"{split}.tsv", sep="\t")
            assert metrics["case"].nunique() == n_cases, (ensemble, split)
    for member in ("ensembles/twostage/selected", "ensembles/modality/t1c"):
        decision = json.loads((results / member / "postprocessing.json").read_text())
        assert decision["chosen_on"] == "val" and decision["n_cases"] == int((splits["split"] == "val").sum())
    table2 = pd.read_csv(results / "tables" / "table2_comparison.csv")
    groups = [run.removesuffix("/seed0") for run in RUNS[2:]]  # the baseline and the two two-stage rows
    assert sorted(table2["run"]) == sorted(groups + ENSEMBLES), table2["run"].tolist()
    for what in ("seed ensemble", "seed ensemble + mirroring", "seed ensemble + mirroring + postprocessing"):
        assert sum(label.endswith(f"), {what}") for label in table2["model"]) == 2, table2["model"].tolist()
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"

    # every job left a log and a benchmark at the mirrored path (one per seed group: seeds_per_job: all;
    # the modality study's two subsets in one job: config.yaml's subsets_per_job 4)
    for job in ["modality/unet/groups/group1/train", "twostage/combined/selected/seeds/predict",
                "ensembles/modality/t1c/ensemble", "data/index", "tables"]:
        assert (results / "logs" / f"{job}.log").is_file(), job
        assert (results / "benchmarks" / f"{job}.tsv").is_file(), job

    # the HTML report holds the tables and figures
    report = snakemake("--configfile", str(REDUCED), "--report", "report.zip", timeout=300)
    assert report.returncode == 0, report.output
    with zipfile.ZipFile(snakemake.workdir / "report.zip") as archive:
        names = "\n".join(archive.namelist())
    assert all(f"{name}.html" in names for name in TABLES) and "qualitative.png" in names
    assert all(f"{name}.png" in names for name in FIGURES if name.startswith("training_"))

    # done means done: nothing reruns
    again = snakemake("--configfile", str(REDUCED), "-n")
    assert again.returncode == 0, again.output
    assert "Nothing to be done" in again.output, again.output

    # new patients (no -seg files) segmented with the two-stage ensemble, its tuned postprocessing applied
    external = snakemake.workdir / "new_cases"
    case = splits.loc[splits["split"] == "test", "case"].iloc[0]
    shutil.copytree(results / "synthetic" / case, external / case)
    (external / case / f"{case}-seg.nii.gz").unlink()
    segmented = snakemake("--configfile", str(REDUCED), "--cores", "2", "segment_external",
                          "--config", f"external={external}", timeout=600)
    assert segmented.returncode == 0, segmented.output
    out = results / "external" / "new_cases"
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # not Snakemake's timestamp
    assert written == sorted([f"{case}.nii.gz", "model.json", "brats_labels.ctbl"]), written
    card = json.loads((out / "model.json").read_text())
    tuned = json.loads((results / "ensembles" / "twostage" / "selected" / "postprocessing.json").read_text())
    assert card["kind"] == "two_stage" and card["inference"]["mirror"] is True  # reduced.yaml: one seed
    assert card["postprocessing"]["min_volume_mm3"] == tuned["min_volume_mm3"]

    # a changed inference setting re-predicts, re-evaluates and re-reports; it retrains only what
    # depends on the re-made subset decision (the two-stage model on `selected`); the single-pass runs
    # predict in their training jobs, which rerun, resume from the final checkpoint.pt and train no step
    # (tests/training/test_train_predict.py)
    # (a file, not --config inference={...}: Snakemake reads nested --config values as strings)
    overlap = snakemake.workdir / "overlap.yaml"
    overlap.write_text("inference: {overlap: 0.5, batch_size: 8, detector_threshold: 0.0}\n")
    changed = snakemake("--configfile", str(REDUCED), str(overlap), "-n", "--quiet", "rules")
    assert changed.returncode == 0, changed.output
    jobs = changed.job_counts()
    assert jobs["train_modality_group1"] == 1 and jobs["train_baseline"] == 1, jobs
    assert "train_modality" not in jobs, jobs
    assert jobs["predict_twostage"] == 2 and "evaluate" not in jobs and "predict" not in jobs
    assert jobs["ensemble"] == 2, jobs  # one job per seed ensemble: segments, tunes and evaluates
    assert jobs["select_subset"] == 1 and jobs["train_detector"] == 1 and jobs["train_segmentor"] == 1
    assert "synthesise" not in jobs and "preprocess" not in jobs

    # another test-time mirroring re-makes the seed ensembles and what reports them, nothing else
    mirroring = snakemake.workdir / "mirroring.yaml"
    mirroring.write_text("inference: {mirror_axes: [0, 1, 2]}\n")
    remirrored = snakemake("--configfile", str(REDUCED), str(mirroring), "-n", "--quiet", "rules")
    assert remirrored.returncode == 0, remirrored.output
    assert set(remirrored.job_counts()) <= {"ensemble", "tables", "figures", "all", "total"}, remirrored.job_counts()
    assert remirrored.job_counts()["ensemble"] == 2

    # choosing the final instead of the best weights re-predicts (model.pt is an input now), never
    # trains a step: training wrote both files (here without validation, best.pt = the final weights)
    for run_dir in RUNS[:2]:
        assert json.loads((results / run_dir / "checkpoints.json").read_text())["best"]["basis"].startswith("final")
    assert pd.read_csv(results / RUNS[0] / "inference" / "val.tsv", sep="\t")["checkpoint"].eq("best.pt").all()
    final = snakemake.workdir / "final.yaml"
    final.write_text("inference: {checkpoint: final}\n")
    chosen = snakemake("--configfile", str(REDUCED), str(final), "-n", "--quiet", "rules")
    assert chosen.returncode == 0, chosen.output
    jobs = chosen.job_counts()
    assert jobs["predict_twostage"] == 2 and "evaluate" not in jobs and "predict" not in jobs
    assert jobs["train_modality_group1"] == 1 and jobs["train_baseline"] == 1, jobs
    # the two-stage model retrains only on `selected` (the re-made decision), as above
    assert jobs["train_detector"] == 1 and jobs["train_segmentor"] == 1, jobs


def _failure_report(run, results: Path) -> str:
    """Snakemake's output plus the tail of every job log that mentions an error."""
    parts = [run.output[-6000:]]
    for log in sorted((results / "logs").rglob("*.log")) if (results / "logs").is_dir() else []:
        text = log.read_text(errors="replace")
        if "error" in text.lower() or "Traceback" in text:
            parts.append(f"--- {log}\n{text[-2000:]}")
    return "\n".join(parts)
