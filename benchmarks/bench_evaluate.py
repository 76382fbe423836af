"""Seconds per full-size case (240x240x155, five regions): brainmets vs the official BraTS 2023 code.

Method: synthetic BraTS-MET-like cases (several metastases of 1-12 mm radius
with necrosis / enhancing rim / oedema spread over the volume, a few 1-3 voxel
specks; the prediction is the GT shifted, relabelled in places, one lesion
some labels wrong in a slab, false-positive blobs added) are written as NIfTI files; both
implementations read the same files in the same process. Reported: best and
median wall time of ``evaluate_files`` (all five regions, file loading
included) and of the reference per case, and their ratio.

The reference is the official lesion-wise code (rachitsaluja/BraTS-2023-Metrics
``eval.py``, BraTS-MET settings), which is not a package: pass its path with
``--reference``. A module exposing ``get_LesionWiseScores(pred, gt, label, dil)``
(the official file) is timed for WT, TC, ET and scaled by 5/3 to five regions;
one exposing ``scores(pred, gt, region)`` is timed on all five. It needs the
numpy 1.x its code was written for (``np.Inf``), so run this script from an
environment that has both, e.g. ``PYTHONPATH=src /tmp/brats-ref/bin/python
benchmarks/bench_evaluate.py --reference /path/to/eval.py``. Without
``--reference`` only brainmets is timed.

    python benchmarks/bench_evaluate.py [--cases 3] [--reference eval.py] [--out benchmarks/results/evaluate.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (240, 240, 155)
REGIONS = ("WT", "TC", "ET", "NETC", "SNFH")


def synthetic_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A GT label map with metastases spread over the brain, and an imperfect prediction of it."""
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE, dtype=np.float32)
    gt = np.zeros(SHAPE, np.uint8)
    for _ in range(int(rng.integers(4, 9))):
        centre = rng.uniform([50, 50, 30], [190, 190, 125])
        radius = float(rng.choice([1.5, 3, 5, 8, 12]))
        box = tuple(slice(max(int(c - 2.2 * radius) - 1, 0), int(c + 2.2 * radius) + 2) for c in centre)
        d = np.sqrt(sum((grid[i][box] - centre[i]) ** 2 for i in range(3)))
        local = gt[box]
        local[(d < 2.0 * radius) & (local == 0)] = 2  # oedema
        local[d < radius] = 3  # enhancing
        local[d < 0.5 * radius] = 1  # necrosis
    for _ in range(3):  # specks
        x, y, z = rng.integers([40, 40, 30], [200, 200, 125])
        gt[x, y, z : z + int(rng.integers(1, 3))] = 3
    pred = np.roll(gt, tuple(rng.integers(-1, 2, 3)), axis=(0, 1, 2))
    # Smooth errors as a network makes them: a slab of necrosis called
    # enhancing, a slab of oedema missed.
    x0 = int(rng.integers(60, 180))
    slab = pred[x0 : x0 + 30]
    slab[slab == 1] = 3
    slab[(slab == 2) & (rng.random(slab.shape) < 1.0)] = 0
    for _ in range(3):  # false positives
        x, y, z = rng.integers([40, 40, 30], [200, 200, 125])
        pred[x : x + 3, y : y + 3, z : z + 2] = rng.integers(1, 4)
    return gt, pred


