"""Quality against training time of the default study's settings: the curve config.yaml is chosen from.

For each candidate setting (an overlay merged over config.yaml the way
``snakemake --configfile overlay.yaml`` merges it) the script runs the study's
own verbs (``brainmets synth``, ``index``, ``split``, ``preprocess``,
``train``, ``predict``, ``evaluate``, ``postprocess``) on a representative part
of the modality study: the U-Net on a few modality subsets (default all four
sequences, T1c, T1 and FLAIR alone) and seeds, predicting and evaluating the
validation and test splits.

The verbs run in this one process (``brainmets.cli.main``) one after the
other on one thread (``--threads 1`` and ``torch.set_num_threads(1)``, as the
workflow's one-thread jobs). The libraries are imported once before anything
is timed, so a job's CPU seconds (``time.process_time``: every thread of the
process) are its own work without the start-up each workflow job pays on top.
Candidates that differ only in inference
settings share their trainings (a run directory per hash of the data,
training and U-Net sections).

Recorded per run and split: per region (WT, TC, ET, NETC, SNFH) the mean over
cases of the legacy and lesion-wise Dice and of the false-positive lesions
(``num_fp``); and the same after removing small components with minimum
volumes tuned on the validation split of that run (``brainmets postprocess
tune``, grid ``PP_GRID``), which shows what such a step buys; the candidate
``final`` instead sets the config's fixed ``postprocessing`` minima, applied by
``brainmets predict`` as in the workflow.

Targets (issue 12 item 5; checked on val to choose, reported on test, means
over the seeds run):
* the best subset (highest mean lesion-wise Dice over WT/TC/ET on val, the
  study's selection rule) reaches lesion-wise ET Dice >= 0.50, legacy WT Dice
  >= 0.60 and at most 3 false-positive WT lesions per patient;
* every subset with T1c beats every subset without it on legacy ET Dice by >= 0.10;
* FLAIR or T2 alone beats T1 alone on legacy SNFH Dice by >= 0.10;
* the test split has >= 6 cases (an exact two-sided paired Wilcoxon test can
  then reach p = 2/64 = 0.031; with 4 cases its smallest p is 0.125).

``--base-results DIR`` (read only) adds today's full workflow run (15 subsets x
3 seeds, every job timed by Snakemake's benchmark files) as the first point.

Usage (resumable: finished runs are kept under WORK)::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_quality.py --work /tmp/quality \\
        --candidates today split pos050 --seeds 0 --base-results /work/bench/base/results
    PYTHONPATH=src .venv/bin/python benchmarks/bench_quality.py --work /tmp/quality --report-only \\
        --candidates today split pos050 --base-results /work/bench/base/results

Writes benchmarks/results/quality.json (every run) and quality.md (the curve).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SUBSETS = ["t1c+t1n+t2f+t2w", "t1c", "t1n", "t2f"]
SPLITS = ["val", "test"]
REGIONS = ["WT", "TC", "ET", "NETC", "SNFH"]
SELECTION_REGIONS = ["WT", "TC", "ET"]
#: Candidate minimum component volumes (mm^3) of the postprocessing variant (2 mm voxels: 8 mm^3 each).
PP_GRID = [16.0, 40.0, 80.0, 160.0, 400.0, 800.0]
#: Training CPU a candidate may spend per job, relative to today's settings (issue 12: "grow only modestly").
MAX_TRAIN_RATIO = 1.3
#: The candidate whose training is today's (same settings, other split): the reference of the CPU ratios.
REFERENCE = "split"

#: Not a quality setting: the bench trains without MLflow.
BENCH_COMMON = {"tracking": {"enabled": False}}
#: 22 cases split 12/4/6: the test split gets the 6 paired cases a Wilcoxon test needs to reach
#: p < 0.05, the training split keeps today's 12 (cases 1-20 are today's cohort, the split is redrawn).
SPLIT_12_4_6 = {"data": {"synthetic": {"n_cases": 22}, "split": {"fractions": [0.55, 0.19, 0.26]}}}


def _seg(**settings) -> dict:
    return {"training": {"segmentation": settings}}


def _unet(**spec) -> dict:
    return {"models": {"unet": spec}}


def _inference(**settings) -> dict:
    return {"inference": settings}


def _overlay(*parts: dict) -> dict:
    from brainmets.config import merge_config

    out: dict = {}
    for part in parts:
        out = merge_config(out, part)
    return out


#: Today's value of every setting a candidate changes (config.yaml at commit d91fd34), so that a candidate
#: means the same run whatever config.yaml holds now (the run folders are named by hashes of the settings).
TODAY = {
    "data": {"synthetic": {"n_cases": 20}, "split": {"fractions": [0.6, 0.2, 0.2]}},
    "models": {"unet": {"filters": [8, 16, 32], "patch": [24, 24, 24]}},
    "training": {"segmentation": {"iterations": 150, "batch_patients": 2, "crops_per_patient": 2,
                                  "pos_fraction": 2 / 3, "positive_centre": "lesion", "positive_region": "wt",
                                  "optimizer": {"name": "adam", "lr": 0.02},
                                  "schedule": {"name": "poly", "exponent": 0.9}}},
    "inference": {"overlap": 0.25, "blend": "constant", "threshold": 0.5},
    "postprocessing": {"min_volume_mm3": {"WT": 0, "TC": 0, "ET": 0}},
}
SPLIT = _overlay(TODAY, SPLIT_12_4_6)

#: name -> (what it changes against today's config.yaml, overlay). Order = the order they are run in.
CANDIDATES: dict[str, tuple[str, dict]] = {
    "today": ("config.yaml at d91fd34: 20 cases 12/4/4", TODAY),
    "split": ("22 cases 12/4/6", SPLIT),
    "cases30": ("30 cases 18/6/6 (more training patients, 6 val)",
                _overlay(TODAY, {"data": {"synthetic": {"n_cases": 30}}})),
    "c30_pos025": ("cases30 + pos025", _overlay(TODAY, {"data": {"synthetic": {"n_cases": 30}}}, _seg(pos_fraction=0.25))),
    "c30_pos050": ("cases30 + pos050", _overlay(TODAY, {"data": {"synthetic": {"n_cases": 30}}}, _seg(pos_fraction=0.5))),
    "c30_pos025_gauss": ("cases30 + pos025 + gauss", _overlay(TODAY, {"data": {"synthetic": {"n_cases": 30}}},
                                                            _seg(pos_fraction=0.25), _inference(blend="gaussian"))),
    "final": ("c30_pos025 + WT components below 800 mm^3 removed (config postprocessing)",
              _overlay(TODAY, {"data": {"synthetic": {"n_cases": 30}}}, _seg(pos_fraction=0.25),
                       {"postprocessing": {"min_volume_mm3": {"WT": 800}}})),
    "pos050": ("split + pos_fraction 0.5 (2 of 4 crops on tumour, not 3)", _overlay(SPLIT, _seg(pos_fraction=0.5))),
    "pos025": ("split + pos_fraction 0.25 (1 of 4 crops on tumour)", _overlay(SPLIT, _seg(pos_fraction=0.25))),
    "tcet": ("split + positive crops centred on tumour core/ET (positive_region tc_et)",
             _overlay(SPLIT, _seg(positive_region="tc_et"))),
    "it200": ("split + 200 iterations", _overlay(SPLIT, _seg(iterations=200))),
    "lr01": ("split + Adam lr 0.01", _overlay(SPLIT, _seg(optimizer={"name": "adam", "lr": 0.01}))),
    "deep4": ("split + U-Net 8-16-32-64 (one more level)", _overlay(SPLIT, _unet(filters=[8, 16, 32, 64]))),
    "gauss": ("split + gaussian blending", _overlay(SPLIT, _inference(blend="gaussian"))),
    "thr07": ("split + threshold 0.7", _overlay(SPLIT, _inference(threshold=0.7))),
    "ov0": ("split + windows without overlap", _overlay(SPLIT, _inference(overlap=0.0))),
    "gauss_tcet": ("gauss + tcet", _overlay(SPLIT, _inference(blend="gaussian"), _seg(positive_region="tc_et"))),
    "gauss_it200": ("gauss + it200", _overlay(SPLIT, _inference(blend="gaussian"), _seg(iterations=200))),
    "gauss_pos050": ("gauss + pos050", _overlay(SPLIT, _inference(blend="gaussian"), _seg(pos_fraction=0.5))),
    "crops3": ("split + 3 crops per patient, 100 iterations (same crops seen)",
               _overlay(SPLIT, _seg(crops_per_patient=3, iterations=100))),
    "patch32": ("split + 32^3 patches, 64 iterations (same voxels seen)",
                _overlay(SPLIT, _unet(patch=[32, 32, 32]), _seg(iterations=64))),
}


# --------------------------------------------------------------------------- configs and keys


def resolve(overlay: dict) -> dict:
    """config.yaml with ``overlay`` merged over it (mappings merge, the rest replaces), validated."""
    from brainmets.config import merge_config, read_yaml, validate_config

    merged = merge_config(merge_config(read_yaml(ROOT / "config.yaml"), BENCH_COMMON), overlay)
    return validate_config(merged, source=f"config.yaml + {overlay}")


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def data_key(config: dict) -> str:
    return _key(config["data"])


def train_key(config: dict) -> str:
    model = config["modality_study"]["model"]
    return _key(config["data"], config["training"], config["models"][model])


def predict_key(config: dict) -> str:
    minima = config["postprocessing"]["min_volume_mm3"]
    return _key(train_key(config), config["inference"], *([minima] if any(minima.values()) else []))


@contextlib.contextmanager
def locked(directory: Path):
    """Exclusive use of ``directory`` across bench processes (two may run side by side)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cli(*argv) -> tuple[float, float]:
    """Run one brainmets verb in this process; returns (CPU seconds, wall seconds)."""
    from brainmets.cli import main

    cpu, wall = time.process_time(), time.perf_counter()
    code = main([str(a) for a in argv])
    if code != 0:
        raise SystemExit(f"brainmets {' '.join(map(str, argv))} failed with exit code {code}")
    return time.process_time() - cpu, time.perf_counter() - wall


