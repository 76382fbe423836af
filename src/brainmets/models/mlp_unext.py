"""MLP-UNEXT (Li, Chang, Yang, SPIE Medical Imaging 2024), reconstructed for this registry.

MLP-UNEXT is in no package, and neither its paper's text nor its code could be
consulted from the machine this was written on; the paper authors' repo
(xmindflow/Met-Seg) imports it from a module it does not publish. This module is
therefore a reconstruction of the design its name states, a volumetric UNeXt:
UNeXt (Valanarasu and Patel, MICCAI 2022; a convolutional early stage and a
tokenized, shifted-MLP latent stage) lifted to 3D. Its parameter and GMAC counts are this reconstruction's;
no paper count is checked.

Followed from UNeXt:

* three convolutional encoder stages (3x3x3 convolution, batch norm, 2x2x2
  max-pooling, ReLU), widths 16, 32, 128;
* two tokenized-MLP stages: an overlapping patch embedding (3x3x3 convolution
  with stride 2, LayerNorm over channels) to widths 160 and 256, one shifted-MLP
  block each and a LayerNorm;
* shifted-MLP block: ``x + MLP(LayerNorm(x))`` with the MLP ``shift -> Linear ->
  depth-wise 3x3x3 convolution -> GELU -> shift -> Linear``, hidden width =
  width (MLP ratio 1). A shift splits the channels into 5 groups and moves
  group ``g`` by ``g - 2`` voxels along one axis, filling with zeros;
* decoder: per level a 3x3x3 convolution to the next width, batch norm, 2x
  up-sampling, ReLU, and the *sum* with the encoder features of that level; the
  two deepest decoder levels end with a shifted-MLP block and a LayerNorm; a
  1x1x1 convolution gives the logits at full resolution.

Chosen for 3D (UNeXt is 2D):

* three shift positions instead of two, one per axis: along depth before the
  first Linear, along height before the depth-wise convolution, along width
  before the second Linear;
* trilinear instead of bilinear up-sampling; PyTorch's default initialisation.

The patch must be divisible by 32 (five halvings).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

#: UNeXt's widths: three convolutional stages, then two tokenized-MLP stages.
CONV_CHANNELS = (16, 32, 128)
TOKEN_DIMS = (160, 256)


def shift_groups(x: torch.Tensor, axis: int, groups: int = 5) -> torch.Tensor:
    """Move channel group ``g`` of a (B, C, D, H, W) tensor by ``g - groups // 2`` voxels along ``axis``.

    Vacated voxels are zero (the tensor is padded, shifted and cropped back), so
    no feature wraps around the volume.
    """
    pad = groups // 2
    chunks = x.chunk(groups, dim=1)
    moved = []
    for offset, chunk in zip(range(-pad, pad + 1), chunks):
        if offset == 0:
            moved.append(chunk)
            continue
        padding = [0, 0] * 3
        padding[2 * (4 - axis)] = padding[2 * (4 - axis) + 1] = pad  # F.pad lists the last axis first
        shifted = torch.roll(F.pad(chunk, padding), shifts=offset, dims=axis)
        moved.append(shifted.narrow(axis, pad, x.shape[axis]))
    return torch.cat(moved, dim=1)


class _ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, D, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class ShiftedMLPBlock(nn.Module):
    """``x + MLP(LayerNorm(x))`` with axis shifts around the MLP's layers (tokens kept as a volume)."""

    def __init__(self, dim: int, mlp_ratio: float = 1.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm = _ChannelNorm(dim)
        self.fc1 = nn.Conv3d(dim, hidden, 1)  # a Linear on every token
        self.depthwise = nn.Conv3d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv3d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc1(shift_groups(self.norm(x), axis=2))
        y = F.gelu(self.depthwise(shift_groups(y, axis=3)))
        return x + self.fc2(shift_groups(y, axis=4))


class TokenStage(nn.Module):
    """Overlapping patch embedding (stride 2), one shifted-MLP block, LayerNorm."""

    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.embed = nn.Conv3d(cin, dim, 3, stride=2, padding=1)
        self.embed_norm = _ChannelNorm(dim)
        self.block = ShiftedMLPBlock(dim)
        self.norm = _ChannelNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.block(self.embed_norm(self.embed(x))))


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout))


class MLPUNext(nn.Module):
    """Volumetric UNeXt (see the module docstring); logits at the input's resolution."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        conv_channels: Sequence[int] = CONV_CHANNELS,
        token_dims: Sequence[int] = TOKEN_DIMS,
    ):
        super().__init__()
        conv_channels, token_dims = [int(c) for c in conv_channels], [int(d) for d in token_dims]
        if len(conv_channels) < 1 or len(token_dims) < 1:
            raise ValueError(f"needs >= 1 convolutional and >= 1 token stage, got {conv_channels}, {token_dims}")
        self.conv_stages = nn.ModuleList()
        previous = in_channels
        for width in conv_channels:
            self.conv_stages.append(_conv_bn(previous, width))
            previous = width
        self.token_stages = nn.ModuleList()
        for dim in token_dims:
            self.token_stages.append(TokenStage(previous, dim))
            previous = dim
        widths = conv_channels + token_dims
        # decoder level k maps widths[k+1] -> widths[k]; the last one keeps widths[0] at full resolution
        targets = widths[-2::-1] + [widths[0]]
        self.decoder_convs = nn.ModuleList()
        self.decoder_blocks = nn.ModuleList()
        for target in targets:
            self.decoder_convs.append(_conv_bn(previous, target))
            is_token_level = len(self.decoder_convs) <= len(token_dims)
            self.decoder_blocks.append(
                nn.Sequential(ShiftedMLPBlock(target), _ChannelNorm(target)) if is_token_level else nn.Identity()
            )
            previous = target
        self.head = nn.Conv3d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.conv_stages:
            x = F.relu(F.max_pool3d(stage(x), 2))
            skips.append(x)
        for stage in self.token_stages:
            x = stage(x)
            skips.append(x)
        skips = skips[-2::-1] + [None]  # the full-resolution level has no skip
        for conv, block, skip in zip(self.decoder_convs, self.decoder_blocks, skips):
            x = F.relu(F.interpolate(conv(x), scale_factor=2, mode="trilinear"))
            if skip is not None:
                x = x + skip
            x = block(x)
        return self.head(x)
