"""bf16 autocast against fp32 on this CPU: speed of the default networks, and what it does to quality.

Speed (``speed``): in one process on one thread, for each default network of the
study (config.yaml: ``unet``, ``segmentor``, ``detector``, baselines ``resunet``
and ``segresnet``), a training step (forward under the runtime's autocast, the
project's loss in fp32, backward, optimiser step; batch 2 patients x 2 crops of
the training patch) and the prediction of one cohort case (the single-pass
path: every window of a real preprocessed case at the study's overlap and batch
size; for the detector the scoring of every window). fp32 and bf16, NCDHW and
channels_last_3d, interleaved round by round so that load spikes hit every
variant; medians over the rounds. Untrained networks (random weights): the cost
of a window does not depend on the weights.

Quality (``quality``): a default network (``--model``, the U-Net unless told)
trained with config.yaml's settings (150 steps) on a few modality subsets and
seeds, once with ``training.precision: fp32`` and once with ``bf16``, predicting
the val split of a study's cohort (``--results``, read only; its data rules
suffice) with config.yaml's inference settings (the same for both) and
evaluating it (legacy and lesion-wise Dice per region, WT components below
config.yaml's minimum removed as in the study). The verbs run in this process,
one thread, fp32 and bf16 of a (subset, seed) back to back; steps/s is the
training steps' own wall time (history.tsv ``seconds``: no start-up, no
validation).

Run::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_precision.py speed --results /work/bench/after/results
    PYTHONPATH=src .venv/bin/python benchmarks/bench_precision.py quality --results /work/bench/after/results \\
        --work /tmp/bf16 --seeds 0 1 2 [--model segmentor]
    PYTHONPATH=src .venv/bin/python benchmarks/bench_precision.py report --work /tmp/bf16

Writes benchmarks/results/precision_speed.json; the report step writes
precision_quality.json and precision.md (precision_notes.md, the conclusions,
first, then the tables).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import cli, machine, metric_means  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NETWORKS = ["unet", "segmentor", "detector", "resunet", "segresnet"]
SUBSETS = ["t1c", "t1c+t1n", "t2f", "t1c+t1n+t2f+t2w"]
REGIONS = ["WT", "TC", "ET", "NETC", "SNFH"]


def default_config(**overlay) -> dict:
    from brainmets.config import merge_config, read_yaml, validate_config

    config = merge_config(read_yaml(ROOT / "config.yaml"), {"tracking": {"enabled": False}, **overlay})
    return validate_config(config, source=f"config.yaml + {overlay}")


# --------------------------------------------------------------------------- speed


def speed(args) -> dict:
    import torch

    from brainmets.constants import TRAIN_REGIONS
    from brainmets.inference.engine import InferenceSettings, predict_single_pass, prepare_network
    from brainmets.models import build_model, forward_outputs
    from brainmets.runtime import Runtime
    from brainmets.training.losses import detection_loss, detection_targets, region_targets, segmentation_loss
    from brainmets.training.settings import model_spec

    torch.set_num_threads(1)
    config = default_config()
    ts = config["training"]["segmentation"]
    settings = InferenceSettings.from_config(config)
    cache = Path(args.results) / "data" / "preprocessed"
    case = sorted(cache.glob("*.npy"))[0]
    volume = torch.from_numpy(np.load(case)).float()
    variants = [(p, cl) for cl in (False, True) for p in ("fp32", "bf16")]
    rows = {}
    for name in args.networks:
        spec = model_spec(config, name)
        task = "detection" if spec.get("task") == "detection" or spec["arch"] == "densenet121" else "segmentation"
        out_channels = len(TRAIN_REGIONS) if task == "segmentation" else 1
        patch = tuple(spec["patch"])
        batch = ts["batch_patients"] * ts["crops_per_patient"]
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 4, *patch, generator=gen)
        label = torch.randint(0, 4, (batch, 1, *patch), generator=gen).float()
        models, runtimes, optims, nets = {}, {}, {}, {}
        for precision, cl in variants:
            key = (precision, cl)
            torch.manual_seed(0)
            model = build_model(name, spec, in_channels=4, out_channels=out_channels)
            runtimes[key] = Runtime.create("cpu", cl, precision=precision)
            models[key] = runtimes[key].place(model).train()
            optims[key] = torch.optim.Adam(models[key].parameters(), lr=1e-4)
            torch.manual_seed(0)
            evalmodel = build_model(name, spec, in_channels=4, out_channels=out_channels)
            info = {"subset": "t1c+t1n+t2f+t2w", "in_channels": 4, "patch": list(patch), "spec": spec,
                    "task": task, "out_channels": out_channels}
            nets[key] = prepare_network(evalmodel, info, runtimes[key], name)

        def step(key):
            runtime, model, opt = runtimes[key], models[key], optims[key]
            opt.zero_grad(set_to_none=True)
            with runtime.autocast():
                main, aux, extra = forward_outputs(model, runtime.inputs(x))
            if task == "segmentation":
                loss = segmentation_loss(main, aux, region_targets(label), ts["deep_supervision_decay"], extra,
                                         normalise=ts["deep_supervision_normalise"], dice=ts["dice"])
            else:
                loss = detection_loss(main, detection_targets(label, "any_tumour"), extra)
            loss.backward()
            opt.step()

        def predict(key):
            with torch.no_grad():
                if task == "segmentation":
                    predict_single_pass(nets[key], volume, settings, runtimes[key])
                else:
                    from brainmets.inference.windows import padded_shape, window_starts

                    full = padded_shape(volume.shape[1:], patch)
                    padded = torch.nn.functional.pad(volume[:4], [p for have, want in reversed(list(zip(volume.shape[1:], full)))
                                                              for p in (0, want - have)])
                    corners = window_starts(full, patch, float(settings.overlap))
                    size = int(settings.detector_batch_size)
                    for i in range(0, len(corners), size):
                        windows = torch.stack([padded[:, a:a + patch[0], b:b + patch[1], c:c + patch[2]]
                                               for a, b, c in corners[i:i + size]])
                        nets[key](windows, runtimes[key])

        times = {"step": {k: [] for k in variants}, "predict": {k: [] for k in variants}}
        for what, fn, rounds in (("step", step, args.rounds), ("predict", predict, max(3, args.rounds // 3))):
            for key in variants:  # warm-up: first calls pick kernels and allocate
                fn(key)
            for r in range(rounds):
                order = variants if r % 2 == 0 else variants[::-1]
                for key in order:
                    began = time.perf_counter()
                    fn(key)
                    times[what][key].append(time.perf_counter() - began)
        row = {"task": task, "patch": list(patch), "batch": batch, "load": os.getloadavg()[0]}
        for what in times:
            for (precision, cl), values in times[what].items():
                row[f"{what}_{precision}_{'cl' if cl else 'ncdhw'}_s"] = statistics.median(values)
        rows[name] = row
        print(name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, file=sys.stderr,
              flush=True)
    return {"machine": machine(), "case": case.name, "case_shape": list(volume.shape), "rounds": args.rounds,
            "networks": rows, "torch": torch.__version__}


# --------------------------------------------------------------------------- quality


def quality(args) -> None:
    import torch

    torch.set_num_threads(1)
    results = Path(args.results)
    cache, splits, gt = results / "data" / "preprocessed", results / "data" / "splits.tsv", results / "synthetic"
    work = Path(args.work)
    from brainmets.config import write_resolved_config

    files = {}
    for precision in ("fp32", "bf16"):
        config = default_config(training={"precision": precision})
        files[precision] = work / "configs" / f"{precision}.yaml"
        files[precision].parent.mkdir(parents=True, exist_ok=True)
        write_resolved_config(config, files[precision])
    for seed in args.seeds:
        for subset in args.subsets:
            for precision in ("fp32", "bf16"):
                run = work / args.model / precision / subset / f"seed{seed}"
                record = run / "result.json"
                if record.is_file():
                    continue
                load = os.getloadavg()[0]
                train = cli("train", "--config", files[precision], "--study", "modality", "--model", args.model,
                            "--subset", subset, "--seed", seed, "--cache", cache, "--splits", splits,
                            "--out-dir", run / "train", "--threads", 1, "--no-progress")
                predict = cli("predict", "--config", files[precision], "--model", run / "train" / "best.pt",
                              "--cache", cache, "--splits", splits, "--split", "val", "--out-dir", run / "pred",
                              "--no-progress")
                cli("evaluate", "--pred-dir", run / "pred" / "predictions" / "val", "--gt-dir", gt,
                    "--out", run / "val.tsv", "--cases-from", splits, "--split", "val")
                history = pd.read_csv(run / "train" / "history.tsv", sep="\t")
                trained_in = yaml.safe_load((run / "train" / "config.yaml").read_text())["runtime"]["precision"]
                result = {"model": args.model, "precision": precision, "trained_in": trained_in, "subset": subset,
                          "seed": seed, "train_cpu_s": train[0],
                          "steps_per_s": float(history["iteration"].iloc[-1] / history["seconds"].iloc[-1]),
                          "predict_cpu_s": predict[0], "load": [load, os.getloadavg()[0]],
                          "val": metric_means(run / "val.tsv")}
                record.write_text(json.dumps(result, indent=1))
                print(f"[{time.strftime('%H:%M:%S')}] {args.model} {subset} seed {seed} {precision} (trained in "
                      f"{trained_in}): {result['steps_per_s']:.2f} steps/s, train {train[0]:.1f} s CPU, "
                      f"predict {predict[0]:.1f} s, WT legacy {100 * result['val']['WT']['legacy_dice']:.1f}, "
                      f"ET lesion {100 * result['val']['ET']['lesion_dice']:.1f}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- report


def _ratio(row: dict, what: str, cl: str) -> str:
    return f"{row[f'{what}_fp32_{cl}_s'] / row[f'{what}_bf16_{cl}_s']:.2f}x"


def speed_rows(speed: dict) -> list[str]:
    rows = ["| network | patch | step fp32 / bf16 NCDHW (s) | x | step fp32 / bf16 channels_last (s) | x "
            "| case fp32 / bf16 NCDHW (s) | x | case fp32 / bf16 channels_last (s) | x | load |",
            "|" + "---|" * 11]
    for name, r in speed["networks"].items():
        cells = []
        for what in ("step", "predict"):
            for cl in ("ncdhw", "cl"):
                cells.append(f"{r[f'{what}_fp32_{cl}_s']:.3f} / {r[f'{what}_bf16_{cl}_s']:.3f} | {_ratio(r, what, cl)}")
        rows.append(f"| {name} | {'x'.join(map(str, r['patch']))} | " + " | ".join(cells) + f" | {r['load']:.1f} |")
    return rows


def quality_rows(runs: list[dict]) -> list[str]:
    keys = [(region, kind) for region in REGIONS for kind in ("legacy_dice", "lesion_dice")]
    rows = ["| subset | seed | training.precision (ran in) | steps/s | train CPU s | predict CPU s (6 cases) | "
            + " | ".join(f"{r} {'legacy' if k == 'legacy_dice' else 'lesion'}" for r, k in keys) + " | WT FP/patient |",
            "|" + "---|" * (7 + len(keys))]
    order = sorted(runs, key=lambda r: (SUBSETS.index(r["subset"]) if r["subset"] in SUBSETS else 99, r["seed"],
                                        r["precision"] != "fp32"))
    for r in order:
        v = r["val"]
        rows.append(f"| {r['subset']} | {r['seed']} | {r['precision']} ({r['trained_in']}) | {r['steps_per_s']:.2f} | "
                    f"{r['train_cpu_s']:.1f} | "
                    f"{r['predict_cpu_s']:.1f} | " + " | ".join(f"{100 * v[reg][k]:.1f}" for reg, k in keys)
                    + f" | {v['WT']['num_fp']:.2f} |")
    by = {(r["subset"], r["seed"], r["precision"]): r for r in runs}
    pairs = sorted({(s, seed) for s, seed, _ in by if (s, seed, "fp32") in by and (s, seed, "bf16") in by})
    if not pairs:
        return rows

    def value(r, key):
        return r["val"]["WT"]["num_fp"] if key == "fp" else 100 * r["val"][key[0]][key[1]]

    timings = [("steps_per_s",), ("train_cpu_s",), ("predict_cpu_s",)]
    columns = [*timings, *keys, "fp"]

    def cell(r, key):
        return r[key[0]] if key in timings else value(r, key)

    means = {p: [np.mean([cell(by[(s, seed, p)], c) for s, seed in pairs]) for c in columns] for p in ("fp32", "bf16")}
    for p in ("fp32", "bf16"):
        rows.append(f"| **mean** | {len(pairs)} pairs | {p} | " + " | ".join(f"{v:.1f}" for v in means[p]) + " |")
    fp32, bf16 = means["fp32"][:3], means["bf16"][:3]
    rows.append("| **bf16 speed-up** | of the means | | " + f"{bf16[0] / fp32[0]:.2f}x | {fp32[1] / bf16[1]:.2f}x | "
                f"{fp32[2] / bf16[2]:.2f}x |" + " |" * (len(columns) - 3))
    rows.append("| **bf16 - fp32** | mean of the pairs | | "
                + " | ".join(f"{b - a:+.1f}" for a, b in zip(means["fp32"], means["bf16"])) + " |")
    # how far two seeds of one setting lie apart: the noise a precision difference is read against
    seed_pairs = [(a, b) for s, a in pairs for t, b in pairs if s == t and a < b]
    if seed_pairs:
        subsets = sorted({s for s, _ in pairs})
        for p in ("fp32", "bf16"):
            spread = [np.mean([abs(cell(by[(s, b, p)], c) - cell(by[(s, a, p)], c))
                               for s in subsets for a, b in seed_pairs if (s, a) in pairs and (s, b) in pairs])
                      for c in columns]
            rows.append(f"| **seed vs seed** | mean abs difference of two seeds, one subset | {p} | "
                        + " | ".join(f"{v:.1f}" for v in spread) + " |")
        paired = [np.mean([abs(cell(by[(s, seed, "bf16")], c) - cell(by[(s, seed, "fp32")], c)) for s, seed in pairs])
                  for c in columns]
        rows.append("| **bf16 vs fp32** | mean abs difference of a pair | | " + " | ".join(f"{v:.1f}" for v in paired)
                    + " |")
    return rows


def report(args) -> None:
    runs = [json.loads(p.read_text()) for p in sorted(Path(args.work).glob("*/*/*/seed*/result.json"))]
    RESULTS.joinpath("precision_quality.json").write_text(json.dumps(runs, indent=1))
    speed = json.loads(RESULTS.joinpath("precision_speed.json").read_text())
    notes = RESULTS / "precision_notes.md"
    lines = [notes.read_text().rstrip() + "\n" if notes.is_file() else "",
             "## Speed (benchmarks/bench_precision.py speed)", "",
             f"Machine: {speed['machine']['cpu']}, {speed['machine']['cores']} cores, shared (load average per row: "
             f"at the end of the network's measurement); torch {speed['torch']}, one thread. Medians of "
             f"{speed['rounds']} interleaved training steps (batch 4 = 2 patients x 2 crops) and of "
             f"{max(3, speed['rounds'] // 3)} predictions of case {speed['case']} (grid {speed['case_shape'][1:]}, "
             "config.yaml's overlap and batch size; detector: every window scored); x = fp32 time / bf16 time.", "",
             *speed_rows(speed), "",
             *[line for model in sorted({r["model"] for r in runs}, key=NETWORKS.index) for line in (
                 f"## Quality and training speed: {model} (benchmarks/bench_precision.py quality --model {model})", "",
                 f"The default {model}, config.yaml's settings (150 steps), trained once with training.precision fp32 "
                 "and once with bf16 per subset and seed, back to back in one process on one thread, on the cohort, "
                 "split and cache of the default study's data rules; predicted with config.yaml's inference settings "
                 "(the same for both: native_bf16); Dice x100 on the 6 val cases (WT components below 800 mm^3 "
                 "removed, as the study does). steps/s: the training steps' own wall time (history.tsv); CPU "
                 "seconds: the verb's own. 'ran in': the precision the run's config.yaml records.", "",
                 *quality_rows([r for r in runs if r["model"] == model]), "")]]
    (RESULTS / "precision.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("mode", choices=["speed", "quality", "report"])
    parser.add_argument("--results", default="/work/bench/after/results", help="a trained study's results (read only)")
    parser.add_argument("--work", default="/tmp/bf16")
    parser.add_argument("--networks", nargs="+", default=NETWORKS)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--subsets", nargs="+", default=SUBSETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--model", default="unet", help="quality: the network trained")
    args = parser.parse_args()
    if args.mode == "speed":
        path = RESULTS / "precision_speed.json"
        measured = speed(args)
        if path.is_file():  # --networks measures some rows again: keep the others
            measured["networks"] = {**json.loads(path.read_text())["networks"], **measured["networks"]}
        path.write_text(json.dumps(measured, indent=1))
    elif args.mode == "quality":
        quality(args)
    else:
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
