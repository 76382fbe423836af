"""Validation during training on whole validation volumes, through the inference path.

The score a run keeps its best checkpoint by is measured the way the model
will be used, as the authors' code does (it monitors full-volume validation
Dice for the segmentor and validation F1 for the detector):

segmentation
    every validation case is predicted whole with
    :mod:`brainmets.inference.engine` (sliding window with the ``inference``
    section's overlap, batch and blending; a two-stage segmentor trained on
    detected crops runs behind its detector, as at test time); Dice of WT, TC
    and ET on the cache grid (sigmoid > the ``inference.threshold``), averaged
    over cases (a region absent from a case and not predicted scores 1, as in
    BraTS). ``val_score`` = mean of the three.
detection
    every validation case is tiled into the detector's windows (the inference
    overlap), scored in batches of ``inference.detector_batch_size`` as at test
    time (eval mode: the batch changes no logit beyond float rounding); each
    window's target is :func:`~brainmets.training.losses.detection_targets` of
    its label; ``val_score`` = F1 of logit > ``inference.detector_threshold``
    over all windows of all cases (1 when no window holds tumour and none is
    predicted), with precision, recall and mean BCE alongside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from brainmets.constants import TRAIN_REGIONS
from brainmets.inference.engine import InferenceSettings, Network, predict_single_pass, predict_two_stage
from brainmets.inference.windows import padded_shape, window_starts
from brainmets.models import forward_outputs
from brainmets.runtime import Runtime
from brainmets.training.losses import detection_targets, region_targets


def as_network(model: torch.nn.Module, info: Mapping[str, Any], channels: Sequence[int], patch: Sequence[int],
               runtime: Runtime) -> Network:
    """A model being trained (or a loaded detector) wrapped for the inference engine (FLOPs are not counted)."""
    fmt = torch.channels_last_3d if runtime.channels_last else torch.contiguous_format
    return Network(model, dict(info), list(channels), tuple(int(p) for p in patch), 0.0, fmt,
                   str(info.get("model_name", "")))


class VolumeValidator:
    """Scores a network on the whole validation cases (see the module docstring)."""

    def __init__(self, cache_dir: str | Path, cases: Sequence[str], task: str, channels: Sequence[int],
                 patch: Sequence[int], settings: InferenceSettings, runtime: Runtime,
                 detector: Network | None = None, target_rule: str = "any_tumour"):
        self.cache_dir = Path(cache_dir)
        #: the detector's patch label rule (training.detection.target), the same as in training
        self.target_rule = target_rule
        self.cases = list(cases)
        self.task = task
        self.channels = list(channels)
        self.patch = tuple(int(p) for p in patch)
        self.settings = settings
        self.runtime = runtime
        self.detector = detector

    def _volumes(self):
        from brainmets.data.preprocess import load_case

        for case in self.cases:
            image, label, _ = load_case(self.cache_dir, case)
            yield torch.from_numpy(np.array(image, dtype=np.float32)), torch.from_numpy(np.array(label))

    def __call__(self, model: torch.nn.Module, info: Mapping[str, Any]) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                if self.task == "segmentation":
                    return self._segmentation(as_network(model, info, self.channels, self.patch, self.runtime))
                return self._detection(model)
        finally:
            model.train(was_training)

    def _segmentation(self, network: Network) -> dict[str, float]:
        dice = []
        for image, label in self._volumes():
            if self.detector is None:
                result = predict_single_pass(network, image, self.settings, self.runtime)
            else:
                result = predict_two_stage(self.detector, network, image, self.settings, self.runtime)
            pred = result.probabilities > self.settings.threshold
            target = region_targets(label[None, None])[0].bool()
            dims = (1, 2, 3)
            overlap = (pred & target).sum(dims).double()
            total = (pred.sum(dims) + target.sum(dims)).double()
            dice.append(torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total)))
        mean = torch.stack(dice).mean(0)
        scores = {f"val_dice_{r}": float(d) for r, d in zip(TRAIN_REGIONS, mean)}
        scores["val_score"] = float(mean.mean())
        return scores

    def _detection(self, model: torch.nn.Module) -> dict[str, float]:
        counts = {"tp": 0, "fp": 0, "fn": 0, "n": 0}
        bce = 0.0
        patch, batch_size = self.patch, int(self.settings.detector_batch_size)
        for image, label in self._volumes():
            volume = torch.cat([image[self.channels], label[None].float()])
            full = padded_shape(volume.shape[1:], patch)
            pad = []
            for have, want in reversed(list(zip(volume.shape[1:], full))):
                pad += [0, want - have]  # F.pad lists the last axis first
            volume = F.pad(volume, pad)
            corners = window_starts(full, patch, float(self.settings.overlap))
            for i in range(0, len(corners), batch_size):
                windows = torch.stack([volume[:, x:x + patch[0], y:y + patch[1], z:z + patch[2]]
                                       for x, y, z in corners[i:i + batch_size]])
                target = detection_targets(windows[:, -1:], self.target_rule)
                with self.runtime.autocast():
                    logits = forward_outputs(model, self.runtime.inputs(windows[:, :-1].to(self.runtime.device)))[0]
                logits = logits.float().reshape(target.shape).cpu()
                bce += float(F.binary_cross_entropy_with_logits(logits, target, reduction="sum"))
                pred, truth = logits > self.settings.detector_threshold, target > 0.5
                counts["tp"] += int((pred & truth).sum())
                counts["fp"] += int((pred & ~truth).sum())
                counts["fn"] += int((~pred & truth).sum())
                counts["n"] += len(target)
        tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
        return {"val_bce": bce / max(1, counts["n"]),
                "val_precision": tp / (tp + fp) if tp + fp else float("nan"),
                "val_recall": tp / (tp + fn) if tp + fn else float("nan"),
                "val_windows": counts["n"], "val_score": f1}
