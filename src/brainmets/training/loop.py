"""One training loop for the segmentors and the detector: sample, augment, step, validate, checkpoint.

:func:`train` is the stage's API (``brainmets train`` only parses arguments
and calls it). A run lives in its own directory::

    config.yaml    resolved settings of this run (written first)
    history.tsv    iteration, loss, lr, seconds, val_* (rewritten at every checkpoint)
    checkpoint.pt  resumable state, every ``checkpoint_every`` steps and at the end
    best.pt        best-by-validation weights (``keep_best``)
    model.pt       final weights, written LAST: its presence means the run is complete

Calling :func:`train` again on the same directory resumes from
``checkpoint.pt``, or does nothing if ``model.pt`` exists.

Determinism: the initial weights come from ``torch.manual_seed(seed)``; the
batch of step ``t`` (patients, crops, augmentation) is a function of
``(seed, t)`` (sampling.py); the torch RNG (dropout) is re-seeded from
``(seed, t)`` before every step; the learning rate is a function of ``t``
(schedules.py). A checkpoint therefore only needs the model, optimiser and
iteration to continue exactly: on CPU a resumed run ends with bitwise the
same weights as an uninterrupted one (tests/training/test_resume.py).

Segmentation training may be restricted to patches a trained detector
accepts (``detector=``, the paper's train-on-detected option): each batch
slot draws ``detector_draws`` candidate crops, the detector scores them in one
batch, and the slot takes its first candidate whose logit exceeds
``detector_threshold`` (else the highest-scored one), so the extra work is
bounded by ``detector_draws x batch`` detector patches a step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from brainmets.constants import TRAIN_REGIONS, subset_channels
from brainmets.decision import resolve_subset
from brainmets.errors import BrainmetsError
from brainmets.io import read_table, write_json, write_table, write_text
from brainmets.training.settings import (
    TaskSettings,
    TrainingSettings,
    model_patch,
    model_spec,
    model_task,
    training_settings,
)

logger = logging.getLogger(__name__)

_TORCH_STREAM = 3  # stream of step_seed() for the torch RNG (dropout)
#: Convolutional networks that break on channels_last_3d input (SegResNetVAE's VAE head calls
#: ``.view`` on its feature map), so ``channels_last: auto`` keeps them in NCDHW.
_NOT_CHANNELS_LAST = frozenset({"segresnetvae"})


@dataclass(frozen=True)
class RunRequest:
    """What to train and where: the identity of one run and its inputs."""

    study: str
    model: str
    subset: str  # canonical key (resolve ``selected`` / ``@file`` with :func:`resolve_subset` first)
    seed: int
    cache_dir: Path
    splits: Path
    out_dir: Path
    detector: Path | None = None
    iterations: int | None = None  # overrides the task's budget
    threads: int | None = None  # overrides training.threads
    subset_alias: str | None = None  # e.g. "selected", recorded in config.yaml and MLflow


@dataclass
class TrainResult:
    status: str  # "trained" | "exists" | "stopped"
    out_dir: Path
    iteration: int = 0
    start_iteration: int = 0
    data_wait_fraction: float = float("nan")
    best: dict[str, Any] | None = None


def _split_cases(splits: Path) -> dict[str, list[str]]:
    table = read_table(splits, what="splits table")
    missing = {"case", "split"} - set(table.columns)
    if missing:
        raise BrainmetsError(f"splits table {splits} lacks column(s) {', '.join(sorted(missing))}")
    return {name: sorted(table.loc[table["split"] == name, "case"].astype(str)) for name in ("train", "val", "test")}


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BrainmetsError(f"training.device is {name!r} but no CUDA device is available")
    return torch.device(name)


def _fingerprint(resolved: Mapping[str, Any], cases: Mapping[str, Sequence[str]]) -> str:
    """Hash of what determines the weights (settings, model, subset, seed, cases), not of paths or threads."""
    keep = {k: v for k, v in resolved.items() if k not in ("data", "runtime")}
    blob = json.dumps({"resolved": keep, "cases": cases}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _resolved_config(request: RunRequest, task: str, settings: TrainingSettings, task_settings: TaskSettings,
                     spec: Mapping[str, Any], patch: Sequence[int], in_channels: int, out_channels: int,
                     cases: Mapping[str, Sequence[str]], device: str, threads: int | None) -> dict[str, Any]:
    top = settings.to_dict()
    for name in ("segmentation", "detection"):  # record only the fields the chosen optimiser/schedule use
        opt, sch = top[name]["optimizer"], top[name]["schedule"]
        for key in (("betas",) if opt["name"] == "sgd" else ("momentum", "nesterov")):
            opt.pop(key)
        unused = {"poly": ("warmup_iterations", "warmup_start_lr", "min_lr"),
                  "warmup_cosine": ("exponent",),
                  "constant": ("exponent", "warmup_iterations", "warmup_start_lr", "min_lr")}[sch["name"]]
        for key in unused:
            sch.pop(key)
    return {
        "study": request.study,
        "model": request.model,
        "subset": request.subset,
        "subset_alias": request.subset_alias,
        "seed": request.seed,
        "task": task,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "patch": list(patch),
        "model_spec": dict(spec),
        "training": {
            task: dataclasses.asdict(task_settings) | {"optimizer": top[task]["optimizer"],
                                                       "schedule": top[task]["schedule"]},
            "augmentation": top["augmentation"],
            **{k: v for k, v in top.items()
               if k not in ("segmentation", "detection", "augmentation", "device", "threads", "prefetch")},
        },
        "train_on_detected": request.detector is not None,
        "detector": str(request.detector) if request.detector else None,
        "data": {"cache": str(Path(request.cache_dir).resolve()), "splits": str(Path(request.splits).resolve()),
                 "n_train": len(cases["train"]), "n_val": len(cases["val"])},
        "runtime": {"device": device, "threads": threads, "prefetch": settings.prefetch},
    }


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(obj, default=str)), sort_keys=False)


class _Validator:
    """Scores the model on fixed, un-augmented validation patches (cheap, comparable across steps).

    Segmentation: Dice of each region over all patches together (thresholded
    sigmoid at 0.5), ``val_score`` = their mean. Detection: BCE, sensitivity,
    specificity at logit 0, ``val_score`` = balanced accuracy.
    """

    def __init__(self, patches, task: str, batch_size: int, device, channels_last: bool):
        self.patches = patches
        self.task = task
        self.batch_size = batch_size
        self.device = device
        self.channels_last = channels_last

    def __call__(self, model) -> dict[str, float]:
        import torch

        from brainmets.models import forward_outputs
        from brainmets.training.losses import detection_targets, region_targets

        was_training = model.training
        model.eval()
        tp = torch.zeros(len(TRAIN_REGIONS)); pred_sum = torch.zeros_like(tp); true_sum = torch.zeros_like(tp)
        det = {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "bce": 0.0}
        with torch.no_grad():
            for i in range(0, len(self.patches.image), self.batch_size):
                x = _to_device(self.patches.image[i:i + self.batch_size], self.device, self.channels_last)
                label = self.patches.label[i:i + self.batch_size].to(self.device)
                with _autocast(self.device):
                    logits, _, _ = forward_outputs(model, x)
                logits = logits.float()
                if self.task == "segmentation":
                    target = region_targets(label).bool()
                    pred = logits > 0
                    dims = [0, 2, 3, 4]
                    tp += (pred & target).sum(dims).cpu()
                    pred_sum += pred.sum(dims).cpu()
                    true_sum += target.sum(dims).cpu()
                else:
                    target = detection_targets(label)
                    logits = logits.reshape(target.shape)
                    det["bce"] += float(torch.nn.functional.binary_cross_entropy_with_logits(
                        logits, target, reduction="sum"))
                    pred, truth = logits > 0, target > 0.5
                    det["tp"] += int((pred & truth).sum()); det["fp"] += int((pred & ~truth).sum())
                    det["tn"] += int((~pred & ~truth).sum()); det["fn"] += int((~pred & truth).sum())
        model.train(was_training)
        if self.task == "segmentation":
            # A region absent from every patch and never predicted is a perfect 1, as in BraTS scoring.
            dice = torch.where(pred_sum + true_sum > 0, 2 * tp / (pred_sum + true_sum).clamp(min=1), torch.ones_like(tp))
            scores = {f"val_dice_{r}": float(d) for r, d in zip(TRAIN_REGIONS, dice)}
            scores["val_score"] = float(dice.mean())
            return scores
        sens = det["tp"] / (det["tp"] + det["fn"]) if det["tp"] + det["fn"] else float("nan")
        spec = det["tn"] / (det["tn"] + det["fp"]) if det["tn"] + det["fp"] else float("nan")
        n = len(self.patches.image)
        balanced = float(sum(v for v in (sens, spec) if not math.isnan(v)) / max(1, sum(not math.isnan(v) for v in (sens, spec))))
        return {"val_bce": det["bce"] / n, "val_sensitivity": sens, "val_specificity": spec, "val_score": balanced}


def _autocast(device):
    import contextlib

    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()  # bf16 is ~4x slower on CPUs without AMX (cpu-facts.md): plain fp32


def _to_device(x, device, channels_last: bool):
    import torch

    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x


def _centre_fit(x, patch: Sequence[int]):
    """Centre-crop or zero-pad ``(B, C, *spatial)`` to ``patch`` (segmentor crops fed to a detector of another size)."""
    import torch.nn.functional as F

    for axis, size in enumerate(patch, start=2):
        have = x.shape[axis]
        if have > size:
            start = (have - size) // 2
            x = x.narrow(axis, start, size)
        elif have < size:
            before = (size - have) // 2
            pad = [0, 0] * (x.dim() - axis - 1) + [before, size - have - before]
            x = F.pad(x, pad)  # F.pad lists the last axis first
    return x


class _DetectedFilter:
    """Keeps, per batch slot, the first candidate crop the detector accepts (else its best-scored one)."""

    def __init__(self, detector, info: Mapping[str, Any], threshold: float, draws: int, device, channels_last: bool):
        self.detector = detector
        self.patch = [int(p) for p in info["patch"]]
        self.threshold = float(threshold)
        self.draws = int(draws)
        self.device = device
        self.channels_last = channels_last
        self.accepted = 0
        self.seen = 0

    def __call__(self, batch):
        import torch

        from brainmets.models import forward_outputs

        x = _to_device(_centre_fit(batch.image, self.patch), self.device, self.channels_last)
        with torch.no_grad(), _autocast(self.device):
            logits = forward_outputs(self.detector, x)[0].float().reshape(-1, self.draws).cpu()
        accepted = logits > self.threshold
        first = torch.where(accepted.any(1), accepted.float().argmax(1), logits.argmax(1))
        rows = torch.arange(len(first)) * self.draws + first
        self.accepted += int(accepted.any(1).sum())
        self.seen += len(first)
        return dataclasses.replace(batch, image=batch.image[rows], label=batch.label[rows],
                                  positive=batch.positive[rows])


def _load_detector(path: Path, subset: str, device):
    from brainmets.models import load_trained

    detector, info = load_trained(path, device)
    if info.get("task") != "detection":
        raise BrainmetsError(f"{path} is a {info.get('task')} model; --detector needs a trained detector")
    if info.get("subset") != subset:
        raise BrainmetsError(
            f"detector {path} was trained on subset {info.get('subset')!r}, this segmentor on {subset!r}; "
            "train-on-detected needs both on the same sequences"
        )
    for p in detector.parameters():
        p.requires_grad_(False)
    return detector.eval(), info


def write_model_info(path: Path, spec: Mapping[str, Any], in_channels: int, out_channels: int,
                     patch: Sequence[int], name: str) -> None:
    """Size facts of the network for torch-free reporting (parameters, GMAC per window, patch).

    Counted on a fresh copy of the architecture: the numbers do not depend on the weights.
    """
    from brainmets.models import build_model, count_parameters, model_flops

    net = build_model(name, spec, in_channels, out_channels)
    write_json(path, {
        "model_name": name,
        "parameters": int(count_parameters(net)),
        "gmac_per_window": model_flops(net, in_channels, patch) / 2e9,
        "patch": [int(p) for p in patch],
        "in_channels": int(in_channels),
    })


def train(config: Mapping[str, Any], request: RunRequest, progress: bool = True,
          stop_at: int | None = None) -> TrainResult:
    """Train (or resume, or skip when finished) one run; see the module docstring for the files written.

    ``stop_at``: stop once this many iterations are done, after writing a
    checkpoint there (as a job hitting its time limit would, but cleanly);
    calling again continues. The result's status is then ``"stopped"`` and no
    ``model.pt`` is written.
    """
    out_dir = Path(request.out_dir)
    model_path = out_dir / "model.pt"
    if model_path.is_file():
        logger.info("%s exists: run already trained, nothing to do", model_path)
        return TrainResult("exists", out_dir)

    import torch

    from brainmets.models import build_model, forward_outputs, is_convolutional, resolve_arch, save_trained
    from brainmets.tracking import RunTracker, tracking_uri
    from brainmets.training.augment import PatchAugmenter
    from brainmets.training.checkpoint import load_checkpoint, restore_training_state, save_checkpoint
    from brainmets.training.losses import detection_loss, detection_targets, region_targets, segmentation_loss
    from brainmets.training.sampling import BatchPrefetcher, PatchSampler, step_seed
    from brainmets.training.schedules import build_optimizer, build_scheduler

    settings = training_settings(config)
    spec = model_spec(config, request.model)
    task = model_task(request.model, spec)
    patch = model_patch(request.model, spec)
    ts = settings.task(task)
    if request.iterations is not None:
        if request.iterations < 1:
            raise BrainmetsError(f"--iterations must be >= 1, got {request.iterations}")
        ts = dataclasses.replace(ts, iterations=int(request.iterations))
    if request.detector is not None and task != "segmentation":
        raise BrainmetsError(f"--detector applies to segmentation models; {request.model!r} is a {task} model")
    subset = resolve_subset(request.subset)
    channels = subset_channels(subset)
    in_channels, out_channels = len(channels), (len(TRAIN_REGIONS) if task == "segmentation" else 1)
    cases = _split_cases(Path(request.splits))
    if not cases["train"]:
        raise BrainmetsError(f"splits table {request.splits} has no 'train' cases")
    val_cases = cases["val"][: settings.val_max_cases] if settings.val_max_cases else cases["val"]

    device = _device(settings.device)
    threads = request.threads or settings.threads
    if threads:
        torch.set_num_threads(int(threads))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    channels_last = {"true": True, "false": False}.get(
        settings.channels_last, is_convolutional(spec) and resolve_arch(request.model, spec) not in _NOT_CHANNELS_LAST)

    resolved = _resolved_config(request, task, settings, ts, spec, patch, in_channels, out_channels,
                                {"train": cases["train"], "val": val_cases}, str(device), threads)
    fingerprint = _fingerprint(resolved, {"train": cases["train"], "val": val_cases})
    write_text(out_dir / "config.yaml", _yaml(resolved))  # creates out_dir (a clear error when it cannot)

    torch.manual_seed(request.seed)
    model = build_model(request.model, spec, in_channels, out_channels).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    model.train()
    optimizer = build_optimizer(model.parameters(), ts.optimizer)
    scheduler = build_scheduler(optimizer, ts.schedule, ts.iterations)

    checkpoint_path = out_dir / "checkpoint.pt"
    start, history, best, extra = 0, [], None, {}
    if checkpoint_path.is_file():
        payload = load_checkpoint(checkpoint_path, fingerprint)
        restore_training_state(payload, model, optimizer, scheduler)
        start, history, best, extra = payload["iteration"], list(payload["history"]), payload["best"], payload["extra"]
        logger.info("resuming %s from iteration %d of %d", checkpoint_path, start, ts.iterations)

    augmenter = PatchAugmenter(settings.augmentation, device)
    sampler = PatchSampler(request.cache_dir, cases["train"], channels, patch, batch_patients=ts.batch_patients,
                           crops_per_patient=ts.crops_per_patient, pos_fraction=ts.pos_fraction, task=task,
                           seed=request.seed, positive_centre=ts.positive_centre, augmenter=augmenter)
    validator = None
    if settings.val_every and val_cases:
        val_sampler = PatchSampler(request.cache_dir, val_cases, channels, patch, batch_patients=1,
                                   crops_per_patient=1, pos_fraction=ts.pos_fraction, task=task,
                                   seed=request.seed, positive_centre=ts.positive_centre)
        validator = _Validator(val_sampler.fixed_patches(settings.val_crops_per_case), task, ts.batch_size,
                               device, channels_last)
    elif settings.val_every:
        logger.warning("splits table %s has no 'val' cases: no validation, best.pt is not written", request.splits)

    detected = None
    draws = 1
    if request.detector is not None:
        detector, det_info = _load_detector(Path(request.detector), subset, device)
        detected = _DetectedFilter(detector, det_info, ts.detector_threshold, ts.detector_draws, device, channels_last)
        draws = ts.detector_draws

    info = {"model_name": request.model, "spec": spec, "in_channels": in_channels, "out_channels": out_channels,
            "subset": subset, "task": task, "patch": list(patch), "iteration": start, "seed": request.seed,
            "study": request.study, "train_on_detected": request.detector is not None}
    tracker = RunTracker.start(tracking_uri(config), study=request.study, model=request.model, subset=subset,
                               seed=request.seed, run_dir=out_dir, params=resolved)

    def write_history() -> None:
        import pandas as pd

        columns = ["iteration", "loss", "lr", "seconds"]
        frame = pd.DataFrame(history)
        frame = frame.reindex(columns=columns + [c for c in frame.columns if c not in columns])
        write_table(frame, out_dir / "history.tsv")

    def checkpoint(done: int) -> None:
        save_checkpoint(checkpoint_path, model=model, optimizer=optimizer, scheduler=scheduler, iteration=done,
                        history=history, best=best, fingerprint=fingerprint,
                        extra={"window": window, "seconds": seconds})
        write_history()
        tracker.flush()

    def step(batch) -> float:
        torch.manual_seed(step_seed(request.seed, batch.iteration, _TORCH_STREAM))
        x = _to_device(batch.image, device, channels_last)
        label = batch.label.to(device, non_blocking=True)
        with _autocast(device):
            main, aux, extra_loss = forward_outputs(model, x)
        if task == "segmentation":
            loss = segmentation_loss(main, aux, region_targets(label), ts.deep_supervision_decay, extra_loss)
        else:
            loss = detection_loss(main, detection_targets(label), extra_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if ts.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), ts.grad_clip)
        optimizer.step()
        scheduler.step()
        return float(loss.detach())

    window: list[float] = list(extra.get("window", []))
    seconds = float(extra.get("seconds", 0.0))
    total = ts.iterations
    stop = total if stop_at is None else min(max(int(stop_at), start), total)
    prefetcher = BatchPrefetcher(lambda t: sampler.batch(t, draws=draws), start, stop, settings.prefetch)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start, desc=f"{request.study}/{request.model}/{subset}/seed{request.seed}",
               unit="it", disable=not progress, dynamic_ncols=True)
    loop_began = time.perf_counter()
    status = "FAILED"
    try:
        for batch in prefetcher:
            began = time.perf_counter()
            if detected is not None:
                batch = detected(batch)
            lr = optimizer.param_groups[0]["lr"]
            loss = step(batch)
            if not math.isfinite(loss):
                raise BrainmetsError(
                    f"training diverged at iteration {batch.iteration + 1}: loss is {loss}; lower the learning "
                    f"rate in training.{task}.optimizer.lr (resuming would fail the same way)"
                )
            window.append(loss)
            done = batch.iteration + 1
            seconds += time.perf_counter() - began
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            validate = validator is not None and (done % settings.val_every == 0 or done == total)
            if validate or done % settings.log_every == 0 or done == total:
                row: dict[str, Any] = {"iteration": done, "loss": sum(window) / len(window), "lr": lr,
                                       "seconds": round(seconds, 3)}
                window = []
                if validate:
                    scores = validator(model)
                    row.update(scores)
                    if settings.keep_best and (best is None or scores["val_score"] > best["score"]):
                        best = {"score": scores["val_score"], "iteration": done}
                        save_trained(out_dir / "best.pt", model, {**info, "iteration": done, "val_score": scores["val_score"]})
                history.append(row)
                tracker.log_metrics(done, {k: v for k, v in row.items() if k != "iteration"})
            if done % settings.checkpoint_every == 0 or done == total or done == stop:
                checkpoint(done)
                logger.info("checkpoint written at iteration %d: %s", done, checkpoint_path)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        prefetcher.close()
        bar.close()
        if status != "FINISHED":
            tracker.finish(status)
    loop_seconds = time.perf_counter() - loop_began
    wait_fraction = prefetcher.waited / loop_seconds if loop_seconds > 0 and stop > start else float("nan")
    if stop < total:
        tracker.finish("KILLED")
        logger.info("stopped at iteration %d of %d; run again to continue", stop, total)
        return TrainResult("stopped", out_dir, stop, start, wait_fraction, best)
    if start == total and not (out_dir / "history.tsv").is_file():
        write_history()
    if detected is not None and detected.seen:
        logger.info("train-on-detected: detector accepted a candidate for %.0f%% of batch slots",
                    100.0 * detected.accepted / detected.seen)
    logger.info("data wait: %.1f%% of the loop time", 100 * wait_fraction if wait_fraction == wait_fraction else 0)
    tracker.log_artifacts([out_dir / "config.yaml", out_dir / "history.tsv"])
    write_model_info(out_dir / "model_info.json", spec, in_channels, out_channels, patch, request.model)
    save_trained(model_path, model, {**info, "iteration": total})
    tracker.finish("FINISHED")
    return TrainResult("trained", out_dir, total, start, wait_fraction, best)