# --------------------------------------------------------------------------- running


def prepare_data(config: dict, work: Path) -> Path:
    """The cohort, case table, split and cache of ``config['data']`` (once per data key)."""
    data = config["data"]
    out = work / "data" / data_key(config)
    done = out / "done.json"
    with locked(out):
        if done.is_file():
            return out
        synth = data["synthetic"]
        timing = {}
        timing["synth"] = cli("synth", "--out-dir", out / "synthetic", "--n-cases", synth["n_cases"],
                              "--seed", synth["seed"], "--shape", *synth["shape"], "--spacing", synth["spacing"],
                              "--workers", 1, "--no-progress")
        timing["index"] = cli("index", "--root", out / "synthetic", "--out", out / "cases.tsv", "--no-progress")
        timing["split"] = cli("split", "--cases", out / "cases.tsv", "--out", out / "splits.tsv",
                              "--fractions", *data["split"]["fractions"], "--seed", data["split"]["seed"])
        timing["preprocess"] = cli("preprocess", "--cases", out / "cases.tsv", "--out-dir", out / "cache")
        done.write_text(json.dumps({"data": data, "cpu_wall_s": timing}, indent=1))
    return out


def train_run(config: dict, config_file: Path, data: Path, work: Path, subset: str, seed: int) -> dict:
    run = work / "train" / train_key(config) / subset / f"seed{seed}"
    record = run / "timing.json"
    with locked(run):
        if not record.is_file():
            load = os.getloadavg()[0]
            cpu, wall = cli("train", "--config", config_file, "--study", "modality",
                            "--model", config["modality_study"]["model"], "--subset", subset, "--seed", seed,
                            "--cache", data / "cache", "--splits", data / "splits.tsv", "--out-dir", run,
                            "--threads", 1, "--no-progress")
            record.write_text(json.dumps({"train_cpu_s": cpu, "train_wall_s": wall, "load_start": load,
                                          "load_end": os.getloadavg()[0]}))
    return {"dir": str(run), **json.loads(record.read_text())}


