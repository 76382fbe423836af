"""Two-stage versus single-pass inference on one full-size case: wall time and FLOPs, as ratios.

Networks (paper size, random weights, eval mode, subset T1c+T1+FLAIR = 3 channels):
- single-pass: the modality-study 3D U-Net, DynUNet 32-64-128-256-320 at 128^3,
  MONAI sliding window, overlap 0.5;
- two-stage: DenseNet121 3D detector + residual DynUNet segmentor (deep
  supervision, 3 heads; eval mode runs the main head), 64^3 windows, overlap 0.5.

Volume: synthetic case 1 of cohort seed 0 (brainmets.data.synthetic) on the
full 240x240x155 1 mm grid, each sequence z-scored over the brain (0 outside),
i.e. the preprocessed cache without the brain crop. Without the synthetic
generator, random data in a brain-shaped ellipsoid.

Kept fraction: a random detector keeps an arbitrary set of windows, so its
output bias is shifted (after one untimed calibration pass over all windows)
so that it keeps exactly as many windows as contain tumour in the case's
ground truth (an oracle-sized fraction), or ``--kept-fraction``.

Modes:
- default: both paths run end to end through ``brainmets.inference``
  (``predict_single_pass`` / ``predict_two_stage``) in the same process;
- ``--quick``: FLOPs are still exact (counted on the meta device, times the
  real window counts); wall times are *estimated*: the detector's time for one
  batch times its batches, the U-Nets' time for one window times their
  windows (best of 3, the networks timed round-robin). Blending and window
  extraction are not included (they are in the full mode).

Usage: .venv/bin/python benchmarks/bench_inference.py [--quick] [--threads N] [--device cpu|cuda]
Writes benchmarks/results/inference_{quick,full}.json and prints a markdown
summary; benchmarks/results/inference.md is the curated report of these numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from brainmets.config import validate_model, validate_section
from brainmets.constants import subset_channels
from brainmets.inference import (
    InferenceSettings,
    inference_runtime,
    predict_single_pass,
    predict_two_stage,
    prepare_network,
    sliding_window_count,
    window_starts,
)
from brainmets.models import build_model

SUBSET = "t1c+t1n+t2f"
UNET = validate_model("unet", {"arch": "dynunet", "filters": [32, 64, 128, 256, 320], "residual": False,
                               "deep_supervision": 0, "patch": [128] * 3})
SEGMENTOR = validate_model("segmentor", {"arch": "dynunet", "filters": [32, 64, 128, 256, 320], "residual": True,
                                         "deep_supervision": 2, "patch": [64] * 3})
DETECTOR = validate_model("detector", {"arch": "densenet121", "dropout": 0.2, "patch": [64] * 3})
RESULTS = Path(__file__).with_name("results")


def full_size_case() -> tuple[torch.Tensor, np.ndarray, str]:
    """(image (4, 240, 240, 155) z-scored over the brain, label, description)."""
    try:
        from brainmets.constants import MODALITIES
        from brainmets.data.synthetic.cohort import generate_case
    except ImportError:
        generate_case = None
    if generate_case is not None:
        case = generate_case(1, 0)
        brain = case.brain_mask() > 0
        image = np.zeros((4, *case.shape), np.float32)
        for channel, modality in enumerate(MODALITIES):
            values = case.images[modality].astype(np.float32)
            inside = values[brain]
            image[channel][brain] = (inside - inside.mean()) / max(inside.std(), 1e-6)
        return torch.from_numpy(image), case.seg, f"synthetic case 1 (cohort seed 0), {len(case.lesions)} lesions"
    rng = np.random.default_rng(0)
    shape = (240, 240, 155)
    grid = np.indices(shape, dtype=np.float32)
    brain = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, (120, 120, 75), (70, 85, 65))) <= 1
    image = (rng.standard_normal((4, *shape)).astype(np.float32)) * brain
    label = np.zeros(shape, np.uint8)
    label[100:115, 90:110, 70:82] = 3
    return torch.from_numpy(image), label, "random data in a brain-shaped ellipsoid (no synthetic generator)"


def tumour_windows(label: np.ndarray, patch, overlap) -> int:
    shape = tuple(max(n, p) for n, p in zip(label.shape, patch))
    padded = np.zeros(shape, bool)
    padded[: label.shape[0], : label.shape[1], : label.shape[2]] = label > 0
    return sum(
        bool(padded[x : x + patch[0], y : y + patch[1], z : z + patch[2]].any())
        for x, y, z in window_starts(shape, patch, overlap)
    )


def calibrate_detector(detector, image, settings, runtime, keep: int) -> list[float]:
    """Shift the detector's output bias so that exactly ``keep`` windows score above the threshold."""
    patch = detector.patch
    source = image[detector.channels].to(runtime.device)
    corners = window_starts(tuple(max(n, p) for n, p in zip(image.shape[1:], patch)), patch, settings.overlap)
    logits = []
    with torch.inference_mode():
        for i in range(0, len(corners), settings.batch_size):
            batch = torch.stack(
                [source[:, x : x + patch[0], y : y + patch[1], z : z + patch[2]] for x, y, z in corners[i : i + settings.batch_size]]
            )
            logits.append(detector(batch, runtime).reshape(-1).cpu())
    ordered = torch.cat(logits).sort(descending=True).values.tolist()
    if keep <= 0:
        cut = ordered[0] + 1.0
    elif keep >= len(ordered):
        cut = ordered[-1] - 1.0
    else:
        cut = (ordered[keep - 1] + ordered[keep]) / 2
    with torch.no_grad():
        detector.model.class_layers.out.bias -= cut - settings.detector_threshold
    return ordered


