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
``--repeats`` times and the median kept. The report (CPU model from
/proc/cpuinfo, load average before and after each configuration) is rewritten
after every configuration, so a run stopped early keeps what it measured.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_segment.py [--repeats 1] [--out benchmarks/results/segment.json]
"""

from __future__ import annotations

import argparse
import dataclasses
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
    from brainmets.config import load_config
    from brainmets.constants import parse_subset, subset_channels
    from brainmets.inference import InferenceSettings
    from brainmets.inference.engine import inference_runtime, prepare_network
    from brainmets.inference.segment import Member, SegmentationModel, segment_case
    from brainmets.models.registry import build_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "segment.json")
    args = parser.parse_args(argv)

    config = load_config(REPO / "config.yaml")
    spec = config["models"]["unet"]
    settings = dataclasses.replace(InferenceSettings.from_config(config), device="cpu")
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
    report = {
        "network": {"unet": spec, "weights": "random (untrained), one torch seed per member"},
        "inference": dataclasses.asdict(settings),
        "cpu": f"{cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "repeats": args.repeats,
        "seconds": {},
        "load_average": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        case, files = synth_case(Path(tmp))
        report["case"] = case
        # Interleaved repeats: a change of load during the run touches every configuration.
        for _ in range(args.repeats):
            for name, model in configurations.items():
                before = os.getloadavg()
                start = time.perf_counter()
                result = segment_case(case, files, model)
                report["seconds"].setdefault(name, []).append(time.perf_counter() - start)
                report["load_average"].setdefault(name, []).append({"before": before, "after": os.getloadavg()})
                print(f"{name}: {report['seconds'][name][-1]:.1f} s", flush=True)
                report["shape"] = list(result.labels.shape)
                median = {key: statistics.median(values) for key, values in report["seconds"].items()}
                report["median_seconds"] = median
                report["ratio_to_one_model"] = {key: value / median["one model"] for key, value in median.items()}
                args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (the platform's processor string elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor())


if __name__ == "__main__":
    raise SystemExit(main())