def _load_reference(path: str):
    spec = importlib.util.spec_from_file_location("brats_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "scores"):
        return (lambda p, g: [module.scores(p, g, r) for r in REGIONS]), 1.0
    if hasattr(module, "get_LesionWiseScores"):
        return (lambda p, g: [module.get_LesionWiseScores(p, g, r, 1) for r in ("WT", "TC", "ET")]), 5 / 3
    raise SystemExit(f"{path}: defines neither scores() nor get_LesionWiseScores()")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="brainmets runs per case (best is kept)")
    parser.add_argument("--reference", help="path to the official eval.py (or a module with scores())")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "evaluate.md"))
    args = parser.parse_args()

    import nibabel as nib

    from brainmets.evaluation import evaluate_files
    from brainmets.io import write_text

    reference, scale = _load_reference(args.reference) if args.reference else (None, None)
    ours, theirs, lesion_counts = [], [], []
    ours_cpu, theirs_cpu = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.cases):
            gt, pred = synthetic_case(seed)
            gt_path, pred_path = Path(tmp) / f"c{seed}-seg.nii.gz", Path(tmp) / f"c{seed}.nii.gz"
            nib.save(nib.Nifti1Image(gt, np.eye(4)), str(gt_path))
            nib.save(nib.Nifti1Image(pred, np.eye(4)), str(pred_path))
            evaluate_files(pred_path, gt_path)  # warm-up: imports, lookup table
            runs, cpu_runs = [], []
            for _ in range(args.repeats):
                start, cpu_start = time.perf_counter(), time.process_time()
                rows, lesions = evaluate_files(pred_path, gt_path)
                runs.append(time.perf_counter() - start)
                cpu_runs.append(time.process_time() - cpu_start)
            ours.append(min(runs))
            ours_cpu.append(min(cpu_runs))
            lesion_counts.append(sum(r["num_tp"] + r["num_fn"] for r in rows if r["region"] == "WT"))
            line = f"case {seed}: brainmets {min(runs):.3f} s wall {min(cpu_runs):.3f} s CPU (WT lesions {lesion_counts[-1]})"
            if reference is not None:
                start, cpu_start = time.perf_counter(), time.process_time()
                reference(str(pred_path), str(gt_path))
                theirs.append((time.perf_counter() - start) * scale)
                theirs_cpu.append((time.process_time() - cpu_start) * scale)
                line += f", reference {theirs[-1]:.1f} s wall {theirs_cpu[-1]:.1f} s CPU"
            print(line, flush=True)

    lines = [
        "# Evaluation speed: seconds per full-size case (240x240x155, WT/TC/ET/NETC/SNFH)",
        "",
        f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}; shared with other jobs, so "
        "brainmets times are the best of "
        f"{args.repeats} runs and the reference ran once per case.",
        "",
        "Method: `python benchmarks/bench_evaluate.py` (see its docstring): synthetic BraTS-MET-like "
        "cases written as NIfTI, both implementations called on the same files in one process, "
        "file loading included. Cost grows with the surface size: a prediction with "
        "salt-and-pepper label noise inside the tumour (hundreds of thousands of surfels) takes "
        "a few seconds.",
        "",
        f"Reference: {Path(args.reference).name if args.reference else 'not run'} "
        "(the official BraTS 2023 lesion-wise code, BraTS-MET settings, with DeepMind "
        "surface-distance).",
        "",
        "Wall time is inflated when the machine is busy; CPU time (process time) is the steadier "
        "figure and the speed-up is given for both.",
        "",
        "| case | WT lesions | brainmets wall / CPU (s) | reference wall / CPU (s) | speed-up wall / CPU |",
        "|---|---|---|---|---|",
    ]
    for i, t in enumerate(ours):
        ref = f"{theirs[i]:.1f} / {theirs_cpu[i]:.1f}" if theirs else "not run"
        ratio = f"{theirs[i] / t:.0f}x / {theirs_cpu[i] / ours_cpu[i]:.0f}x" if theirs else "-"
        lines.append(f"| {i} | {lesion_counts[i]} | {t:.3f} / {ours_cpu[i]:.3f} | {ref} | {ratio} |")
    summary = (f"brainmets: median {statistics.median(ours):.3f} s wall, "
               f"{statistics.median(ours_cpu):.3f} s CPU per case")
    if theirs:
        summary += (f"; reference: median {statistics.median(theirs):.1f} s"
                    f"{' (WT/TC/ET timed, scaled by 5/3)' if scale != 1.0 else ''}; "
                    f"median speed-up {statistics.median([r / o for r, o in zip(theirs, ours)]):.0f}x wall, "
                    f"{statistics.median([r / o for r, o in zip(theirs_cpu, ours_cpu)]):.0f}x CPU")
    lines += ["", summary, ""]
    out = Path(args.out)
    write_text(out, "\n".join(lines))
    print(summary)
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
