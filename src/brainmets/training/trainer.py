"""The training loop as one class with explicit state (see loop.py for the run directory it writes).

:class:`Trainer` is built once per job: its constructor sets the run up,
:meth:`Trainer.resume` continues from ``checkpoint.pt``, and :meth:`Trainer.run`
loops over :meth:`Trainer.train_step`, :meth:`Trainer.record` (a history row,
with :meth:`Trainer.validate` when due) and :meth:`Trainer.checkpoint`, then
ends with :meth:`Trainer.finish` (``model.pt``) or :meth:`Trainer.stop` (not
finished: the next job resumes). Each piece reads and changes only the state
listed in the class docstring, so each can be called, and tested, on its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from brainmets.constants import TRAIN_REGIONS, subset_channels
from brainmets.decision import resolve_subset
from brainmets.errors import BrainmetsError
from brainmets.io import read_table, write_json, write_table, write_text
from brainmets.models import (
    build_model,
    count_parameters,
    forward_outputs,
    is_convolutional,
    load_trained,
    model_flops,
    resolve_arch,
    save_trained,
)
from brainmets.runtime import Runtime
from brainmets.stopping import StopSignals
from brainmets.tracking import RunTracker, tracking_uri
from brainmets.training.augment import PatchAugmenter
from brainmets.training.checkpoint import load_checkpoint, restore_training_state, save_checkpoint
from brainmets.training.loop import RunRequest, TrainResult
from brainmets.training.losses import detection_loss, detection_targets, region_targets, segmentation_loss
from brainmets.training.sampling import Batch, BatchPrefetcher, PatchSampler, step_seed
from brainmets.training.schedules import build_optimizer, build_scheduler
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


class Trainer:
    """One training run: what is set up once, and the state the loop changes.

    State (changed only by the methods named):

    ``iteration``  optimiser steps done (:meth:`resume`, :meth:`train_step`)
    ``history``    rows of history.tsv so far (:meth:`resume`, :meth:`record`)
    ``best``       ``{"score", "iteration"}`` of best.pt, or None (:meth:`resume`, :meth:`validate`)
    ``window``     losses of the steps since the last history row (:meth:`resume`, :meth:`train_step`,
                   :meth:`record`)
    ``seconds``    time spent in steps, over all jobs of the run (:meth:`resume`, :meth:`train_step`)
    ``saved``      iteration of the checkpoint.pt on disk, or None (:meth:`resume`, :meth:`checkpoint`)
    ``tracker``    the run's MLflow mirror; off until :meth:`run` opens it
    """

    def __init__(self, config: Mapping[str, Any], request: RunRequest):
        """Set the run up: settings, config.yaml, model, optimiser, schedule, samplers, validator."""
        self.request = request
        self.tracking_uri = tracking_uri(config)
        self.out_dir = Path(request.out_dir)
        self.checkpoint_path = self.out_dir / "checkpoint.pt"
        self.settings: TrainingSettings = training_settings(config)
        self.spec = model_spec(config, request.model)
        self.task = model_task(request.model, self.spec)
        self.patch = model_patch(request.model, self.spec)
        ts = self.settings.task(self.task)
        if request.iterations is not None:
            if request.iterations < 1:
                raise BrainmetsError(f"--iterations must be >= 1, got {request.iterations}")
            ts = dataclasses.replace(ts, iterations=int(request.iterations))
        self.ts: TaskSettings = ts
        self.total = ts.iterations
        if request.detector is not None and self.task != "segmentation":
            raise BrainmetsError(f"--detector applies to segmentation models; {request.model!r} is a {self.task} model")
        self.subset = resolve_subset(request.subset)
        channels = subset_channels(self.subset)
        self.in_channels = len(channels)
        self.out_channels = len(TRAIN_REGIONS) if self.task == "segmentation" else 1
        cases = _split_cases(Path(request.splits))
        if not cases["train"]:
            raise BrainmetsError(f"splits table {request.splits} has no 'train' cases")
        settings = self.settings
        val_cases = cases["val"][: settings.val_max_cases] if settings.val_max_cases else cases["val"]

        suits = is_convolutional(self.spec) and resolve_arch(request.model, self.spec) not in _NOT_CHANNELS_LAST
        self.runtime = Runtime.create(settings.device, settings.channels_last, auto_on_cpu=suits,
                                      auto_on_cuda=suits, section="training")
        threads = request.threads or settings.threads
        if threads:
            torch.set_num_threads(int(threads))
        if self.runtime.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch shapes: the fastest kernels are found once

        used = {"train": cases["train"], "val": val_cases}
        self.resolved = _resolved_config(request, self.task, settings, ts, self.spec, self.patch, self.in_channels,
                                         self.out_channels, used, str(self.runtime.device), threads)
        self.fingerprint = _fingerprint(self.resolved, used)
        write_text(self.out_dir / "config.yaml", _yaml(self.resolved))  # creates out_dir (a clear error when it cannot)

        torch.manual_seed(request.seed)
        self.model = self.runtime.place(build_model(request.model, self.spec, self.in_channels, self.out_channels))
        self.model.train()
        self.optimizer = build_optimizer(self.model.parameters(), ts.optimizer)
        self.scheduler = build_scheduler(self.optimizer, ts.schedule, ts.iterations)

        augmenter = PatchAugmenter(settings.augmentation, self.runtime.device)
        self.sampler = PatchSampler(request.cache_dir, cases["train"], channels, self.patch,
                                    batch_patients=ts.batch_patients, crops_per_patient=ts.crops_per_patient,
                                    pos_fraction=ts.pos_fraction, task=self.task, seed=request.seed,
                                    positive_centre=ts.positive_centre, positive_region=ts.positive_region,
                                    tumour_free_negatives=ts.negatives != "brain", augmenter=augmenter)
        self.validator: _Validator | None = None
        if settings.val_every and val_cases:
            val_sampler = PatchSampler(request.cache_dir, val_cases, channels, self.patch, batch_patients=1,
                                       crops_per_patient=1, pos_fraction=ts.pos_fraction, task=self.task,
                                       seed=request.seed, positive_centre=ts.positive_centre,
                                       positive_region=ts.positive_region,
                                       tumour_free_negatives=ts.negatives != "brain")
            self.validator = _Validator(val_sampler.fixed_patches(settings.val_crops_per_case), self.task,
                                        ts.batch_size, self.runtime)
        elif settings.val_every:
            logger.warning("splits table %s has no 'val' cases: no validation, best.pt is not written",
                           request.splits)
        self.detected: _DetectedFilter | None = None
        self.draws = 1
        if request.detector is not None:
            detector, det_info = _load_detector(Path(request.detector), self.subset, self.runtime.device)
            self.detected = _DetectedFilter(detector, det_info, ts.detector_threshold, ts.detector_draws,
                                            self.runtime)
            self.draws = ts.detector_draws

        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.window: list[float] = []
        self.seconds = 0.0
        self.saved: int | None = None
        self.tracker = RunTracker()

    # ------------------------------------------------------------------ the loop

    def run(self, stop_at: int | None = None, progress: bool = True,
            signals: StopSignals | None = None) -> TrainResult:
        """Train from :attr:`iteration` to the budget, or to ``stop_at``, or until one of ``signals`` comes."""
        from tqdm.auto import tqdm

        signals = signals or StopSignals()
        start = self.iteration
        stop = self.total if stop_at is None else min(max(int(stop_at), start), self.total)
        self.tracker = RunTracker.start(self.tracking_uri, study=self.request.study,
                                        model=self.request.model, subset=self.subset, seed=self.request.seed,
                                        run_dir=self.out_dir, params=self.resolved,
                                        subset_alias=self.request.subset_alias)
        batches = BatchPrefetcher(lambda t: self.sampler.batch(t, draws=self.draws), start, stop,
                                  self.settings.prefetch)
        bar = tqdm(total=self.total, initial=start, unit="it", disable=not progress, dynamic_ncols=True,
                   desc=f"{self.request.study}/{self.request.model}/{self.subset}/seed{self.request.seed}")
        began, failed = time.perf_counter(), "FAILED"  # failed: the MLflow status unless the loop ends normally
        try:
            while self.iteration < stop and not signals.received:
                loss, lr = self.train_step(next(batches))
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                self.record(lr)
                if signals.received or self._checkpoint_due(stop):
                    self.checkpoint()
            failed = None
        except KeyboardInterrupt:
            failed = "KILLED"
            raise
        finally:
            batches.close()
            bar.close()
            if failed:
                self.tracker.finish(failed)
        looped = time.perf_counter() - began
        wait_fraction = batches.waited / looped if looped > 0 and self.iteration > start else float("nan")
        if self.iteration < self.total:
            return self.stop(start, wait_fraction, signals.received)
        return self.finish(start, wait_fraction)

    # ------------------------------------------------------------------ the pieces

    def resume(self) -> bool:
        """Continue from checkpoint.pt when there is one (refused when written with other settings).

        Restores model, optimiser, schedule and RNG states and the loop state, and
        rewrites history.tsv from the checkpoint (a job killed between writing
        the two files leaves history.tsv behind it). Returns whether it resumed.
        """
        if not self.checkpoint_path.is_file():
            return False
        payload = load_checkpoint(self.checkpoint_path, self.fingerprint)
        restore_training_state(payload, self.model, self.optimizer, self.scheduler)
        self.iteration = self.saved = int(payload["iteration"])
        self.history, self.best = list(payload["history"]), payload["best"]
        self.window = list(payload["extra"].get("window", []))
        self.seconds = float(payload["extra"].get("seconds", 0.0))
        self._write_history()
        logger.info("resuming %s from iteration %d of %d", self.checkpoint_path, self.iteration, self.total)
        return True

    def train_step(self, batch: Batch) -> tuple[float, float]:
        """One optimiser step on the batch of step :attr:`iteration`; returns (loss, learning rate used)."""
        began = time.perf_counter()
        if self.detected is not None:
            batch = self.detected(batch)
        lr = self.optimizer.param_groups[0]["lr"]
        torch.manual_seed(step_seed(self.request.seed, batch.iteration, _TORCH_STREAM))
        x = self.runtime.inputs(batch.image)
        label = batch.label.to(self.runtime.device, non_blocking=True)
        with self.runtime.autocast():
            main, aux, extra_loss = forward_outputs(self.model, x)
        if self.task == "segmentation":
            loss = segmentation_loss(main, aux, region_targets(label), self.ts.deep_supervision_decay, extra_loss,
                                     normalise=self.ts.deep_supervision_normalise, dice=self.ts.dice)
        else:
            loss = detection_loss(main, detection_targets(label, self.ts.target), extra_loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.ts.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.ts.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise BrainmetsError(
                f"training diverged at iteration {batch.iteration + 1}: loss is {value}; lower the learning "
                f"rate in training.{self.task}.optimizer.lr (resuming would fail the same way)"
            )
        self.window.append(value)
        self.iteration = batch.iteration + 1
        self.seconds += time.perf_counter() - began
        return value, lr

    def record(self, lr: float) -> dict[str, Any] | None:
        """Append a history row (mean loss of the window; validation scores) when one is due; returns it."""
        done, settings = self.iteration, self.settings
        validate = self.validator is not None and (done % settings.val_every == 0 or done == self.total)
        if not (validate or done % settings.log_every == 0 or done == self.total):
            return None
        row: dict[str, Any] = {"iteration": done, "loss": sum(self.window) / len(self.window), "lr": lr,
                               "seconds": round(self.seconds, 3)}
        self.window = []
        if validate:
            row.update(self.validate())
        self.history.append(row)
        self.tracker.log_metrics(done, {k: v for k, v in row.items() if k != "iteration"})
        return row

    def validate(self) -> dict[str, float]:
        """Scores on the validation patches; writes best.pt when ``val_score`` beats :attr:`best` (``keep_best``)."""
        scores = self.validator(self.model)
        if self.settings.keep_best and (self.best is None or scores["val_score"] > self.best["score"]):
            self.best = {"score": scores["val_score"], "iteration": self.iteration}
            save_trained(self.out_dir / "best.pt", self.model,
                         self._model_info(self.iteration, val_score=scores["val_score"]))
        return scores

    def checkpoint(self) -> None:
        """Write checkpoint.pt (atomically), then history.tsv up to the same iteration; flush MLflow."""
        save_checkpoint(self.checkpoint_path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                        iteration=self.iteration, history=self.history, best=self.best,
                        fingerprint=self.fingerprint, extra={"window": self.window, "seconds": self.seconds})
        self.saved = self.iteration
        self._write_history()
        self.tracker.flush()
        logger.info("checkpoint written at iteration %d: %s", self.iteration, self.checkpoint_path)

    def stop(self, start: int, wait_fraction: float, signal: str | None) -> TrainResult:
        """End a job before the budget: the run stays resumable from checkpoint.pt."""
        self.tracker.pause(self.iteration, signal or "stop_at")
        if signal:
            saved = (f"after writing {self.checkpoint_path}" if self.saved is not None
                     else "before its first checkpoint (the run will start afresh)")
            logger.warning("%s received: stopped at iteration %d of %d %s; run the same command again to resume",
                           signal, self.iteration, self.total, saved)
        else:
            logger.info("stopped at iteration %d of %d; run again to continue", self.iteration, self.total)
        return TrainResult("stopped", self.out_dir, self.iteration, start, wait_fraction, self.best, signal)

    def finish(self, start: int, wait_fraction: float) -> TrainResult:
        """Write model_info.json and, last, model.pt (its presence marks the run complete); close MLflow."""
        if self.detected is not None and self.detected.seen:
            logger.info("train-on-detected: detector accepted a candidate for %.0f%% of batch slots",
                        100.0 * self.detected.accepted / self.detected.seen)
        logger.info("data wait: %.1f%% of the loop time", 100 * wait_fraction if wait_fraction == wait_fraction else 0)
        self.tracker.log_artifacts([self.out_dir / "config.yaml", self.out_dir / "history.tsv"])
        write_model_info(self.out_dir / "model_info.json", self.spec, self.in_channels, self.out_channels,
                         self.patch, self.request.model)
        save_trained(self.out_dir / "model.pt", self.model, self._model_info(self.total))
        self.tracker.finish("FINISHED")
        return TrainResult("trained", self.out_dir, self.total, start, wait_fraction, self.best)

    # ------------------------------------------------------------------ helpers

    def _checkpoint_due(self, stop: int) -> bool:
        return self.iteration % self.settings.checkpoint_every == 0 or self.iteration in (stop, self.total)

    def _model_info(self, iteration: int, **extra: Any) -> dict[str, Any]:
        request = self.request
        return {"model_name": request.model, "spec": self.spec, "in_channels": self.in_channels,
                "out_channels": self.out_channels, "subset": self.subset, "task": self.task,
                "patch": list(self.patch), "iteration": iteration, "seed": request.seed, "study": request.study,
                "train_on_detected": request.detector is not None, **extra}

    def _write_history(self) -> None:
        import pandas as pd

        columns = ["iteration", "loss", "lr", "seconds"]
        frame = pd.DataFrame(self.history)
        frame = frame.reindex(columns=columns + [c for c in frame.columns if c not in columns])
        write_table(frame, self.out_dir / "history.tsv")


def _split_cases(splits: Path) -> dict[str, list[str]]:
    table = read_table(splits, what="splits table")
    missing = {"case", "split"} - set(table.columns)
    if missing:
        raise BrainmetsError(f"splits table {splits} lacks column(s) {', '.join(sorted(missing))}")
    return {name: sorted(table.loc[table["split"] == name, "case"].astype(str)) for name in ("train", "val", "test")}


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

    def __init__(self, patches: Batch, task: str, batch_size: int, runtime: Runtime):
        self.patches = patches
        self.task = task
        self.batch_size = batch_size
        self.runtime = runtime

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        tp = torch.zeros(len(TRAIN_REGIONS)); pred_sum = torch.zeros_like(tp); true_sum = torch.zeros_like(tp)
        det = {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "bce": 0.0}
        with torch.no_grad():
            for i in range(0, len(self.patches.image), self.batch_size):
                x = self.runtime.inputs(self.patches.image[i:i + self.batch_size])
                label = self.patches.label[i:i + self.batch_size].to(self.runtime.device)
                with self.runtime.autocast():
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
                    det["bce"] += float(F.binary_cross_entropy_with_logits(logits, target, reduction="sum"))
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


def _centre_fit(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """Centre-crop or zero-pad ``(B, C, *spatial)`` to ``patch`` (segmentor crops fed to a detector of another size)."""
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

    def __init__(self, detector: torch.nn.Module, info: Mapping[str, Any], threshold: float, draws: int,
                 runtime: Runtime):
        self.detector = detector
        self.patch = [int(p) for p in info["patch"]]
        self.threshold = float(threshold)
        self.draws = int(draws)
        self.runtime = runtime
        self.accepted = 0
        self.seen = 0

    def __call__(self, batch: Batch) -> Batch:
        x = self.runtime.inputs(_centre_fit(batch.image, self.patch))
        with torch.no_grad(), self.runtime.autocast():
            logits = forward_outputs(self.detector, x)[0].float().reshape(-1, self.draws).cpu()
        accepted = logits > self.threshold
        first = torch.where(accepted.any(1), accepted.float().argmax(1), logits.argmax(1))
        rows = torch.arange(len(first)) * self.draws + first
        self.accepted += int(accepted.any(1).sum())
        self.seen += len(first)
        return dataclasses.replace(batch, image=batch.image[rows], label=batch.label[rows],
                                  positive=batch.positive[rows])


def _load_detector(path: Path, subset: str, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
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
    net = build_model(name, spec, in_channels, out_channels)
    write_json(path, {
        "model_name": name,
        "parameters": int(count_parameters(net)),
        "gmac_per_window": model_flops(net, in_channels, patch) / 2e9,
        "patch": [int(p) for p in patch],
        "in_channels": int(in_channels),
    })
