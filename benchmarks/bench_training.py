"""Training-loop benchmark: data-wait fraction and achieved GFLOP/s against this machine's conv ceiling.

Method (all in one process, so the ratios compare like with like):

1. Ceiling: a 3D convolution 32 -> 32 channels, kernel 3, on 1 x 32 x 64^3
   (forward), float32, with and without channels_last_3d, best of N.
2. Training step GFLOP/s: FLOPs of one full step (forward + backward, counted
   with torch.utils.flop_counter on the real model and batch) divided by the
   median wall time of that step (forward, Dice+BCE with deep supervision,
   backward, SGD), with and without channels_last_3d. Networks: the tiny
   default U-Net (DynUNet 8-16-32-64, 4 sequences, batch 2 x 5 crops of 32^3)
   and a mid-size segmentor (DynUNet 16-32-64-128-256, residual, 2 extra heads,
   batch 2 x 1 crop of 64^3).
3. Data wait: the real loop (:func:`brainmets.training.loop.train`) on a
   synthetic cache (memory-mapped .npy cases), with full augmentation,
   with the background prefetch thread and inline (``prefetch: 0``); the
   fraction of loop wall time spent waiting for the next batch.

Run: ``.venv/bin/python benchmarks/bench_training.py [--quick]``; writes
benchmarks/results/training.md and training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from brainmets.config import validate_model, validate_section
from brainmets.models import build_model, forward_outputs
from brainmets.training.loop import RunRequest, train
from brainmets.training.losses import region_targets, segmentation_loss
from brainmets.training.schedules import build_optimizer
from brainmets.training.settings import TrainingSettings

RESULTS = Path(__file__).resolve().parent / "results"

NETWORKS = {
    "tiny U-Net (default config)": {
        "spec": {"arch": "dynunet", "filters": [8, 16, 32, 64], "residual": False, "deep_supervision": 0,
                 "patch": [32, 32, 32]},
        "batch": 10,
    },
    "mid-size segmentor": {
        "spec": {"arch": "dynunet", "filters": [16, 32, 64, 128, 256], "residual": True, "deep_supervision": 2,
                 "patch": [64, 64, 64]},
        "batch": 2,
    },
}


def best_time(fn, repeats: int) -> list[float]:
    fn()  # warm-up (oneDNN primitive creation)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return times


def conv_ceiling(repeats: int) -> dict[str, float]:
    conv = torch.nn.Conv3d(32, 32, 3, padding=1)
    x = torch.randn(1, 32, 64, 64, 64)
    flops = 2 * 32 * 32 * 27 * 64**3
    out = {}
    with torch.no_grad():
        for name, cl in (("ncdhw", False), ("channels_last_3d", True)):
            c = conv.to(memory_format=torch.channels_last_3d) if cl else conv
            xi = x.contiguous(memory_format=torch.channels_last_3d) if cl else x
            out[name] = flops / min(best_time(lambda: c(xi), repeats)) / 1e9
    return out


def step_gflops(spec: dict, batch: int, channels_last: bool, repeats: int) -> dict[str, float]:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = build_model("bench", validate_model("bench", spec), 4, 3)
    x = torch.randn(batch, 4, *spec["patch"])
    label = (torch.rand(batch, 1, *spec["patch"]) > 0.9).float() * 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    paper = TrainingSettings.from_section(validate_section("training"))
    optimizer = build_optimizer(model.parameters(), paper.segmentation.optimizer)
    target = region_targets(label)

    def step():
        main, aux, extra = forward_outputs(model, x)
        loss = segmentation_loss(main, aux, target, 0.5, extra)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    times = best_time(step, repeats)
    median = statistics.median(times)
    return {"step_s": median, "step_gflop": flops / 1e9, "gflops": flops / median / 1e9}


def write_cache(root: Path, n_cases: int, shape=(96, 96, 80)) -> tuple[Path, Path]:
    cache = root / "cache"
    cache.mkdir(parents=True)
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    centre = np.array(shape).reshape(3, 1, 1, 1) / 2
    brain = (((grid - centre) / (np.array(shape).reshape(3, 1, 1, 1) * 0.45)) ** 2).sum(0) <= 1
    names = []
    for i in range(n_cases):
        label = np.zeros(shape, np.float32)
        for _ in range(rng.integers(1, 5)):
            c = rng.integers(20, np.array(shape) - 20)
            r = rng.uniform(2, 8)
            dist = np.sqrt(((grid - c.reshape(3, 1, 1, 1)) ** 2).sum(0))
            label[(dist <= r + 3) & (label == 0)] = 2
            label[dist <= r] = 3
            label[dist <= r / 2] = 1
        image = rng.normal(0, 1, (4, *shape)).astype(np.float32) * brain
        name = f"bench-{i:03d}"
        np.save(cache / f"{name}.npy", np.concatenate([image, label[None]]).astype(np.float32))
        (cache / f"{name}.json").write_text(json.dumps({"case": name, "cache_shape": list(shape)}))
        names.append(name)
    splits = root / "splits.tsv"
    pd.DataFrame({"case": names, "split": ["train"] * (n_cases - 1) + ["val"]}).to_csv(splits, sep="\t", index=False)
    return cache, splits


def data_wait(root: Path, cache: Path, splits: Path, name: str, net: dict, prefetch: int, iterations: int) -> float:
    config = {  # the sections train() reads, validated as load_config would
        "models": {"net": validate_model("net", net["spec"])},
        "training": validate_section("training", {
            "segmentation": {"iterations": iterations, "batch_patients": 2, "crops_per_patient": net["batch"] // 2},
            "checkpoint_every": iterations, "val_every": 0, "log_every": iterations, "prefetch": prefetch}),
        "tracking": {"enabled": False},
    }
    out = root / f"run-{name.split()[0]}-{prefetch}"
    result = train(config, RunRequest("bench", "net", "t1c+t1n+t2f+t2w", 0, cache, splits, out), progress=False)
    return result.data_wait_fraction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and iterations")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    iterations = {"tiny U-Net (default config)": 10 if args.quick else 30, "mid-size segmentor": 3 if args.quick else 6}
    torch.set_num_threads(os.cpu_count() or 1)
    report: dict = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                               f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at start"}
    report["ceiling_gflops"] = conv_ceiling(repeats)
    print("conv3d ceiling GFLOP/s:", report["ceiling_gflops"])
    report["networks"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache, splits = write_cache(Path(tmp), 6)
        for name, net in NETWORKS.items():
            row = {}
            for cl in (False, True):
                key = "channels_last_3d" if cl else "ncdhw"
                row[key] = step_gflops(net["spec"], net["batch"], cl, repeats)
                row[key]["fraction_of_ceiling"] = row[key]["gflops"] / report["ceiling_gflops"][key]
            row["data_wait_prefetch"] = data_wait(Path(tmp), cache, splits, name, net, 2, iterations[name])
            row["data_wait_inline"] = data_wait(Path(tmp), cache, splits, name, net, 0, iterations[name])
            report["networks"][name] = row
            print(name, json.dumps(row, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Training loop benchmark",
        "",
        f"Machine: {report['machine']}. Written by `benchmarks/bench_training.py` (method in its docstring).",
        "",
        "Ceiling (same process): conv3d 32->32, k3, 1x32x64^3 forward: "
        f"{report['ceiling_gflops']['ncdhw']:.0f} GFLOP/s (NCDHW), "
        f"{report['ceiling_gflops']['channels_last_3d']:.0f} GFLOP/s (channels_last_3d).",
        "",
        "| network | layout | step (s) | GFLOP/step | GFLOP/s | of ceiling |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["networks"].items():
        for key in ("ncdhw", "channels_last_3d"):
            r = row[key]
            lines.append(f"| {name} | {key} | {r['step_s']:.3f} | {r['step_gflop']:.1f} | {r['gflops']:.1f} | "
                         f"{100 * r['fraction_of_ceiling']:.0f} % |")
    lines += ["", "| network | data wait, prefetch thread | data wait, inline |", "|---|---|---|"]
    for name, row in report["networks"].items():
        lines.append(f"| {name} | {100 * row['data_wait_prefetch']:.1f} % | {100 * row['data_wait_inline']:.1f} % |")
    lines += [
        "",
        "Reading: GFLOP/s is the whole step (forward + backward + loss + SGD) over its counted FLOPs, against the",
        "forward conv ceiling of the same layout; backward convolutions and the small early layers run below it.",
        "Data wait is the share of the loop's wall time the training thread blocked on the next batch (crop from",
        "the memory map + MONAI augmentation); the prefetch thread hides nearly all of it. The 2 cores were shared",
        "with other jobs (load average above): absolute figures are depressed, compare the ratios.",
    ]
    (RESULTS / "training.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'training.md'}")


if __name__ == "__main__":
    main()
