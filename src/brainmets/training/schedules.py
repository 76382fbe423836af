"""Learning-rate schedules as pure functions of the iteration, and the optimisers they drive.

A schedule is a function ``t -> lr`` (``t`` = number of optimiser steps taken
so far), so the learning rate of any step can be recomputed exactly after a
resume: the scheduler's whole state is the iteration counter.

* ``poly`` (segmentor; nnU-Net / the paper): ``lr0 * (1 - t / T) ** exponent``.
* ``warmup_cosine`` (detector; the paper): linear from ``warmup_start_lr`` to
  ``lr0`` over ``warmup_iterations`` steps, then cosine annealing from ``lr0``
  to ``min_lr`` at ``T``. A warm-up longer than the budget is clipped to it.
* ``constant``: ``lr0``.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from brainmets.training.settings import OptimizerSettings, ScheduleSettings


class LearningRate:
    """Picklable ``t -> lr`` for one (schedule, base lr, budget); see the module docstring."""

    def __init__(self, schedule: ScheduleSettings, base_lr: float, iterations: int):
        self.name = schedule.name
        self.base_lr = float(base_lr)
        self.iterations = int(iterations)
        # only the fields of this schedule are set (the others are None in its settings)
        if self.name == "poly":
            self.exponent = float(schedule.exponent)
        if self.name == "warmup_cosine":
            self.warmup = min(int(schedule.warmup_iterations), self.iterations)
            self.warmup_start_lr = float(schedule.warmup_start_lr)
            self.min_lr = float(schedule.min_lr)

    def __call__(self, t: int) -> float:
        t = min(max(int(t), 0), self.iterations)
        if self.name == "constant":
            return self.base_lr
        if self.name == "poly":
            return self.base_lr * (1.0 - t / self.iterations) ** self.exponent
        if self.name == "warmup_cosine":
            if t < self.warmup:
                return self.warmup_start_lr + (self.base_lr - self.warmup_start_lr) * t / self.warmup
            span = self.iterations - self.warmup
            progress = (t - self.warmup) / span if span > 0 else 1.0
            return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))
        raise ValueError(f"unknown schedule {self.name!r}")


class _Factor:
    """LambdaLR multiplier ``lr(t) / lr0`` (a class, so LambdaLR can save its state)."""

    def __init__(self, lr: LearningRate):
        self.lr = lr

    def __call__(self, t: int) -> float:
        return self.lr(t) / self.lr.base_lr if self.lr.base_lr > 0 else 0.0


def build_optimizer(params: Iterable[torch.nn.Parameter], settings: OptimizerSettings) -> torch.optim.Optimizer:
    """The task's optimiser (SGD Nesterov for the segmentor, Adam for the detector by default).

    ``foreach=True``: on the CPU torch otherwise updates one parameter tensor
    at a time from Python; the multi-tensor path gives bitwise the same weights
    and moments (tests/training/test_schedules_losses.py) with fewer
    dispatches. The fused kernels would be faster still but round
    differently, which would move the study's numbers.
    """
    if settings.name == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                               nesterov=settings.nesterov and settings.momentum > 0,
                               weight_decay=settings.weight_decay, foreach=True)
    if settings.name == "adam":
        return torch.optim.Adam(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay,
                                foreach=True)
    if settings.name == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay,
                                 foreach=True)
    raise ValueError(f"unknown optimizer {settings.name!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: ScheduleSettings,
                    iterations: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping :class:`LearningRate` once per optimiser step (lr of step 0 = ``lr(0)``)."""
    base_lr = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _Factor(LearningRate(schedule, base_lr, iterations)))
