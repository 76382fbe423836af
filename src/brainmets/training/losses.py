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
    """BraTS label map ``(B, 1, *spatial)`` (values 0-3) -> float targets ``(B, 3, *spatial)`` (WT, TC, ET).

    One comparison per label value on the float map, written into one bool
    tensor: the same 0/1 targets as ``torch.isin`` on int64 labels, at a tenth
    of its time (which was as long as the loss itself for a tiny network).
    """
    label = label.round()
    regions = torch.zeros((label.shape[0], len(TRAIN_REGIONS), *label.shape[2:]), dtype=torch.bool,
                          device=label.device)
    for channel, region in enumerate(TRAIN_REGIONS):
        for value in REGIONS[region]:
            regions[:, channel : channel + 1] |= label == value
    return regions.to(torch.float32)


def detection_targets(label: torch.Tensor, rule: str = "any_tumour") -> torch.Tensor:
    """BraTS label patches ``(B, 1, *spatial)`` -> ``(B, 1)`` float patch labels.

    ``rule`` (``training.detection.target``): ``any_tumour`` = 1 where the patch
    holds any tumour voxel (WT); ``label_sum`` = 1 where the sum of the raw label
    values (0-3) exceeds 1, the authors' rule, under which a patch holding one
    voxel of NETC (label 1) and nothing else is negative.
    """
    flat = label.flatten(1)
    if rule == "label_sum":
        return (flat.sum(dim=1, keepdim=True) > 1).to(torch.float32)
    return (flat > 0.5).any(dim=1, keepdim=True).to(torch.float32)


def deep_supervision_weights(n_heads: int, decay: float = 0.5, normalise: bool = True) -> list[float]:
    """Weights ``decay**i`` of heads ``i = 0..n-1`` (main head first), normalised to sum to 1 when ``normalise``."""
    raw = [decay**i for i in range(n_heads)]
    total = sum(raw) if normalise else 1.0
    return [w / total for w in raw]


#: MONAI DiceLoss arguments of each ``training.segmentation.dice`` mode. ``batch`` sums over
#: the batch and space before dividing (nnU-Net's region-based setting), which keeps patches
#: without a region from yielding a degenerate per-patch Dice of 0/0; ``sample`` is the
#: authors' per-patch Dice (smooth_nr 0, smooth_dr 1e-5), averaged over patches and channels.
_DICE_MODES = {
    "batch": {"batch": True, "smooth_nr": 1e-5, "smooth_dr": 1e-5},
    "sample": {"batch": False, "smooth_nr": 0.0, "smooth_dr": 1e-5},
}


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, mode: str = "batch") -> torch.Tensor:
    """``1 - mean over channels (and, for mode sample, patches) of the soft Dice`` of sigmoid(logits)."""
    from monai.losses import DiceLoss

    return DiceLoss(sigmoid=True, **_DICE_MODES[mode])(logits.float(), target.float())


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, dice: str = "batch") -> torch.Tensor:
    """Soft Dice + binary cross-entropy (with logits), both averaged over the three region channels."""
    return soft_dice_loss(logits, target, dice) + F.binary_cross_entropy_with_logits(logits.float(), target)


def segmentation_loss(main: torch.Tensor, aux: Sequence[torch.Tensor], target: torch.Tensor,
                      decay: float = 0.5, extra: torch.Tensor | None = None, *,
                      normalise: bool = True, dice: str = "batch") -> torch.Tensor:
    """Deep-supervised Dice + BCE: sum over heads of ``w_i * (Dice + BCE)(head_i, target at head_i's size)``.

    ``main`` is head 0; ``aux`` are the further heads in order (MONAI DynUNet
    returns them already at full size, so their targets are not resized; heads
    of other networks get a nearest-neighbour downsampled target, which keeps
    binary region targets binary). ``extra`` is a loss term the network returns
    itself (SegResNetVAE's VAE loss), added unweighted. ``normalise`` and ``dice``
    are ``training.segmentation.deep_supervision_normalise`` and ``.dice``.
    """
    from monai.losses import DeepSupervisionLoss

    heads = [main, *aux]
    weights = deep_supervision_weights(len(heads), decay, normalise)
    # explicit weights: MONAI's own "exp" mode clamps them at 1/16 and cannot normalise
    loss = DeepSupervisionLoss(lambda h, t: dice_bce_loss(h, t, dice), weights=weights)(heads, target)
    if extra is not None:
        loss = loss + extra.float()
    return loss


def detection_loss(logits: torch.Tensor, target: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits of the patch classifier (``(B, 1)`` logits and targets)."""
    loss = F.binary_cross_entropy_with_logits(logits.float().reshape(target.shape), target)
    if extra is not None:
        loss = loss + extra.float()
    return loss