def time_interleaved(networks: dict, runtime, batches: dict, repeats: int = 3) -> dict:
    """Best-of-``repeats`` seconds of one forward of ``batches[name]`` windows per network.

    The networks are timed round-robin (after one warm-up each), so a change in
    machine load hits all of them alike; the minimum is the least disturbed run.
    """
    inputs = {
        name: torch.randn(batches[name], len(net.channels), *net.patch, device=runtime.device)
        for name, net in networks.items()
    }
    best = {name: math.inf for name in networks}
    with torch.inference_mode():
        for name, net in networks.items():
            net(inputs[name], runtime)
        for _ in range(repeats):
            for name, net in networks.items():
                runtime.synchronize()
                start = time.perf_counter()
                net(inputs[name], runtime)
                runtime.synchronize()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="exact FLOPs, wall time estimated from one batch per network")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--kept-fraction", type=float, default=None, help="override the oracle-sized kept fraction")
    parser.add_argument("--channels-last", action="store_true", help="channels_last_3d on CPU as well")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = InferenceSettings(**validate_section("inference", {
        "overlap": 0.5, "batch_size": args.batch_size, "device": args.device,
        "channels_last": True if args.channels_last else "auto"}))
    runtime = inference_runtime(settings)
    torch.manual_seed(0)

    clock = time.perf_counter()
    image, label, source = full_size_case()
    print(f"volume {tuple(image.shape)} from {source} ({time.perf_counter() - clock:.1f} s)", flush=True)
    cin = len(subset_channels(SUBSET))

    def network(name, spec, out):
        model = build_model(name, spec, cin, out)
        info = {"model_name": name, "subset": SUBSET, "in_channels": cin, "patch": spec["patch"], "spec": spec}
        return prepare_network(model, info, runtime, name)

    unet, segmentor, detector = network("unet", UNET, 3), network("segmentor", SEGMENTOR, 3), network("detector", DETECTOR, 1)
    shape = tuple(image.shape[1:])
    n_windows = len(window_starts(tuple(max(n, 64) for n in shape), (64, 64, 64), 0.5))
    n_unet = sliding_window_count(shape, UNET["patch"], 0.5)
    oracle = tumour_windows(label, (64, 64, 64), 0.5)
    keep = round(args.kept_fraction * n_windows) if args.kept_fraction is not None else oracle
    print(f"windows: two-stage {n_windows} (tumour in {oracle}, keeping {keep}), single-pass {n_unet}", flush=True)

    result = {
        "mode": "quick (estimated wall time)" if args.quick else "full (measured end to end)",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {runtime.device}",
        "load_average_start": os.getloadavg(),
        "volume": list(shape),
        "source": source,
        "windows_two_stage": n_windows,
        "windows_kept": keep,
        "windows_with_tumour": oracle,
        "windows_single_pass": n_unet,
        "gmac_per_window": {"unet_128": unet.flops_per_window / 2e9, "segmentor_64": segmentor.flops_per_window / 2e9,
                            "detector_64": detector.flops_per_window / 2e9},
    }
    flops_single = unet.flops_per_window * n_unet
    flops_two = detector.flops_per_window * n_windows + segmentor.flops_per_window * keep
    result["flops"] = {"single_pass": flops_single, "two_stage": flops_two, "ratio_single_over_two_stage": flops_single / flops_two}

    if args.quick:
        # the detector is overhead-bound: time it at the batch size inference uses; the two
        # U-Nets are compute-bound (near-linear in windows): time one window, scale by windows
        b = settings.batch_size
        best = time_interleaved(
            {"detector": detector, "segmentor": segmentor, "unet": unet}, runtime,
            {"detector": b, "segmentor": 1, "unet": 1},
        )
        single = best["unet"] * n_unet
        two = best["detector"] * math.ceil(n_windows / b) + best["segmentor"] * keep
        result["seconds_best_of_3"] = {"detector_batch": b, **best}
    else:
        calibrate_detector(detector, image, settings, runtime, keep)
        sp = predict_single_pass(unet, image, settings, runtime)
        ts = predict_two_stage(detector, segmentor, image, settings, runtime)
        assert ts.record["windows_kept"] == keep, ts.record
        assert sp.record["windows_total"] == n_unet, sp.record
        single, two = sp.record["seconds"], ts.record["seconds"]
        result["records"] = {"single_pass": sp.record, "two_stage": ts.record}
    result["seconds"] = {"single_pass": single, "two_stage": two, "ratio_single_over_two_stage": single / two}
    result["load_average_end"] = os.getloadavg()

    RESULTS.mkdir(exist_ok=True)
    stem = "inference_quick" if args.quick else "inference_full"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    lines = [
        f"# Inference benchmark ({result['mode']})",
        "",
        f"- machine: {result['machine']}; load average at start {result['load_average_start'][0]:.2f}",
        f"- volume: {shape} ({source})",
        f"- windows: two-stage {n_windows} of 64^3, kept {keep} ({keep / n_windows:.1%}; "
        f"{oracle} contain tumour); single-pass {n_unet} of 128^3",
        f"- GMAC per window: U-Net 128^3 {unet.flops_per_window / 2e9:.1f}, segmentor 64^3 "
        f"{segmentor.flops_per_window / 2e9:.1f}, detector 64^3 {detector.flops_per_window / 2e9:.2f}",
        "",
        "| | single-pass | two-stage | single / two-stage |",
        "|---|---:|---:|---:|",
        f"| TFLOP | {flops_single / 1e12:.2f} | {flops_two / 1e12:.2f} | {flops_single / flops_two:.2f} |",
        f"| seconds | {single:.1f} | {two:.1f} | {single / two:.2f} |",
        "",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
