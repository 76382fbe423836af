"""One forward contract for every registry network, plus parameter and FLOP counts.

MONAI networks disagree on what ``forward`` returns:

* DynUNet with deep supervision, in train mode: one stacked tensor
  ``(B, 1 + n, C, D, H, W)`` (main head first, the ``n`` extra heads already
  upsampled to full size); in eval mode only the main head ``(B, C, D, H, W)``;
* SegResNetVAE: ``(out, vae_loss)``, ``vae_loss`` being ``None`` in eval mode;
* BasicUNetPlusPlus-like networks: a list of heads, main first;
* everything else: one tensor.

:func:`forward_outputs` hides that: it always returns
``(main_logits, aux_logits, extra_loss)`` so the training loop and inference
handle every model the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


def forward_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
    """Run ``model(x)`` and return ``(main_logits, aux_logits, extra_loss)``.

    ``main_logits`` has shape ``(B, C, *spatial)`` (or ``(B, C)`` for a
    classifier); ``aux_logits`` are the deep-supervision heads in order of
    decreasing resolution of their source (empty when there are none, always in
    eval mode), each with the main head's shape; ``extra_loss`` is a scalar to
    add to the training loss (SegResNetVAE's VAE term) or ``None``.
    """
    out = model(x)
    if isinstance(out, tuple):  # SegResNetVAE: (logits, vae_loss)
        main, extra = out[0], out[1]
        return main, [], extra
    if isinstance(out, list):
        return out[0], list(out[1:]), None
    if out.dim() == x.dim() + 1:  # DynUNet deep supervision: heads stacked on dim 1
        heads = out.unbind(dim=1)
        return heads[0], list(heads[1:]), None
    return out, [], None


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_flops(model: nn.Module, in_channels: int, patch: Sequence[int], batch: int = 1) -> float:
    """Forward FLOPs of one ``patch`` window (batch 1 by default) in eval mode.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts
    2 FLOPs per multiply-accumulate of convolutions and matrix products (the
    paper's "GFLOPs" 478 / 60 / 7 are GMACs = FLOPs / 2). The count runs on a
    copy of the model on the ``meta`` device, so no arithmetic is done and the
    paper-size U-Net at 128^3 is counted in well under a second; the model
    itself is not touched.
    """
    from torch.utils.flop_counter import FlopCounterMode

    meta_model = copy.deepcopy(model).to("meta").eval().requires_grad_(False)
    x = torch.empty((batch, int(in_channels), *[int(p) for p in patch]), device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta_model(x)
    return float(counter.get_total_flops())
