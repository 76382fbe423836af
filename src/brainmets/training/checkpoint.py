"""Resumable training state (``checkpoint.pt``), written atomically.

A checkpoint holds the model and optimiser state, the scheduler's position,
the iteration (number of optimiser steps taken), the history rows so far, the
best validation score, the global RNG states (python, numpy, torch; the data
pipeline needs none, its randomness is a function of (seed, iteration), see
sampling.py) and a fingerprint of the resolved settings. Resuming with
different settings is refused: the result would match neither run.

The file is loaded with ``weights_only=True`` (plain containers and tensors),
so no pickled code runs when a checkpoint is read.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainmets.errors import BrainmetsError
from brainmets.io import atomic_path

FORMAT = "brainmets-training-checkpoint/1"


def rng_states() -> dict[str, Any]:
    """Global RNG states as plain data (numpy's key array as a list, so weights_only loading accepts it)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, iteration: int, history: list[dict],
                    best: dict[str, Any] | None, fingerprint: str, extra: dict[str, Any] | None = None) -> None:
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    payload = {
        "format": FORMAT,
        "iteration": int(iteration),
        "model": {k: v.detach().to("cpu") for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": sched,
        "rng": rng_states(),
        "history": history,
        "best": best,
        "fingerprint": fingerprint,
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, fingerprint: str) -> dict[str, Any]:
    """Read ``checkpoint.pt``; refuse it when it was written by a run with other settings."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file
        raise BrainmetsError(
            f"cannot read checkpoint {path}: {exc.__class__.__name__}: {exc}; delete it to start the run afresh"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BrainmetsError(f"{path} is not a brainmets training checkpoint (expected format {FORMAT!r})")
    if payload.get("fingerprint") != fingerprint:
        raise BrainmetsError(
            f"{path} was written by a run with different settings (config, subset, seed, model or data); "
            "resuming would match neither run. Delete the checkpoint to start afresh, or restore the settings "
            f"recorded in {path.parent / 'config.yaml'}"
        )
    return payload


def restore_training_state(payload: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Load model, optimiser, scheduler and RNG states from a checkpoint payload (in place)."""
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    state = dict(payload["scheduler"])
    state["lr_lambdas"] = [None] * len(optimizer.param_groups)  # the lambdas are rebuilt from the settings
    scheduler.load_state_dict(state)
    restore_rng_states(payload["rng"])