def metric_means(table: Path) -> dict:
    """Per region: mean over the split's cases of legacy/lesion-wise Dice and FP lesions; and the case count."""
    frame = pd.read_csv(table, sep="\t")
    means = frame.groupby("region")[["legacy_dice", "lesion_dice", "num_fp"]].mean()
    return {"n_cases": int(frame["case"].nunique()),
            **{region: {k: float(v) for k, v in means.loc[region].items()} for region in means.index}}


def evaluate_run(config: dict, config_file: Path, data: Path, work: Path, subset: str, seed: int) -> dict:
    trained = train_run(config, config_file, data, work, subset, seed)
    run = work / "predict" / predict_key(config) / subset / f"seed{seed}"
    record = run / "result.json"
    with locked(run):
        if not record.is_file():
            weights = "best.pt" if config["inference"]["checkpoint"] == "best" else "model.pt"
            timing = {"predict": cli("predict", "--config", config_file, "--model", Path(trained["dir"]) / weights,
                                     "--cache", data / "cache", "--splits", data / "splits.tsv",
                                     "--split", *SPLITS, "--out-dir", run, "--no-progress")}
            gt = data / "synthetic"
            result = {"plain": {}, "postprocessed": {}}
            for split in SPLITS:
                timing[f"evaluate_{split}"] = cli(
                    "evaluate", "--pred-dir", run / "predictions" / split, "--gt-dir", gt,
                    "--out", run / "metrics" / f"{split}.tsv", "--cases-from", data / "splits.tsv", "--split", split)
                result["plain"][split] = metric_means(run / "metrics" / f"{split}.tsv")
            decision = run / "pp" / "postprocessing.json"
            timing["pp_tune"] = cli("postprocess", "tune", "--pred-dir", run / "predictions" / "val", "--gt-dir", gt,
                                    "--splits", data / "splits.tsv", "--split", "val", "--grid", *PP_GRID,
                                    "--out", decision)
            cli("postprocess", "apply", "--decision", decision, "--in-dir", run / "predictions",
                "--out-dir", run / "pp" / "predictions", "--subdirs", *SPLITS)
            for split in SPLITS:
                cli("evaluate", "--pred-dir", run / "pp" / "predictions" / split, "--gt-dir", gt,
                    "--out", run / "pp" / "metrics" / f"{split}.tsv", "--cases-from", data / "splits.tsv",
                    "--split", split)
                result["postprocessed"][split] = metric_means(run / "pp" / "metrics" / f"{split}.tsv")
            result["min_volume_mm3"] = json.loads(decision.read_text())["min_volume_mm3"]
            result["cpu_s"] = {name: cpu for name, (cpu, _wall) in timing.items()}
            record.write_text(json.dumps(result, indent=1))
    return {"subset": subset, "seed": seed, "train_cpu_s": trained["train_cpu_s"],
            "train_wall_s": trained["train_wall_s"], "load": [trained["load_start"], trained["load_end"]],
            **json.loads(record.read_text())}


