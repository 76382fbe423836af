"""Single-pass versus two-stage inference (paper and fast mode) with the networks a finished study trained.

For every seed of a finished study (the default study: ``snakemake --cores
all`` in the repository) and every case of its validation and test splits, in
one process and on the same cached volume:

- single-pass: the modality study's U-Net on the given subset (default all
  four sequences), MONAI's sliding window (``predict_single_pass``);
- two-stage, paper mode: the detector and segmentor trained on all four
  sequences (``twostage/{detector,segmentor}/<subset>``), ``predict_two_stage``
  with ``inference.two_stage_mode: paper``;
- two-stage, fast mode: the same networks with ``two_stage_mode: fast``.

Settings are the study's own ``inference`` section (``config.resolved.yaml``:
overlap, batch size, blending, threshold, label export), with
``detector_batch_size`` and the memory format as this code's defaults unless
given. Each method runs ``--repeats`` times per case, in an order rotated from
case to case, so a change in machine load hits all alike; its time is the
fastest run (the least disturbed), from the engine's record (windows cut,
networks, blending; not reading the cache or writing NIfTI). FLOPs are the
engine's count: per-window forward FLOPs (``torch.utils.flop_counter``) times
the windows each network ran.

Dice: each method's probabilities go back to the original grid and become
labels exactly as in ``brainmets predict`` (linear interpolation, then the
threshold and label export), scored against the ground truth with
``brainmets.evaluation.evaluate_case`` (legacy and lesion-wise Dice of WT,
TC, ET).

Usage (from the repository root, after the default study finished)::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_inference.py --results results

Writes ``benchmarks/results/inference.json`` (every case and the summary) and
prints the summary as markdown; ``benchmarks/results/inference.md`` is the
curated report of these numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from brainmets.config import read_yaml, validate_section
from brainmets.data.preprocess import load_case, probabilities_to_original_grid
from brainmets.data.splits import cases_in_split
from brainmets.evaluation import evaluate_case, find_gt_cases
from brainmets.inference import (
    InferenceSettings,
    inference_runtime,
    load_network,
    predict_single_pass,
    predict_two_stage,
    regions_to_labels,
)
from brainmets.nifti import read_image, read_voxels

METHODS = ("single_pass", "paper", "fast")
REGIONS = ("WT", "TC", "ET")
RESULTS = Path(__file__).with_name("results")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def settings_of(results: Path, args: argparse.Namespace) -> InferenceSettings:
    """The study's ``inference`` section, with this run's device and batch overrides."""
    study = read_yaml(results / "config.resolved.yaml").get("inference", {})
    keys = ("overlap", "detector_threshold", "batch_size", "blend", "average", "label_export", "threshold",
            "checkpoint")
    section = {k: study[k] for k in keys if k in study} | {"device": args.device}
    if args.channels_last is not None:
        section["channels_last"] = args.channels_last == "true"
    if args.batch_size:
        section["batch_size"] = args.batch_size
    if args.detector_batch_size:
        section["detector_batch_size"] = args.detector_batch_size
    return InferenceSettings(**validate_section("inference", section))


def weights_file(run: Path, checkpoint: str) -> Path:
    path = run / ("best.pt" if checkpoint == "best" else "model.pt")
    if not path.is_file():
        raise SystemExit(f"{path} missing: is the study at {run.parents[3]} finished?")
    return path


def seeds_of(results: Path, subset: str) -> list[int]:
    found = sorted(int(p.name.removeprefix("seed")) for p in (results / "modality" / "unet" / subset).glob("seed*"))
    if not found:
        raise SystemExit(f"no runs in {results / 'modality' / 'unet' / subset}: is {results} a finished study?")
    return found


def scores(probabilities: torch.Tensor, meta: dict, gt: np.ndarray, spacing, settings: InferenceSettings,
           case: str) -> dict[str, float]:
    maps, _ = probabilities_to_original_grid(probabilities.numpy(), meta, fill=0.0)
    labels = regions_to_labels(maps, settings.threshold, settings.label_export)
    rows, _ = evaluate_case(labels, gt, spacing, case=case, regions=REGIONS)
    out = {}
    for row in rows:
        out[f"legacy_dice_{row['region']}"] = float(row["legacy_dice"])
        out[f"lesion_dice_{row['region']}"] = float(row["lesion_dice"])
    return out


def run_case(networks: dict, volume: torch.Tensor, settings: dict, runtime, repeats: int, rotation: int):
    """``{method: (fastest record, probabilities of the first run)}``."""
    unet, detector, segmentor = networks["unet"], networks["detector"], networks["segmentor"]
    calls = {
        "single_pass": lambda: predict_single_pass(unet, volume, settings["paper"], runtime),
        "paper": lambda: predict_two_stage(detector, segmentor, volume, settings["paper"], runtime),
        "fast": lambda: predict_two_stage(detector, segmentor, volume, settings["fast"], runtime),
    }
    best: dict = {}
    for repeat in range(repeats):
        order = METHODS[(rotation + repeat) % 3:] + METHODS[: (rotation + repeat) % 3]
        for method in order:
            result = calls[method]()
            if method not in best:
                best[method] = (result.record, result.probabilities)
            elif result.record["seconds"] < best[method][0]["seconds"]:
                best[method] = (result.record, best[method][1])
    return best


def summarise(rows: list[dict]) -> dict:
    by_method = {m: [r for r in rows if r["method"] == m] for m in METHODS}
    total = {m: {"seconds": sum(r["seconds"] for r in rs), "flops": sum(r["flops"] for r in rs)}
             for m, rs in by_method.items()}
    summary: dict = {"cases": len(by_method["single_pass"])}
    for m in METHODS:
        rs = by_method[m]
        entry = {
            "seconds_per_case": total[m]["seconds"] / len(rs),
            "gflop_per_case": total[m]["flops"] / len(rs) / 1e9,
            "gflop_per_second": total[m]["flops"] / total[m]["seconds"] / 1e9,
            "windows_total_per_case": float(np.mean([r["windows_total"] for r in rs])),
            "windows_kept_per_case": float(np.mean([r["windows_kept"] for r in rs])),
            "fraction_kept": float(np.mean([r["fraction_kept"] for r in rs])),
        }
        for key in [k for k in rs[0] if k.startswith(("legacy_dice_", "lesion_dice_"))]:
            entry[key] = float(np.mean([r[key] for r in rs]))
        if m != "single_pass":
            wall = total["single_pass"]["seconds"] / total[m]["seconds"]
            flop = total["single_pass"]["flops"] / total[m]["flops"]
            entry |= {"speedup_wall": wall, "speedup_flops": flop, "wall_over_flop_ratio": wall / flop}
        summary[m] = entry
    paired = [(p, f) for p, f in zip(by_method["paper"], by_method["fast"])]
    summary["fast_minus_paper"] = {
        f"{kind}_dice_{region}": float(np.mean([f[f"{kind}_dice_{region}"] - p[f"{kind}_dice_{region}"]
                                                for p, f in paired]))
        for kind in ("legacy", "lesion") for region in REGIONS
    }
    return summary


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [
        f"- machine: {result['machine']}; load average {result['load_average_start'][0]:.2f} at the start, "
        f"{result['load_average_end'][0]:.2f} at the end",
        f"- study: {result['results']}; seeds {result['seeds']}; {s['cases']} case runs "
        f"({', '.join(result['splits'])}); settings {result['settings']}",
        "",
        "| | single-pass U-Net | two-stage paper | two-stage fast |",
        "|---|---:|---:|---:|",
        "| seconds per case | " + " | ".join(f"{s[m]['seconds_per_case']:.3f}" for m in METHODS) + " |",
        "| GFLOP per case | " + " | ".join(f"{s[m]['gflop_per_case']:.2f}" for m in METHODS) + " |",
        "| GFLOP/s | " + " | ".join(f"{s[m]['gflop_per_second']:.1f}" for m in METHODS) + " |",
        "| windows run (detector / segmentor) | " + f"{s['single_pass']['windows_total_per_case']:.1f} | "
        + " | ".join(f"{s[m]['windows_total_per_case']:.1f} / {s[m]['windows_kept_per_case']:.1f}"
                     for m in ("paper", "fast")) + " |",
        "| speed-up, wall (single / method) | 1 | " + " | ".join(f"{s[m]['speedup_wall']:.2f}"
                                                           for m in ("paper", "fast")) + " |",
        "| speed-up, FLOPs | 1 | " + " | ".join(f"{s[m]['speedup_flops']:.2f}" for m in ("paper", "fast")) + " |",
        "| wall / FLOP speed-up | | " + " | ".join(f"{s[m]['wall_over_flop_ratio']:.2f}"
                                               for m in ("paper", "fast")) + " |",
    ]
    for kind in ("legacy", "lesion"):
        for region in REGIONS:
            key = f"{kind}_dice_{region}"
            lines.append(f"| {kind} Dice {region} | " + " | ".join(f"{s[m][key]:.3f}" for m in METHODS) + " |")
    lines.append("")
    lines.append("fast - paper (mean of paired case runs): " + ", ".join(
        f"{k.replace('_dice_', ' Dice ')} {v:+.3f}" for k, v in s["fast_minus_paper"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="a finished study's results folder")
    parser.add_argument("--subset", default="t1c+t1n+t2f+t2w", help="the single-pass U-Net's modality subset")
    parser.add_argument("--twostage-subset", default=None, help="the two-stage runs' subset (default: --subset)")
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: every seed of the study")
    parser.add_argument("--gt", type=Path, default=None, help="ground truth folder (default: RESULTS/synthetic)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per method and case; the fastest counts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: as the study's predict jobs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--detector-batch-size", type=int, default=None)
    parser.add_argument("--channels-last", choices=["true", "false"], default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "inference.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = args.results
    settings = settings_of(results, args)
    modes = {m: dataclasses.replace(settings, two_stage_mode=m) for m in ("paper", "fast")}
    runtime = inference_runtime(settings)
    cache = results / "data" / "preprocessed"
    cases = [(split, case) for split in args.splits for case in cases_in_split(results / "data" / "splits.tsv", split)]
    gt_files = find_gt_cases(args.gt or results / "synthetic")
    seeds = args.seeds or seeds_of(results, args.subset)
    twostage = results / "twostage"
    twostage_subset = args.twostage_subset or args.subset
    load_start = os.getloadavg()

    truth = {}
    for _, case in cases:
        image = read_image(case, gt_files[case], "ground truth")
        truth[case] = (read_voxels(case, gt_files[case], image), tuple(float(z) for z in image.header.get_zooms()[:3]))

    rows = []
    clock = time.perf_counter()
    for seed in seeds:
        networks = {
            "unet": load_network(weights_file(results / "modality" / "unet" / args.subset / f"seed{seed}",
                                              settings.checkpoint), runtime, "segmentation"),
            "detector": load_network(weights_file(twostage / "detector" / twostage_subset / f"seed{seed}",
                                                  settings.checkpoint), runtime, "detection"),
            "segmentor": load_network(weights_file(twostage / "segmentor" / twostage_subset / f"seed{seed}",
                                                   settings.checkpoint), runtime, "segmentation"),
        }
        for index, (split, case) in enumerate(cases):
            image, _, meta = load_case(cache, case)
            volume = torch.from_numpy(np.array(image, dtype=np.float32))
            best = run_case(networks, volume, modes, runtime, args.repeats, index + seed)
            gt, spacing = truth[case]
            for method, (record, probabilities) in best.items():
                keep = ("seconds", "flops", "windows_total", "windows_kept", "fraction_kept")
                rows.append({"seed": seed, "split": split, "case": case, "method": method,
                             **{k: record[k] for k in keep},
                             **scores(probabilities, meta, gt, spacing, settings, case)})
            print(f"seed {seed} {case}: " + ", ".join(f"{r['method']} {r['seconds']:.3f} s"
                                                       for r in rows[-3:]), flush=True)

    result = {
        "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), device {runtime.device}, channels_last_3d {runtime.channels_last}",
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "seconds_total": time.perf_counter() - clock,
        "results": str(results),
        "seeds": seeds,
        "splits": args.splits,
        "settings": {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("device", "two_stage_mode")},
        "summary": summarise(rows),
        "cases": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
