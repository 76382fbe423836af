"""`brainmets segment` per full-size case: one model, a 3-seed ensemble, the ensemble with mirroring.

Case: `brainmets synth` case 1 of cohort seed 0 on the BraTS grid (240x240x155,
1 mm), its four sequences read from NIfTI. Timed: :func:`brainmets.inference.segment.segment_case`,
i.e. everything ``segment`` does per case except writing the label file (read
and preprocess in memory, every member's sliding window, probabilities back
to the case's grid, mean, labels).

Networks: the default config's U-Net (``config.yaml`` ``models.unet``: tiny
DynUNet 8-16-32, 24^3 windows), 3 input channels (T1c+T1+FLAIR), RANDOM
weights (one seed per ensemble member): the time does not depend on what a
network has learnt. Inference settings: the default config's (overlap 0.25,
batch 8), CPU. The three configurations run in the same process, in turn, so
the ratios to the single model are what matters; each is repeated
``--repeats`` times and the median kept.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_segment.py [--repeats 1] [--out benchmarks/results/segment.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SUBSET = "t1c+t1n+t2f"
SEEDS = (0, 1, 2)


def synth_case(root: Path) -> tuple[str, dict[str, Path]]:
    subprocess.run([sys.executable, "-m", "brainmets", "synth", "--out-dir", str(root), "--n-cases", "1",
                    "--no-progress"], check=True)
    from brainmets.inference.segment import find_cases

    (case, files), = find_cases(root).items()
    return case, files


def main(argv=None) -> int:
    from brainmets.constants import parse_subset, subset_channels
    from brainmets.inference import InferenceSettings
    from brainmets.inference.engine import inference_runtime, prepare_network
    from brainmets.inference.segment import Member, SegmentationModel, segment_case
    from brainmets.models.registry import build_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "segment.json")
    args = parser.parse_args(argv)

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    spec = config["models"]["unet"]
    settings = InferenceSettings(device="cpu", **config["inference"])
    runtime = inference_runtime(settings)
    cin = len(subset_channels(SUBSET))

    def member(seed: int) -> Member:
        torch.manual_seed(seed)
        model = build_model("unet", spec, cin, 3)
        info = {"model_name": "unet", "subset": SUBSET, "in_channels": cin, "patch": spec["patch"], "spec": spec,
                "task": "segmentation"}
        return Member(prepare_network(model, info, runtime, "unet"))

    members = [member(seed) for seed in SEEDS]
    card = {"channels": list(parse_subset(SUBSET)), "preprocessing": {"spacing_mm": None}}
    configurations = {
        "one model": SegmentationModel(members[:1], card, settings, runtime, mirror=False),
        "3-seed ensemble": SegmentationModel(members, card, settings, runtime, mirror=False),
        "3-seed ensemble + mirroring": SegmentationModel(members, card, settings, runtime, mirror=True),
    }
    with tempfile.TemporaryDirectory() as tmp:
        case, files = synth_case(Path(tmp))
        load_start = os.getloadavg()
        seconds = {name: [] for name in configurations}
        for _ in range(args.repeats):
            for name, model in configurations.items():
                start = time.perf_counter()
                result = segment_case(case, files, model)
                seconds[name].append(time.perf_counter() - start)
                print(f"{name}: {seconds[name][-1]:.1f} s", flush=True)
        shape = list(result.labels.shape)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
                      platform.processor())
    report = {
        "case": case,
        "shape": shape,
        "network": {"unet": spec, "weights": "random (untrained), one torch seed per member"},
        "inference": config["inference"],
        "cpu": f"{model_name}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "repeats": args.repeats,
        "seconds": seconds,
        "median_seconds": median,
        "ratio_to_one_model": {name: value / median["one model"] for name, value in median.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