def warm_up() -> float:
    """Import what the verbs import, on one thread; returns the CPU seconds it took."""
    cpu = time.process_time()
    import torch

    torch.set_num_threads(1)
    import brainmets.evaluation.api  # noqa: F401
    import brainmets.inference  # noqa: F401
    import brainmets.training.loop  # noqa: F401

    return time.process_time() - cpu


# --------------------------------------------------------------------------- summaries


def summarise(runs: list[dict], variant: str) -> dict:
    """Per split: per subset means over seeds, the val-chosen best subset, and the targets."""
    by_subset: dict[str, list[dict]] = {}
    for run in runs:
        by_subset.setdefault(run["subset"], []).append(run)
    out = {}
    for split in SPLITS:
        subsets = {}
        for subset, group in by_subset.items():
            metrics = [r[variant][split] for r in group if split in r.get(variant, {})]
            if not metrics:
                continue
            subsets[subset] = {
                region: {k: float(np.mean([m[region][k] for m in metrics])) for k in ("legacy_dice", "lesion_dice", "num_fp")}
                for region in REGIONS
            }
            subsets[subset]["seeds"] = len(metrics)
            subsets[subset]["n_cases"] = metrics[0]["n_cases"]
        out[split] = subsets
    val = out.get("val", {})
    best = max(val, key=lambda s: np.mean([val[s][r]["lesion_dice"] for r in SELECTION_REGIONS])) if val else None
    for split in SPLITS:
        out[f"targets_{split}"] = targets(out[split], best)
    out["best_subset"] = best
    return out


