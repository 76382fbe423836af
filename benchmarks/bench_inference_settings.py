"""Cheaper single-pass inference settings, measured with the networks a finished default study trained.

Every single-pass run of the default study predicts its val and test cases in
its training job with MONAI's sliding window (``predict_single_pass``: the
U-Net's 24^3 training patch, overlap 0.25, batch 8, plain-mean blending); for
a tiny network a large part of that time is per-call overhead on many small
windows. This benchmark predicts the cases of one split with each candidate
setting (``SETTINGS``: larger batch, smaller overlap, Gaussian blending, an
inference window larger than the patch, ``inference.window``) through the
project's own path, ``brainmets.inference.api.predict_case`` (cache read,
engine, back to the original grid, labels, the config's postprocessing,
NIfTI written under ``--work``), and scores every prediction with
``brainmets.evaluation.evaluate_files`` (legacy and lesion-wise Dice per
region, false-positive lesions).

Timing: all settings in one process, torch on ``--threads`` (1, as the
study's jobs run), round-robin over the settings case by case (the order
rotated from case to case), so that a drift in machine load hits all alike;
one untimed warm-up case per setting first. ``seconds`` is the engine's time
(sliding window and blending), ``seconds_total`` the whole ``predict_case``.

Choose on ``--split val`` (the study selects on val); run ``--split test``
with the chosen setting only afterwards.

Usage (from the repository root; ``--results`` is a finished default study,
which is only read)::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_inference_settings.py \\
        --results results --work /tmp/infer --split val

Writes ``benchmarks/results/inference_settings_<split>.json`` (every case and
the summary) and prints the summary as markdown;
``benchmarks/results/inference_settings.md`` is the curated report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench_inference import cpu_model
from brainmets.config import load_config
from brainmets.data.preprocess import load_case
from brainmets.data.splits import cases_in_split
from brainmets.evaluation import evaluate_files, find_gt_cases
from brainmets.inference import InferenceSettings, inference_runtime, load_network, predict_single_pass
from brainmets.inference.api import predict_case, prediction_path

RESULTS = Path(__file__).with_name("results")
REGIONS = ("WT", "TC", "ET")
#: candidate settings: overrides of the study's ``inference`` section; the first is the study's own
SETTINGS: dict[str, dict] = {
    "today": {},
    "batch4": {"batch_size": 4},
    "batch32": {"batch_size": 32},
    "overlap0.125": {"overlap": 0.125},
    "overlap0": {"overlap": 0.0},
    "gaussian": {"blend": "gaussian"},
    "window2x": {"window": 2},
    "window2x_overlap0": {"window": 2, "overlap": 0.0},
    # the default cohort's whole 120 x 120 x 78 volume in one window (z padded to a multiple of 4)
    "window_volume": {"window": [120, 120, 80]},
}
#: the default runs: five modality subsets x three seeds of the U-Net, two baselines' seed 0
SUBSETS = ("t1c", "t2f", "t1c+t2f", "t1c+t1n+t2f", "t1c+t1n+t2f+t2w")


def runs_of(results: Path, subsets, seeds, baselines) -> list[tuple[str, Path]]:
    runs = [(f"unet/{s}/seed{k}", results / "modality" / "unet" / s / f"seed{k}") for s in subsets for k in seeds]
    runs += [(f"{b}/seed0", next((results / "baselines" / b).glob("*/seed0"), results / "baselines" / b))
             for b in baselines]
    for name, path in runs:
        if not (path / "best.pt").is_file():
            raise SystemExit(f"run {name}: {path / 'best.pt'} missing; is {results} a finished default study?")
    return runs


def case_scores(pred: Path, gt: Path, case: str) -> dict[str, float]:
    rows, _ = evaluate_files(pred, gt, case=case, regions=REGIONS)
    out: dict[str, float] = {}
    for row in rows:
        for key in ("legacy_dice", "lesion_dice", "num_fp"):
            out[f"{key}_{row['region']}"] = float(row[key])
    return out


def same_probabilities(network, cache: Path, case: str, a: InferenceSettings, b: InferenceSettings,
                       runtime) -> float:
    """Largest absolute probability difference of two settings on one case (0.0: bitwise equal)."""
    image, _, _ = load_case(cache, case)
    volume = torch.from_numpy(np.array(image, dtype=np.float32))
    pa = predict_single_pass(network, volume, a, runtime).probabilities
    pb = predict_single_pass(network, volume, b, runtime).probabilities
    return float((pa - pb).abs().max())


def stored_agreement(rows: list[dict], runs: list[tuple[str, Path]], split: str, setting: str) -> tuple[int, int]:
    """(rows equal, rows compared): ``setting``'s Dice against the metrics the study's own jobs wrote."""
    import pandas as pd

    equal = compared = 0
    for run, path in runs:
        stored = pd.read_csv(path / "metrics" / f"{split}.tsv", sep="\t").set_index(["case", "region"])
        for row in (r for r in rows if r["run"] == run and r["setting"] == setting):
            for region in REGIONS:
                theirs = stored.loc[(row["case"], region)]
                compared += 1
                equal += all(abs(float(theirs[k]) - row[f"{k}_{region}"]) < 1e-9
                             for k in ("legacy_dice", "lesion_dice"))
    return equal, compared


def mean_dice(rows: list[dict]) -> float:
    """Mean of legacy and lesion-wise Dice over WT, TC, ET and the rows."""
    return float(np.mean([r[f"{kind}_dice_{region}"] for r in rows for kind in ("legacy", "lesion")
                          for region in REGIONS]))


def summarise(rows: list[dict], names: list[str]) -> dict:
    base = [r for r in rows if r["setting"] == names[0]]
    models = list(dict.fromkeys(r["run"].split("/")[0] for r in rows))
    summary = {}
    for name in names:
        rs = [r for r in rows if r["setting"] == name]
        entry = {
            "case_runs": len(rs),
            "windows_per_case": float(np.mean([r["windows_total"] for r in rs])),
            "seconds_per_case": float(np.mean([r["seconds"] for r in rs])),
            "seconds_total_per_case": float(np.mean([r["seconds_total"] for r in rs])),
        }
        entry["speedup"] = float(np.mean([r["seconds"] for r in base])) / entry["seconds_per_case"]
        entry["speedup_total"] = (float(np.mean([r["seconds_total"] for r in base]))
                                  / entry["seconds_total_per_case"])
        for key in [k for k in rs[0] if k.startswith(("legacy_dice_", "lesion_dice_", "num_fp_"))]:
            entry[key] = float(np.mean([r[key] for r in rs]))
            entry[f"delta_{key}"] = entry[key] - float(np.mean([r[key] for r in base]))
        entry["labels_identical_to_today"] = sum(r["labels_identical"] for r in rs)
        entry["delta_mean_dice_by_model"] = {
            model: mean_dice([r for r in rs if r["run"].startswith(f"{model}/")])
            - mean_dice([r for r in base if r["run"].startswith(f"{model}/")]) for model in models}
        summary[name] = entry
    return summary


def markdown(result: dict) -> str:
    s, names = result["summary"], list(result["summary"])
    lines = [
        f"- machine: {result['machine']}; load average {result['load_average_start'][0]:.2f} at the start, "
        f"{result['load_average_end'][0]:.2f} at the end; {result['seconds_total']:.0f} s in all",
        f"- study: {result['results']}; split {result['split']}; {len(result['runs'])} runs: "
        f"{', '.join(result['runs'])}",
        f"- the study's inference section: {result['study_inference']}",
        "- settings that change only the batch size, largest probability difference to the first row over "
        "each run's first case: " + (", ".join(f"{n} {d:.3g}" for n, d in result["batch_max_abs_difference"].items())
                                     or "(none run)"),
        "",
        "| setting | overrides | windows/case | s/case engine | speed-up | s/case total | speed-up "
        "| legacy WT | TC | ET | lesion WT | TC | ET | FP WT/case | label maps = today |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        e = s[name]
        dice = []
        for kind in ("legacy", "lesion"):
            for region in REGIONS:
                key = f"{kind}_dice_{region}"
                delta = "" if name == names[0] else f" ({100 * e['delta_' + key]:+.1f})"
                dice.append(f"{100 * e[key]:.1f}{delta}")
        lines.append(
            f"| {name} | {SETTINGS[name] or '(study)'} | {e['windows_per_case']:.0f} | {e['seconds_per_case']:.3f} "
            f"| {e['speedup']:.2f} | {e['seconds_total_per_case']:.3f} | {e['speedup_total']:.2f} | "
            + " | ".join(dice) + f" | {e['num_fp_WT']:.2f} | {e['labels_identical_to_today']}/{e['case_runs']} |"
        )
    lines.append("")
    lines.append("Dice in points (x100), mean over case runs; in brackets the difference to the first row.")
    models = list(s[names[0]]["delta_mean_dice_by_model"])
    lines += ["", "Difference to the first row by network, mean of legacy and lesion-wise Dice over WT, TC, ET "
              "(points):", "", "| setting | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    for name in names[1:]:
        by_model = s[name]["delta_mean_dice_by_model"]
        lines.append(f"| {name} | " + " | ".join(f"{100 * by_model[m]:+.1f}" for m in models) + " |")
    equal, compared = result["stored_agreement"]
    lines += ["", f"The first row against the metrics the study's jobs wrote ({result['split']}.tsv of each run): "
              f"{equal} of {compared} (case, region) rows equal in legacy and lesion-wise Dice."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="a finished default study (only read)")
    parser.add_argument("--work", type=Path, required=True, help="where the predictions are written")
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--baselines", nargs="*", default=["resunet", "segresnet"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS),
                        help="the first is the reference of the ratios and differences")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: as the study's jobs run)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/inference_settings_<split>.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = args.results
    config = load_config(results / "config.resolved.yaml")
    study = InferenceSettings.from_config(config)
    settings = {name: dataclasses.replace(study, device="cpu", **SETTINGS[name]) for name in args.settings}
    names = list(settings)
    runtime = inference_runtime(settings[names[0]])
    cache = results / "data" / "preprocessed"
    cases = cases_in_split(results / "data" / "splits.tsv", args.split)
    gt_files = find_gt_cases(results / "synthetic")
    runs = runs_of(results, args.subsets, args.seeds, args.baselines)
    min_volume = config["postprocessing"]["min_volume_mm3"]
    weights = "best.pt" if study.checkpoint == "best" else "model.pt"
    load_start = os.getloadavg()
    clock = time.perf_counter()

    def predict(network, name: str, run: str, case: str, work: Path) -> tuple[dict, Path]:
        out = prediction_path(work / name / run, args.split, case)
        row = predict_case(case, cache, out, network, settings[name], runtime, min_volume_mm3=min_volume)
        return row, out

    rows: list[dict] = []
    # settings that change only the batch size: do they change any output bit?
    batch_only = [n for n in names[1:] if set(SETTINGS[n]) == {"batch_size"}]
    batch_difference = dict.fromkeys(batch_only, 0.0)
    for run_index, (run, path) in enumerate(runs):
        network = load_network(path / weights, runtime, "segmentation")
        if run_index == 0:  # untimed warm-up: first calls pay one-time costs
            for name in names:
                predict(network, name, run, cases[0], args.work / "warmup")
        for name in batch_only:
            batch_difference[name] = max(batch_difference[name], same_probabilities(
                network, cache, cases[0], settings[names[0]], settings[name], runtime))
        for case_index, case in enumerate(cases):
            shift = (run_index + case_index) % len(names)
            produced = {}
            for name in names[shift:] + names[:shift]:
                row, out = predict(network, name, run, case, args.work)
                produced[name] = (row, out)
            reference = _labels(produced[names[0]][1])
            for name, (row, out) in produced.items():
                rows.append({"run": run, "case": case, "setting": name,
                             **{k: row[k] for k in ("seconds", "seconds_total", "windows_total", "flops")},
                             "labels_identical": _labels(out) == reference,
                             **case_scores(out, gt_files[case], case)})
        print(f"{run}: " + ", ".join(
            f"{n} {np.mean([r['seconds'] for r in rows if r['run'] == run and r['setting'] == n]):.3f} s"
            for n in names), flush=True)

    result = {
        "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)",
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "seconds_total": time.perf_counter() - clock,
        "results": str(results),
        "split": args.split,
        "runs": [run for run, _ in runs],
        "study_inference": {k: v for k, v in dataclasses.asdict(study).items()
                            if k in ("overlap", "window", "batch_size", "blend", "average", "threshold")},
        "settings": {name: SETTINGS[name] for name in names},
        "batch_max_abs_difference": batch_difference,
        "summary": summarise(rows, names),
        "stored_agreement": stored_agreement(rows, runs, args.split, names[0]),
        "cases": rows,
    }
    out = args.out or RESULTS / f"inference_settings_{args.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


def _labels(path: Path) -> bytes:
    """The voxels of a label NIfTI (the gzip stream of two equal maps may still differ)."""
    import nibabel as nib

    return np.asarray(nib.load(path).dataobj).tobytes()


if __name__ == "__main__":
    sys.exit(main())
