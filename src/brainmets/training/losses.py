"""Training targets and losses: region-based Dice + BCE with deep supervision; BCE for the detector.

Region-based training (nnU-Net's BraTS setting, used by the paper) predicts
the three nested regions WT, TC, ET (``brainmets.constants.TRAIN_REGIONS``) as
independent sigmoid channels instead of the four exclusive labels, so the
network optimises the quantities the challenge scores.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from brainmets.constants import REGIONS, TRAIN_REGIONS


def region_targets(label: torch.Tensor) -> torch.Tensor:
    """BraTS label map ``(B, 1, *spatial)`` (values 0-3) -> float targets ``(B, 3, *spatial)`` (WT, TC, ET)."""
    label = label.round().to(torch.int64)
    channels = [torch.isin(label, torch.tensor(REGIONS[r], device=label.device)) for r in TRAIN_REGIONS]
    return torch.cat(channels, dim=1).to(torch.float32)


def detection_targets(label: torch.Tensor) -> torch.Tensor:
    """BraTS label patches ``(B, 1, *spatial)`` -> ``(B, 1)`` float: 1 where the patch holds any tumour (WT)."""
    return (label.flatten(1) > 0.5).any(dim=1, keepdim=True).to(torch.float32)


def deep_supervision_weights(n_heads: int, decay: float = 0.5) -> list[float]:
    """Weights ``decay**i`` of heads ``i = 0..n-1`` (main head first), normalised to sum to 1."""
    raw = [decay**i for i in range(n_heads)]
    total = sum(raw)
    return [w / total for w in raw]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """``1 - mean over channels of the batch soft Dice`` of sigmoid(logits) against binary targets.

    Batch Dice (sums over the batch and space before dividing, as nnU-Net does
    for region-based training) keeps patches without a region from yielding a
    degenerate per-patch Dice of 0/0.
    """
    prob = torch.sigmoid(logits.float())
    target = target.float()
    dims = [0, *range(2, logits.dim())]
    intersection = (prob * target).sum(dims)
    denominator = prob.sum(dims) + target.sum(dims)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    return 1.0 - dice.mean()


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice + binary cross-entropy (with logits), both averaged over the three region channels."""
    return soft_dice_loss(logits, target) + F.binary_cross_entropy_with_logits(logits.float(), target)


def _resize_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(target.shape[2:]) == tuple(size):
        return target
    # Nearest-neighbour keeps binary region targets binary at the head's coarser resolution.
    return F.interpolate(target, size=tuple(size), mode="nearest-exact")


def segmentation_loss(main: torch.Tensor, aux: Sequence[torch.Tensor], target: torch.Tensor,
                      decay: float = 0.5, extra: torch.Tensor | None = None) -> torch.Tensor:
    """Deep-supervised Dice + BCE: sum over heads of ``w_i * (Dice + BCE)(head_i, target at head_i's size)``.

    ``main`` is head 0; ``aux`` are the further heads in order (MONAI DynUNet
    returns them already at full size, so their targets are not resized; heads
    of other networks get a nearest-neighbour downsampled target). ``extra`` is
    a loss term the network returns itself (SegResNetVAE's VAE loss), added
    unweighted.
    """
    heads = [main, *aux]
    weights = deep_supervision_weights(len(heads), decay)
    loss = sum(w * dice_bce_loss(h, _resize_target(target, h.shape[2:])) for w, h in zip(weights, heads))
    if extra is not None:
        loss = loss + extra.float()
    return loss


def detection_loss(logits: torch.Tensor, target: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits of the patch classifier (``(B, 1)`` logits and targets)."""
    loss = F.binary_cross_entropy_with_logits(logits.float().reshape(target.shape), target)
    if extra is not None:
        loss = loss + extra.float()
    return loss