def targets(subsets: dict, best: str | None) -> dict:
    if not subsets or best not in subsets:
        return {}
    b = subsets[best]
    with_t1c = [s for s in subsets if "t1c" in s.split("+")]
    without = [s for s in subsets if "t1c" not in s.split("+")]
    t1c_gap = (min(subsets[s]["ET"]["legacy_dice"] for s in with_t1c)
               - max(subsets[s]["ET"]["legacy_dice"] for s in without)) if with_t1c and without else None
    edema = [subsets[s]["SNFH"]["legacy_dice"] for s in ("t2f", "t2w") if s in subsets]
    snfh_gap = max(edema) - subsets["t1n"]["SNFH"]["legacy_dice"] if edema and "t1n" in subsets else None
    n_cases = b["n_cases"]
    values = {
        "best_et_lesion_dice": b["ET"]["lesion_dice"],
        "best_wt_legacy_dice": b["WT"]["legacy_dice"],
        "best_wt_fp_per_patient": b["WT"]["num_fp"],
        "t1c_et_gap": t1c_gap,
        "flair_t2_snfh_gap": snfh_gap,
        "n_cases": n_cases,
    }
    met = {
        "best_et_lesion_dice": values["best_et_lesion_dice"] >= 0.50,
        "best_wt_legacy_dice": values["best_wt_legacy_dice"] >= 0.60,
        "best_wt_fp_per_patient": values["best_wt_fp_per_patient"] <= 3,
        "t1c_et_gap": t1c_gap is not None and t1c_gap >= 0.10,
        "flair_t2_snfh_gap": snfh_gap is not None and snfh_gap >= 0.10,
        "n_cases": n_cases >= 6,
    }
    return {"values": values, "met": met, "count": int(sum(met.values()))}


def base_runs(base: Path) -> tuple[list[dict], dict]:
    """Today's workflow run: one record per (subset, seed) of the modality study, with Snakemake's job times."""
    runs = []
    for seed_dir in sorted((base / "modality" / "unet").glob("*/seed*")):
        subset, seed = seed_dir.parent.name, int(seed_dir.name[4:])
        if not all((seed_dir / "metrics" / f"{s}.tsv").is_file() for s in SPLITS):
            continue
        bench = base / "benchmarks" / "modality" / "unet" / subset / seed_dir.name
        job = {name: float(pd.read_csv(bench / f"{name}.tsv", sep="\t")["cpu_time"].iloc[0])
               for name in ("train", "predict") if (bench / f"{name}.tsv").is_file()}
        runs.append({"subset": subset, "seed": seed, "train_job_cpu_s": job.get("train"),
                     "predict_job_cpu_s": job.get("predict"),
                     "plain": {s: metric_means(seed_dir / "metrics" / f"{s}.tsv") for s in SPLITS}})
    return runs, {"dir": str(base)}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


# --------------------------------------------------------------------------- report


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def choose(report: dict) -> str | None:
    """On val only: within the training-CPU budget and with >= 6 test cases, most targets met, then best score."""
    today = report["candidates"].get(REFERENCE, {}).get("train_cpu_s_per_job")
    best, best_rank = None, None
    for name, cand in report["candidates"].items():
        ratio = cand["train_cpu_s_per_job"] / today if today else None
        if ratio is None or ratio > MAX_TRAIN_RATIO:
            continue
        for variant in ("plain", "postprocessed"):
            summary = cand[variant]
            if not summary["targets_test"] or summary["targets_test"]["values"]["n_cases"] < 6:
                continue
            val = summary["val"][summary["best_subset"]]
            score = np.mean([val[r]["lesion_dice"] for r in SELECTION_REGIONS])
            rank = (summary["targets_val"]["count"], score)
            if best_rank is None or rank > best_rank:
                best, best_rank = f"{name} ({variant})", rank
    return best


