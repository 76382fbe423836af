"""One training loop for the segmentors and the detector: sample, augment, step, validate, checkpoint.

:func:`train` is the stage's API (``brainmets train`` only parses arguments
and calls it); the loop itself is :class:`brainmets.training.trainer.Trainer`.
A run lives in its own directory::

    config.yaml    resolved settings of this run (written first)
    history.tsv    iteration, loss, lr, seconds, val_*, detector_* (rewritten at every checkpoint)
    checkpoint.pt  resumable state, every ``checkpoint_every`` steps, at the end and on a stop signal
    val_best.pt    best-by-validation weights so far (``keep_best``)
    best.pt        at the end: those weights, or the final ones when the run did not validate
    checkpoints.json  iteration and validation score of model.pt and best.pt
    model.pt       final weights, written LAST: its presence means the run is complete

Calling :func:`train` again on the same directory resumes from
``checkpoint.pt``, or does nothing if ``model.pt`` exists.

Stopping. SIGTERM (a batch system's time limit, ``scancel``, preemption),
SIGINT (Ctrl-C) and a warning signal (SIGUSR1 unless told otherwise; SLURM
sends it ahead of the limit with ``sbatch --signal``) let the step in progress
finish, write ``checkpoint.pt`` and ``history.tsv`` at that step and end the
job with status ``"stopped"`` (``brainmets train`` exits 75, "not finished:
run me again"; :mod:`brainmets.stopping`). The MLflow run is marked KILLED
with the tag ``resumable=true``, and the next job continues it.

Determinism: the initial weights come from ``torch.manual_seed(seed)``; the
batch of step ``t`` (patients, crops, augmentation) is a function of
``(seed, t)`` (sampling.py); the torch RNG (dropout) is re-seeded from
``(seed, t)`` before every step; the learning rate is a function of ``t``
(schedules.py). A checkpoint therefore only needs the model, optimiser and
iteration to continue exactly: on CPU a resumed run ends with bitwise the
same weights as an uninterrupted one (tests/training/test_loop.py,
tests/training/test_kill_resume.py), whether the first job was stopped by a
signal or killed outright.

Segmentation training may be restricted to patches a trained detector
accepts (``detector=``, the paper's train-on-detected option): the detector
scores every crop of the batch and only crops whose logit exceeds
``detector_threshold`` are trained on; a step where none passes has zero loss
and changes no weight (the schedule still advances), as in the authors' code.
``detector_draws`` > 1 offers each batch slot that many candidates instead
(the first accepted one is kept). history.tsv counts the crops scored and kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from brainmets.stopping import DEFAULT_WARNING_SIGNAL, StopSignals, stop_signals

logger = logging.getLogger(__name__)


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
    status: str  # "trained" | "exists" | "stopped" (not finished: train again to resume)
    out_dir: Path
    iteration: int = 0
    start_iteration: int = 0
    data_wait_fraction: float = float("nan")
    best: dict[str, Any] | None = None
    signal: str | None = None  # name of the signal that stopped the run


def train(config: Mapping[str, Any], request: RunRequest, progress: bool = True, stop_at: int | None = None,
          warning_signal: str | int | None = DEFAULT_WARNING_SIGNAL) -> TrainResult:
    """Train (or resume, or skip when finished) one run; see the module docstring for the files written.

    ``stop_at``: stop once this many iterations are done, after writing a
    checkpoint there (as a job stopped by a signal would); calling again
    continues. The result's status is then ``"stopped"`` and no ``model.pt``
    is written. ``warning_signal``: the early-warning signal caught besides
    SIGTERM and SIGINT (a name such as ``SIGUSR2``; ``None`` for none).
    """
    out_dir = Path(request.out_dir)
    model_path = out_dir / "model.pt"
    if model_path.is_file():
        logger.info("%s exists: run already trained, nothing to do", model_path)
        return TrainResult("exists", out_dir)

    from brainmets.training.trainer import Trainer  # imports torch

    with StopSignals(stop_signals(warning_signal)) as signals:
        trainer = Trainer(config, request)
        trainer.resume()
        return trainer.run(stop_at, progress, signals)
