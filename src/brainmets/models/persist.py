"""Trained-model files (``model.pt``, ``best.pt``): weights plus what is needed to rebuild them.

A file holds ``{"format": FORMAT, "info": info, "state_dict": weights}``.
``info`` is a plain dict (see :data:`INFO_KEYS`); its ``spec`` is the registry
entry the network was built from, so :func:`load_trained` rebuilds the network
with :func:`~brainmets.models.registry.build_model` without the config that
produced it (after validating that entry against the config schema: a file is
input, perhaps written by another version). Files are loaded with ``weights_only=True``: no pickled code runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainmets.config import validate_model
from brainmets.errors import BrainmetsError
from brainmets.io import atomic_path
from brainmets.models.registry import build_model

FORMAT = "brainmets-trained-model/1"
#: Keys ``info`` must hold.
INFO_KEYS = ("model_name", "spec", "in_channels", "out_channels", "subset", "task", "patch", "iteration", "seed")


def _plain(value: Any) -> Any:
    """Convert tuples and numpy scalars to plain lists / Python numbers (safe to weights_only-load)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):
        return value.item()
    return value


def save_trained(path: str | Path, model: nn.Module, info: Mapping[str, Any]) -> None:
    """Write ``model``'s weights and ``info`` to ``path`` atomically (CPU tensors)."""
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise BrainmetsError(f"cannot save {path}: model info lacks {', '.join(missing)}")
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "info": _plain(dict(info)), "state_dict": state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network saved at ``path`` on ``device``, in eval mode; return ``(model, info)``."""
    path = Path(path)
    if not path.is_file():
        raise BrainmetsError(f"trained model not found: {path} (expected a model.pt written by `brainmets train`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise BrainmetsError(f"cannot read trained model {path}: {exc.__class__.__name__}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BrainmetsError(
            f"{path} is not a brainmets trained-model file (expected format {FORMAT!r}); "
            "a training checkpoint.pt is not a model file: use model.pt or best.pt"
        )
    info = payload.get("info") or {}
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise BrainmetsError(f"{path}: model info lacks {', '.join(missing)}")
    spec = validate_model(info["model_name"], info["spec"], source=f"model file {path}")
    model = build_model(info["model_name"], spec, int(info["in_channels"]), int(info["out_channels"]))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise BrainmetsError(
            f"{path}: weights do not match the network rebuilt from its spec ({info['model_name']}): {exc}"
        ) from exc
    return model.to(device).eval(), dict(info)