def curve_rows(report: dict) -> list[str]:
    rows = ["| point | settings | seeds | train CPU s/job | x today | predict CPU s/case | variant "
            "| best subset (val) | ET lesion Dice val / test | WT legacy Dice val / test | WT FP/patient val / test "
            "| T1c ET gap val / test | FLAIR/T2 SNFH gap val / test | test cases | targets met val / test |",
            "|" + "---|" * 15]
    today = report["candidates"].get(REFERENCE, {}).get("train_cpu_s_per_job")
    entries = []
    if report.get("base"):
        entries.append(("today, workflow", "config.yaml, every job as Snakemake ran it (CPU incl. start-up)",
                        report["base"]))
        entries.append(("today, workflow, all 15 subsets", "the same run, targets over all 15 subsets",
                        {**report["base"], "plain": report["base"]["all_subsets"]}))
    entries += [(name, cand["description"], cand) for name, cand in report["candidates"].items()]
    for name, description, cand in entries:
        for variant in ("plain", "postprocessed"):
            summary = cand.get(variant)
            if not summary or not summary.get("best_subset"):
                continue
            tv, tt = summary["targets_val"], summary["targets_test"]
            per_job = cand.get("train_cpu_s_per_job")
            per_case = cand.get("predict_cpu_s_per_case")
            ratio = f"{per_job / today:.2f}" if per_job and today and not name.startswith("today, workflow") else "–"

            def pair(key):
                return f"{_pct(tv['values'][key])} / {_pct(tt['values'][key])}"

            rows.append(
                f"| {name} | {description} | {cand['seeds']} | "
                f"{'–' if per_job is None else f'{per_job:.1f}'} | {ratio} | "
                f"{'–' if per_case is None else f'{per_case:.2f}'} | "
                f"{'plain' if variant == 'plain' else 'small components removed (val-tuned)'} | "
                f"{summary['best_subset']} | {pair('best_et_lesion_dice')} | {pair('best_wt_legacy_dice')} | "
                f"{tv['values']['best_wt_fp_per_patient']:.2f} / {tt['values']['best_wt_fp_per_patient']:.2f} | "
                f"{pair('t1c_et_gap')} | {pair('flair_t2_snfh_gap')} | {tt['values']['n_cases']} | "
                f"{tv['count']}/6 / {tt['count']}/6 |"
            )
    return rows


def subset_rows(report: dict, name: str, variant: str = "plain") -> list[str]:
    cand = report["base"] if name == "today, workflow" else report["candidates"][name]
    summary = cand[variant]
    rows = [f"| subset | seeds | split | " + " | ".join(f"{r} legacy / lesion" for r in REGIONS) + " | WT FP/patient |",
            "|" + "---|" * (len(REGIONS) + 4)]
    for split in SPLITS:
        for subset, m in summary[split].items():
            cells = " | ".join(f"{_pct(m[r]['legacy_dice'])} / {_pct(m[r]['lesion_dice'])}" for r in REGIONS)
            rows.append(f"| {subset} | {m['seeds']} | {split} | {cells} | {m['WT']['num_fp']:.2f} |")
    return rows


def build_report(args, work: Path) -> dict:
    report: dict = {"machine": machine(), "load_average_now": os.getloadavg(), "subsets": args.subsets,
                    "candidates": {}, "pp_grid_mm3": PP_GRID}
    meta = work / "meta.json"
    if meta.is_file():
        report["session"] = json.loads(meta.read_text())
    for name in args.candidates:
        description, overlay = CANDIDATES[name]
        config = resolve(overlay)
        runs = []
        for subset in args.subsets:
            for seed in args.seeds_report:
                timing = work / "train" / train_key(config) / subset / f"seed{seed}" / "timing.json"
                result = work / "predict" / predict_key(config) / subset / f"seed{seed}" / "result.json"
                if timing.is_file() and result.is_file():
                    runs.append({"subset": subset, "seed": seed, **json.loads(timing.read_text()),
                                 **json.loads(result.read_text())})
        if not runs:
            continue
        data = work / "data" / data_key(config) / "splits.tsv"
        n_pred = pd.read_csv(data, sep="\t")["split"].isin(SPLITS).sum()
        report["candidates"][name] = {
            "description": description, "overlay": overlay, "runs": runs,
            "seeds": len({r["seed"] for r in runs}),
            "train_cpu_s_per_job": _mean(r["train_cpu_s"] for r in runs),
            "predict_cpu_s_per_case": _mean(r["cpu_s"]["predict"] / n_pred for r in runs),
            "plain": summarise(runs, "plain"), "postprocessed": summarise(runs, "postprocessed"),
        }
    if args.base_results and Path(args.base_results).is_dir():
        runs, info = base_runs(Path(args.base_results))
        if runs:
            chosen = [r for r in runs if r["subset"] in args.subsets]
            report["base"] = {**info, "description": "config.yaml (workflow run)", "runs": runs,
                              "seeds": len({r["seed"] for r in runs}),
                              "train_cpu_s_per_job": _mean(r["train_job_cpu_s"] for r in runs),
                              "predict_cpu_s_per_case": None,
                              "plain": summarise(chosen, "plain"), "all_subsets": summarise(runs, "plain")}
    report["chosen"] = choose(report)
    return report


