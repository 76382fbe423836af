"""ResUNet and ResUNetSE: pytorch-3dunet's ``ResidualUNet3D`` / ``ResidualUNetSE3D``.

The paper's authors (xmindflow/Met-Seg) train these two networks from a copy of
pytorch-3dunet (Wolny et al., eLife 2020; the design follows Lee et al.,
arXiv:1706.00120). They are rebuilt here from pytorch3dunet 1.9.6's published
description instead of depending on the package, which pulls torchvision,
tensorboard, h5py and scikit-image for two small modules. Parameter counts and
output shapes equal pytorch3dunet 1.9.6's for the same settings (checked once in
a throwaway environment; the numbers are in ``tests/models/test_new_networks.py``).

The network, as pytorch3dunet builds it with its defaults (layer order ``gcr``,
8 groups, 5 levels, ``f_maps`` 64 doubling per level):

* encoder level ``i``: 2x2x2 max-pooling (not at level 0), then a residual block;
* residual block ``cin -> c``: a 1x1x1 convolution (with bias) when
  ``cin != c``, else the identity, gives ``r``; then GroupNorm-Conv3x3x3-ReLU and
  GroupNorm-Conv3x3x3 (convolutions without bias, as a norm precedes them); the
  sum with ``r`` goes through ReLU. Group norm uses one group when a layer has
  fewer channels than ``num_groups``;
* SE variant: the block's output then passes concurrent spatial and channel
  squeeze-and-excitation (scSE, Roy et al. 2018) with reduction ratio 1: the
  element-wise maximum of channel-gated and voxel-gated features;
* decoder level: a 3x3x3 transposed convolution with stride 2 and padding 1
  (no bias) gives ``2n - 1`` voxels per axis, nearest-neighbour resampling
  brings it to the skip's size, the skip is *added* (not concatenated), then a
  residual block with equal in/out channels;
* head: a 1x1x1 convolution to ``out_channels``.

Differences from the package, on purpose: the final sigmoid/softmax is left out
(every registry network returns logits) and ResNet blocks ignore dropout exactly
as the package's do, so there is no dropout key. The authors' vendored copy is an
older pytorch-3dunet whose transposed convolutions carry a bias and are sized
with ``output_size`` instead of being resampled; that adds ``sum(f_maps[:-1])``
parameters. This module follows the released 1.9.6.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _group_norm(channels: int, num_groups: int) -> nn.GroupNorm:
    # pytorch3dunet falls back to a single group when a layer is narrower than num_groups
    groups = num_groups if channels >= num_groups else 1
    if channels % groups:
        raise ValueError(f"{channels} channels cannot be split into {groups} groups")
    return nn.GroupNorm(groups, channels)


def _norm_conv(channels: int, num_groups: int) -> list[nn.Module]:
    return [_group_norm(channels, num_groups), nn.Conv3d(channels, channels, 3, padding=1, bias=False)]


class ConcurrentSqueezeExcitation(nn.Module):
    """scSE with reduction ratio 1: max of the channel-gated and the voxel-gated input."""

    def __init__(self, channels: int):
        super().__init__()
        self.channel_gate = nn.Sequential(
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
            nn.Linear(channels, channels),
            nn.ReLU(),
            nn.Linear(channels, channels),
            nn.Sigmoid(),
        )
        self.voxel_gate = nn.Sequential(nn.Conv3d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_weights = self.channel_gate(x)[:, :, None, None, None]
        return torch.maximum(x * channel_weights, x * self.voxel_gate(x))


class ResidualBlock(nn.Module):
    """pytorch3dunet's ``ResNetBlock`` (order ``gcr``), optionally followed by scSE."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int, squeeze_excitation: bool):
        super().__init__()
        self.project = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.body = nn.Sequential(
            *_norm_conv(out_channels, num_groups),
            nn.ReLU(inplace=True),
            *_norm_conv(out_channels, num_groups),
        )
        self.se = ConcurrentSqueezeExcitation(out_channels) if squeeze_excitation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.project(x)
        return self.se(F.relu(self.body(residual) + residual))


class ResidualUNet3D(nn.Module):
    """Residual 3D U-Net with additive skips; ``squeeze_excitation=True`` gives ResUNetSE.

    ``f_maps`` is the width per level (pytorch3dunet's ``f_maps`` list; an int
    there means ``f_maps * 2**k`` for ``num_levels`` levels, see
    :func:`features_per_level`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        f_maps: Sequence[int],
        num_groups: int = 8,
        squeeze_excitation: bool = False,
    ):
        super().__init__()
        widths = [int(f) for f in f_maps]
        if len(widths) < 2:
            raise ValueError(f"a residual U-Net needs at least 2 levels, got f_maps={widths}")
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(ResidualBlock(previous, width, num_groups, squeeze_excitation))
            previous = width
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for deeper, width in zip(widths[:0:-1], widths[-2::-1]):
            self.upsamplers.append(nn.ConvTranspose3d(deeper, width, 3, stride=2, padding=1, bias=False))
            self.decoders.append(ResidualBlock(width, width, num_groups, squeeze_excitation))
        self.head = nn.Conv3d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level:
                x = F.max_pool3d(x, 2)
            x = encoder(x)
            skips.append(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips[:-1])):
            # the stride-2 transposed convolution yields 2n-1 voxels; nearest resampling to the
            # skip's size is how pytorch3dunet 1.9.6 matches them
            x = F.interpolate(upsample(x), size=skip.shape[2:])
            x = decoder(skip + x)
        return self.head(x)


def features_per_level(f_maps: int | Sequence[int], num_levels: int) -> list[int]:
    """pytorch3dunet's widths: an int ``f`` means ``f, 2f, 4f, ...`` over ``num_levels`` levels."""
    if isinstance(f_maps, int):
        return [f_maps * 2**level for level in range(num_levels)]
    return [int(f) for f in f_maps]
