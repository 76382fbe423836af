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
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from brainmets.constants import TRAIN_REGIONS, subset_channels
from brainmets.decision import resolve_subset
from brainmets.errors import BrainmetsError
from brainmets.inference.engine import InferenceSettings
from brainmets.io import atomic_path, read_table, write_json, write_table, write_text
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
from brainmets.runtime import Runtime, bf16_gradient_faults
from brainmets.stopping import StopSignals
from brainmets.tracking import RunTracker, tracking_uri
from brainmets.training.augment import PatchAugmenter
from brainmets.training.checkpoint import load_checkpoint, restore_training_state, save_checkpoint
from brainmets.training.loop import RunRequest, TrainResult
from brainmets.training.losses import detection_loss, detection_targets, region_targets, segmentation_loss
from brainmets.training.sampling import Batch, BatchPrefetcher, PatchSampler, step_seed
from brainmets.training.schedules import build_optimizer, build_scheduler
from brainmets.training.validation import VolumeValidator, as_network
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
_VAL_BEST = "val_best.pt"  # best validated weights while training (see Trainer.validate)
#: what val_score is, per task (brainmets.training.validation)
_SCORE = {"segmentation": "mean Dice of WT, TC, ET on the whole validation cases",
          "detection": "F1 of the detector on the windows of the validation cases"}
#: Convolutional networks that break on channels_last_3d input (SegResNetVAE's VAE head calls
#: ``.view`` on its feature map), so ``channels_last: auto`` keeps them in NCDHW.
_NOT_CHANNELS_LAST = frozenset({"segresnetvae"})



def negative_crops(ts) -> dict[str, Any]:
    """The sampler's negative-crop arguments from a task's settings.

    Segmentation: ``negative_centre`` (brain | background). Detection: ``negatives``
    (tumour_free: redrawn until tumour-free; brain or background: centred on any brain
    voxel or on one outside the positive region, never redrawn).
    """
    if ts.negative_centre is not None:
        return {"tumour_free_negatives": False, "negative_centre": ts.negative_centre}
    return {"tumour_free_negatives": ts.negatives == "tumour_free",
            "negative_centre": "background" if ts.negatives == "background" else "brain"}