def write_markdown(report: dict, path: Path) -> None:
    """The curated findings (quality_notes.md beside ``path``, when present), then the measured tables."""
    session = report.get("session", {})
    notes = path.with_name(path.stem + "_notes.md")
    lines = [notes.read_text().rstrip() + "\n" if notes.is_file() else "", 
        "## Measured (benchmarks/bench_quality.py)",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, shared with other jobs "
        f"(load average {session.get('load_start', [float('nan')])[0]:.1f} at the start, "
        f"{report['load_average_now'][0]:.1f} when this report was written); one thread per job.",
        "",
        "Method: see the script's docstring. Dice x100, means over the split's cases, then over seeds.",
        f"Subsets run: {', '.join(report['subsets'])}. The best subset is the one with the highest mean "
        "lesion-wise Dice over WT/TC/ET on **val**; its test numbers are reported, never chosen on.",
        "Train CPU s/job: the training verb's own CPU seconds in one warm process (no start-up: the verbs' "
        "imports were paid before timing). The workflow row's job CPU includes its start-up and MLflow (Snakemake's benchmark files). "
        f"x today: train CPU per job against `{REFERENCE}` (today's training settings, measured the same way).",
        "Candidates on different data (today's 20 cases, 22 or 30 cases) are scored on different val/test cases.",
        "Targets (6): ET lesion Dice >= 50 and WT legacy Dice >= 60 for the best subset, its WT FP/patient <= 3, "
        "T1c ET gap >= 10 (legacy), FLAIR/T2-alone over T1-alone SNFH gap >= 10 (legacy), >= 6 test cases.",
        f"Postprocessed rows: components below minimum volumes chosen per run on val from {report['pp_grid_mm3']} mm^3 "
        "(`brainmets postprocess tune`). The chosen config removes WT components below a fixed 800 mm^3 in "
        "`brainmets predict` (`postprocessing:`): the `final` rows' plain variant is exactly that.",
        "",
        "## The curve",
        "",
        *curve_rows(report),
        "",
        f"Automatic pick on val (training CPU <= {MAX_TRAIN_RATIO}x today's per job, >= 6 test cases, most val "
        f"targets met over the subsets it ran, then the best val score; candidates with fewer subsets or seeds "
        f"are disadvantaged, see the notes above): **{report['chosen']}**.",
        "",
    ]
    for name in (["today, workflow"] if report.get("base") else []) + list(report["candidates"]):
        lines += [f"## Per subset: {name}", "", *subset_rows(report, name), ""]
    path.write_text("\n".join(lines))


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--work", type=Path, required=True, help="working folder (data, runs); resumable")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--subsets", nargs="+", default=SUBSETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--base-results", help="today's workflow results folder (read only): the first point")
    parser.add_argument("--report-only", action="store_true", help="only (re)write the report from WORK")
    parser.add_argument("--out", type=Path, default=RESULTS / "quality")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.seeds_report = sorted({0, 1, 2} | set(args.seeds))
    if not args.report_only:
        meta = args.work / "meta.json"
        if not meta.is_file():
            meta.write_text(json.dumps({"load_start": os.getloadavg(), "startup_cpu_s": warm_up()}))
        else:
            warm_up()
        for seed in args.seeds:
            for name in args.candidates:
                description, overlay = CANDIDATES[name]
                config = resolve(overlay)
                config_file = args.work / "configs" / f"{name}.yaml"
                config_file.parent.mkdir(parents=True, exist_ok=True)
                (args.work / "configs" / f"{name}.overlay.yaml").write_text(yaml.safe_dump(overlay))
                from brainmets.config import write_resolved_config

                write_resolved_config(config, config_file)
                data = prepare_data(config, args.work)
                for subset in args.subsets:
                    began = time.perf_counter()
                    run = evaluate_run(config, config_file, data, args.work, subset, seed)
                    et = run["plain"]["val"]["ET"]
                    print(f"[{time.strftime('%H:%M:%S')}] {name} {subset} seed {seed}: train {run['train_cpu_s']:.1f} s CPU, "
                          f"val ET legacy {100 * et['legacy_dice']:.1f} lesion {100 * et['lesion_dice']:.1f}, "
                          f"WT FP {run['plain']['val']['WT']['num_fp']:.1f} ({time.perf_counter() - began:.0f} s wall)",
                          file=sys.stderr, flush=True)
    report = build_report(args, args.work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float))
    write_markdown(report, args.out.with_suffix(".md"))
    print(f"wrote {args.out.with_suffix('.md')} (chosen: {report['chosen']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