class Trainer:
    """One training run: what is set up once, and the state the loop changes.

    State (changed only by the methods named):

    ``iteration``  optimiser steps done (:meth:`resume`, :meth:`train_step`)
    ``history``    rows of history.tsv so far (:meth:`resume`, :meth:`record`)
    ``best``       ``{"score", "iteration"}`` of the best validated weights, or None (:meth:`resume`, :meth:`validate`)
    ``window``     losses of the steps since the last history row (:meth:`resume`, :meth:`train_step`,
                   :meth:`record`)
    ``kept``       (crops trained on, crops the detector scored) of those steps, train-on-detected only
                   (same methods)
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
        ts = self.settings.task_of(request.model, self.task)
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
                                      auto_on_cuda=suits, section="training",
                                      precision=settings.precision_of(request.model))
        threads = request.threads or settings.threads
        if threads:
            torch.set_num_threads(int(threads))
        if self.runtime.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch shapes: the fastest kernels are found once
        torch.manual_seed(request.seed)
        self.model = self.runtime.place(build_model(request.model, self.spec, self.in_channels, self.out_channels))
        self.model.train()
        if self.runtime.bf16:
            batch_shape = (ts.batch_patients * ts.crops_per_patient, self.in_channels, *self.patch)
            faults = bf16_gradient_faults(self.model, batch_shape, self.runtime)
            if faults:
                logger.warning("training in fp32, not bf16: on this machine (torch %s) bf16 computes wrong weight "
                               "gradients for %s of %s", torch.__version__, ", ".join(faults), request.model)
                self.runtime = dataclasses.replace(self.runtime, bf16=False)

        used = {"train": cases["train"], "val": val_cases}
        inference = InferenceSettings.from_config(config)
        validation = ({k: getattr(inference, k) for k in ("overlap", "blend", "threshold", "detector_threshold")}
                      if settings.val_every and val_cases else None)
        self.resolved = _resolved_config(request, self.task, settings, ts, self.spec, self.patch, self.in_channels,
                                         self.out_channels, used, self.runtime, threads, validation)
        self.fingerprint = _fingerprint(self.resolved, used)
        write_text(self.out_dir / "config.yaml", _yaml(self.resolved))  # creates out_dir (a clear error when it cannot)

        self.optimizer = build_optimizer(self.model.parameters(), ts.optimizer)
        self.scheduler = build_scheduler(self.optimizer, ts.schedule, ts.iterations)

        augmenter = PatchAugmenter(settings.augmentation, self.runtime.device)
        self.sampler = PatchSampler(request.cache_dir, cases["train"], channels, self.patch,
                                    batch_patients=ts.batch_patients, crops_per_patient=ts.crops_per_patient,
                                    pos_fraction=ts.pos_fraction, task=self.task, seed=request.seed,
                                    positive_centre=ts.positive_centre, positive_region=ts.positive_region,
                                    **negative_crops(ts),
                                    augmenter=augmenter)
        self.detected: _DetectedFilter | None = None
        self.draws = 1
        detector_network = None
        if request.detector is not None:
            detector, det_info = _load_detector(Path(request.detector), self.subset, self.runtime.device)
            self.detected = _DetectedFilter(detector, det_info, ts.detector_threshold, ts.detector_draws,
                                            self.runtime)
            self.draws = ts.detector_draws
            detector_network = as_network(detector, det_info, channels, det_info["patch"], self.runtime)
        self.validator: VolumeValidator | None = None
        if validation is not None:
            self.validator = VolumeValidator(request.cache_dir, val_cases, self.task, channels, self.patch,
                                             inference, self.runtime, detector=detector_network,
                                             target_rule=ts.target if self.task == "detection" else "any_tumour")
        elif settings.val_every:
            logger.warning("splits table %s has no 'val' cases: no validation, best.pt = the final weights",
                           request.splits)
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.window: list[float] = []
        self.kept: list[tuple[int, int]] = []
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
        self.kept = [tuple(k) for k in payload["extra"].get("kept", [])]
        self.seconds = float(payload["extra"].get("seconds", 0.0))
        self._write_history()
        logger.info("resuming %s from iteration %d of %d", self.checkpoint_path, self.iteration, self.total)
        return True

    def train_step(self, batch: Batch) -> tuple[float, float]:
        """One step on the batch of step :attr:`iteration`; returns (loss, learning rate used).

        Training on detected crops, only the crops the detector accepts are
        trained on. A step where it accepts none has loss 0 and no gradient, as
        in the authors' code (a constant zero loss): the optimiser step leaves
        weights, momentum and Adam moments untouched (every gradient is None),
        while the step still counts toward the budget and the schedule.
        """
        began = time.perf_counter()
        if self.detected is not None:
            batch = self.detected(batch)
            self.kept.append((len(batch.image), self.detected.last_seen))
        lr = self.optimizer.param_groups[0]["lr"]
        torch.manual_seed(step_seed(self.request.seed, batch.iteration, _TORCH_STREAM))
        self.optimizer.zero_grad(set_to_none=True)
        if len(batch.image):
            x = self.runtime.inputs(batch.image)
            label = batch.label.to(self.runtime.device, non_blocking=True)
            with self.runtime.autocast():
                main, aux, extra_loss = forward_outputs(self.model, x)
            if self.task == "segmentation":
                loss = segmentation_loss(main, aux, region_targets(label), self.ts.deep_supervision_decay,
                                         extra_loss, normalise=self.ts.deep_supervision_normalise, dice=self.ts.dice)
            else:
                loss = detection_loss(main, detection_targets(label, self.ts.target), extra_loss)
            loss.backward()
            if self.ts.grad_clip > 0:
                # foreach: as the optimiser (schedules.build_optimizer), bitwise the per-tensor result
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.ts.grad_clip, foreach=True)
            value = float(loss.detach())
        else:
            value = 0.0
            logger.info("iteration %d: the detector accepted none of the %d crops: zero loss, no update",
                        batch.iteration + 1, self.detected.last_seen)
        self.optimizer.step()
        self.scheduler.step()
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
        """Append a history row (mean loss of the window; validation scores) when one is due; returns it.

        Training on detected crops, the row also says how many crops the
        detector scored (``detector_seen``) and passed (``detector_kept``) over
        the window, and in how many steps it passed none (``zero_loss_steps``).
        """
        done, settings = self.iteration, self.settings
        validate = self.validator is not None and (done % settings.val_every == 0 or done == self.total)
        if not (validate or done % settings.log_every == 0 or done == self.total):
            return None
        row: dict[str, Any] = {"iteration": done, "loss": sum(self.window) / len(self.window), "lr": lr,
                               "seconds": round(self.seconds, 3)}
        if self.detected is not None:
            row.update(detector_kept=sum(k for k, _ in self.kept), detector_seen=sum(n for _, n in self.kept),
                       zero_loss_steps=sum(k == 0 for k, _ in self.kept))
        self.window, self.kept = [], []
        if validate:
            row.update(self.validate())
        self.history.append(row)
        self.tracker.log_metrics(done, {k: v for k, v in row.items() if k != "iteration"})
        return row

    def validate(self) -> dict[str, float]:
        """Scores on the whole validation cases; keeps the weights when ``val_score`` beats :attr:`best`.

        The best weights so far are held in ``val_best.pt``, which no workflow
        rule declares (a failed or stopped job's outputs are deleted; this file
        must survive to the resumed job); :meth:`finish` copies it to best.pt.
        """
        scores = self.validator(self.model, self._model_info(self.iteration))
        if self.settings.keep_best and (self.best is None or scores["val_score"] > self.best["score"]):
            self.best = {"score": scores["val_score"], "iteration": self.iteration}
            save_trained(self.out_dir / _VAL_BEST, self.model,
                         self._model_info(self.iteration, val_score=scores["val_score"]))
        return scores

    def checkpoint(self) -> None:
        """Write checkpoint.pt (atomically), then history.tsv up to the same iteration; flush MLflow."""
        save_checkpoint(self.checkpoint_path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                        iteration=self.iteration, history=self.history, best=self.best,
                        fingerprint=self.fingerprint, extra={"window": self.window, "kept": self.kept, "seconds": self.seconds})
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
        """Write model_info.json, best.pt, checkpoints.json and, last, model.pt (its presence marks the run complete).

        best.pt is the best validated weights, or the final ones when the run
        did not validate (``val_every: 0``, no val cases, ``keep_best: false``);
        checkpoints.json says which iteration and score each file holds.
        """
        if self.detected is not None and self.detected.seen:
            logger.info("train-on-detected: the detector passed %d of %d crops (%.0f%%); %d steps had none",
                        self.detected.accepted, self.detected.seen,
                        100.0 * self.detected.accepted / self.detected.seen, self.detected.empty_steps)
        logger.info("data wait: %.1f%% of the loop time", 100 * wait_fraction if wait_fraction == wait_fraction else 0)
        self.tracker.log_artifacts([self.out_dir / "config.yaml", self.out_dir / "history.tsv"])
        write_model_info(self.out_dir / "model_info.json", self.spec, self.in_channels, self.out_channels,
                         self.patch, self.request.model)
        last = self.history[-1] if self.history and self.history[-1]["iteration"] == self.total else {}
        final = {"file": "model.pt", "iteration": self.total, "score": last.get("val_score")}
        if self.best is not None:
            kept = self.out_dir / _VAL_BEST
            if not kept.is_file():
                raise BrainmetsError(f"{kept} (best validated weights, iteration {self.best['iteration']}) is "
                                     "missing; delete checkpoint.pt to train the run afresh")
            with atomic_path(self.out_dir / "best.pt") as tmp:
                shutil.copyfile(kept, tmp)
            best = {"file": "best.pt", "iteration": self.best["iteration"], "score": self.best["score"],
                    "basis": "best validation score"}
        else:
            save_trained(self.out_dir / "best.pt", self.model,
                         self._model_info(self.total, selected_by="final (not validated)"))
            best = dict(final, file="best.pt", basis="final weights: the run did not validate")
        write_json(self.out_dir / "checkpoints.json", {
            "metric": _SCORE[self.task], "val_every": self.settings.val_every, "final": final, "best": best})
        save_trained(self.out_dir / "model.pt", self.model, self._model_info(self.total, val_score=final["score"]))
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
                     cases: Mapping[str, Sequence[str]], runtime: Runtime, threads: int | None,
                     validation: Mapping[str, Any] | None) -> dict[str, Any]:
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
            # how the run computes, like the device, lives under runtime (outside the fingerprint): a run
            # resumes on another device or precision, and runs trained before the setting existed still resume
            **{k: v for k, v in top.items()
               if k not in ("segmentation", "detection", "augmentation", "device", "threads", "prefetch",
                            "precision")},
        },
        "validation": dict(validation) if validation else None,  # the inference keys validation reads
        "train_on_detected": request.detector is not None,
        "detector": str(request.detector) if request.detector else None,
        "data": {"cache": str(Path(request.cache_dir).resolve()), "splits": str(Path(request.splits).resolve()),
                 "n_train": len(cases["train"]), "n_val": len(cases["val"])},
        "runtime": {"device": str(runtime.device), "precision": runtime.precision, "threads": threads,
                    "prefetch": settings.prefetch},
    }


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(obj, default=str)), sort_keys=False)


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
    """Keeps the crops the trained detector accepts (logit > threshold), as the authors' code trains.

    With ``draws`` = 1 (the authors' code) every crop of the batch is scored
    and only the accepted ones are kept, so a batch may shrink, or be empty.
    With ``draws`` > 1 each batch slot offers that many candidate crops and
    keeps the first accepted one (a slot none of whose candidates is accepted
    is dropped): fuller batches for the price of more detector windows.
    """

    def __init__(self, detector: torch.nn.Module, info: Mapping[str, Any], threshold: float, draws: int,
                 runtime: Runtime):
        self.detector = detector
        self.patch = [int(p) for p in info["patch"]]
        self.threshold = float(threshold)
        self.draws = int(draws)
        self.runtime = runtime
        self.accepted = 0
        self.seen = 0
        self.empty_steps = 0
        self.last_seen = 0

    def __call__(self, batch: Batch) -> Batch:
        x = self.runtime.inputs(_centre_fit(batch.image, self.patch))
        with torch.no_grad(), self.runtime.autocast():
            logits = forward_outputs(self.detector, x)[0].float().reshape(-1, self.draws).cpu()
        accepted = logits > self.threshold
        slots = torch.nonzero(accepted.any(1)).flatten()
        rows = slots * self.draws + accepted[slots].float().argmax(1)
        self.last_seen = len(batch.image)
        self.accepted += len(rows)
        self.seen += self.last_seen
        self.empty_steps += int(len(rows) == 0)
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
