"""nnFormer (Zhou et al., "nnFormer: Volumetric Medical Image Segmentation via a 3D
Transformer", IEEE TIP 32, 2023), reconstructed for this registry.

nnFormer is in no package. This module realises the components the paper
describes (abstract and method: interleaved convolution and self-attention,
local and global volume-based self-attention, skip attention in place of
concatenation) with the layout and sizes of the authors' released BraTS
configuration (282857341/nnFormer; the paper authors' repo xmindflow/Met-Seg
trains a copy of it), read but not copied. The paper's full text could not be
consulted from the machine this was written on, so its layer details are taken
as the released code has them. It is a reconstruction, not the authors' code.

Followed (the paper's components, laid out as released):

* convolutional embedding: four 3x3x3 convolutions, the first and the third
  strided (together ``embed_patch`` per axis: 2 then the rest, as the released
  code splits its 2x4x4 Synapse patch), GELU and LayerNorm after every one but
  the last, then a LayerNorm on the tokens;
* an encoder of volume-based multi-head self-attention blocks (LV-MSA: attention
  inside non-overlapping local volumes, every second block on volumes shifted by
  half a window), with relative position biases; between stages a strided 3x3x3
  convolution halves the resolution and doubles the width (GELU and LayerNorm
  before it, the paper's "interleaved" convolution);
* at the two coarsest stages the volume covers the whole feature map, which makes
  the attention global (the paper's GV-MSA): with the BraTS windows
  (4, 4, 8, 4) and a 4x4x4 embedding of a 128^3 patch, stages 3 and 4 see 8^3 and
  4^3 tokens in one volume;
* a symmetric decoder: LayerNorm and a 2x2x2 transposed convolution per stage
  (half the width), then *skip attention*: the first block of a decoder stage
  attends from the up-sampled decoder tokens (queries) to the encoder tokens of
  the same level (keys and values), in place of concatenation; its residual is
  the sum of both;
* a final transposed convolution with kernel = stride = ``embed_patch`` to the
  output classes at full resolution.

Chosen where the paper is silent (from the released BraTS configuration unless
said otherwise):

* widths ``embed_dim`` 96 doubling per stage, depths (2, 2, 2, 2), heads
  (3, 6, 12, 24), windows (4, 4, 8, 4), embedding patch 4, MLP ratio 4;
* decoder stages use the head count of the next deeper encoder stage (as the
  released BraTS code and Met-Seg's copy do; the released Synapse code uses the
  same level's); skip attention projects keys and values but uses the decoder
  tokens as queries without a projection (as the released code does);
* stochastic depth 0.2 rising linearly over the encoder blocks, and again over
  the decoder blocks;
* every encoder stage's output passes a LayerNorm before it is used as a skip;
* a window larger than the feature map shrinks to the feature map (no shift);
* this module's own choices: no deep-supervision heads (the registry's forward
  contract has one output); PyTorch's default initialisation, relative position
  biases N(0, 0.02); every feature map divisible by its window instead of padding.

Size: 150.5 M parameters is the figure quoted for nnFormer in its Synapse
configuration (embedding 192, heads 6-12-24-48, embedding patch 2x4x4, crop
64x128x128, 213.4 GFLOPs), e.g. in UNETR++ (Shaker et al., IEEE TMI 2024,
Table 1); the TIP paper's own text could not be consulted from here, so the
statement is taken as that quoted figure. :func:`synapse_nnformer` builds that
configuration with this reconstruction: 149.7 M parameters without and 150.2 M
with the released code's two extra deep-supervision heads, within 0.6 % of
150.5 M (the test checks 1 %). The released Synapse code itself counts
150,054,210 with those heads; its decoder uses the encoder's head counts of the
same level, which only changes the relative-bias tables (-174,348).
The BraTS configuration the registry defaults to (embedding 96, heads 3-6-12-24,
patch 4, 4 input sequences, 3 outputs, 128^3) counts 37,600,581 parameters,
exactly the released BraTS code's count for the same settings (checked once in
a throwaway environment); no paper states a count for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


#: The released BraTS configuration's depths and embedding patch (the registry's defaults).
DEPTHS = (2, 2, 2, 2)
EMBED_PATCH = 4


def _triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    values = tuple(int(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"expected an int or 3 ints, got {value!r}")
    return values  # type: ignore[return-value]


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


def _linear_rates(top: float, count: int) -> list[float]:
    """``count`` stochastic-depth rates rising linearly from 0 to ``top``."""
    return [top * i / max(count - 1, 1) for i in range(count)]


def _to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, D, H, W, C) -> (B * windows, window**3, C)."""
    b, d, h, w, c = x.shape
    x = x.view(b, d // window, window, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, window**3, c)


def _from_windows(windows: torch.Tensor, window: int, shape: Sequence[int]) -> torch.Tensor:
    b, d, h, w, c = shape
    x = windows.view(b, d // window, h // window, w // window, window, window, window, c)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, c)


def _shift_mask(resolution: Sequence[int], window: int, shift: int) -> torch.Tensor:
    """Additive attention mask that keeps shifted volumes from mixing regions that were not adjacent."""
    regions = torch.zeros((1, *resolution, 1))
    label = 0
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for sd in bounds:
        for sh in bounds:
            for sw in bounds:
                regions[:, sd, sh, sw, :] = label
                label += 1
    labels = _to_windows(regions, window).squeeze(-1)
    different = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(different.shape).masked_fill(different, -100.0)


class VolumeAttention(nn.Module):
    """Multi-head attention inside cubic volumes, with a learned relative position bias.

    ``skip_attention=True``: keys and values come from the encoder tokens, the
    queries are the decoder tokens as they are (nnFormer's skip attention).
    """

    def __init__(self, dim: int, window: int, heads: int, skip_attention: bool):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.scale, self.skip_attention = heads, (dim // heads) ** -0.5, skip_attention
        self.relative_bias = nn.Parameter(torch.empty((2 * window - 1) ** 3, heads))
        nn.init.trunc_normal_(self.relative_bias, std=0.02)
        coords = torch.stack(torch.meshgrid(*[torch.arange(window)] * 3, indexing="ij")).flatten(1)
        offsets = (coords[:, :, None] - coords[:, None, :]) + (window - 1)  # 3 x N x N, each in [0, 2w-2]
        span = 2 * window - 1
        self.register_buffer("bias_index", (offsets[0] * span + offsets[1]) * span + offsets[2], persistent=False)
        self.to_kv = nn.Linear(dim, 2 * dim) if skip_attention else nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        n, length, _ = t.shape
        return t.view(n, length, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, query: torch.Tensor | None = None) -> torch.Tensor:
        n, length, c = x.shape
        if self.skip_attention:
            k, v = self.to_kv(x).chunk(2, dim=-1)
            q = query
        else:
            q, k, v = self.to_kv(x).chunk(3, dim=-1)
        q, k, v = self._split(q), self._split(k), self._split(v)
        bias = self.relative_bias[self.bias_index].permute(2, 0, 1)  # heads x N x N
        if mask is not None:  # one mask per window position, repeated over the batch
            bias = bias.unsqueeze(0) + mask.unsqueeze(1)
            bias = bias.repeat(n // mask.shape[0], 1, 1, 1)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        return self.out(attended.transpose(1, 2).reshape(n, length, c))


class VolumeBlock(nn.Module):
    """Pre-norm transformer block on (B, D, H, W, C) tokens with (shifted) volume attention."""

    def __init__(
        self,
        dim: int,
        resolution: Sequence[int],
        heads: int,
        window: int,
        shift: bool,
        drop_path: float,
        skip_attention: bool = False,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        if min(resolution) <= window:
            window, shift = min(resolution), False
        if any(r % window for r in resolution):
            raise ValueError(f"feature map {list(resolution)} is not divisible by its attention window {window}")
        self.window, self.shift = window, (window // 2 if shift else 0)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = VolumeAttention(dim, window, heads, skip_attention)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        mask = _shift_mask(resolution, window, self.shift) if self.shift else None
        self.register_buffer("mask", mask, persistent=False)

    def _roll(self, x: torch.Tensor, sign: int) -> torch.Tensor:
        return torch.roll(x, shifts=(sign * self.shift,) * 3, dims=(1, 2, 3)) if self.shift else x

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, up: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, D, H, W, C); for skip attention also the encoder ``skip`` and up-sampled ``up`` tokens."""
        shape = x.shape
        if skip is None:
            attended = self.attn(_to_windows(self._roll(self.norm1(x), -1), self.window), self.mask)
        else:
            keys = _to_windows(self._roll(self.norm1(skip), -1), self.window)
            queries = _to_windows(self._roll(self.norm1(up), -1), self.window)
            attended = self.attn(keys, self.mask, query=queries)
        x = x + self.drop_path(self._roll(_from_windows(attended, self.window, shape), 1))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class _ChannelsLastNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, D, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


def _embedding(in_channels: int, dim: int, patch: tuple[int, int, int]) -> nn.Sequential:
    # the first strided convolution halves each axis (if the patch allows), the second takes the rest
    first = tuple(min(p, 2) for p in patch)
    second = tuple(p // f for p, f in zip(patch, first))
    if any(f * s != p for p, f, s in zip(patch, first, second)):
        raise ValueError(f"embedding patch {list(patch)} must be 1 or even on every axis")
    half = dim // 2
    return nn.Sequential(
        nn.Conv3d(in_channels, half, 3, stride=first, padding=1), nn.GELU(), _ChannelsLastNorm(half),
        nn.Conv3d(half, half, 3, padding=1), nn.GELU(), _ChannelsLastNorm(half),
        nn.Conv3d(half, dim, 3, stride=second, padding=1), nn.GELU(), _ChannelsLastNorm(dim),
        nn.Conv3d(dim, dim, 3, padding=1),
    )  # fmt: skip


class NnFormer(nn.Module):
    """nnFormer reconstruction (see the module docstring); logits at the input's resolution."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        patch: Sequence[int],
        embed_dim: int = 96,
        depths: Sequence[int] = DEPTHS,
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_sizes: Sequence[int] = (4, 4, 8, 4),
        embed_patch: int | Sequence[int] = EMBED_PATCH,
        drop_path: float = 0.2,
    ):
        super().__init__()
        depths, num_heads, window_sizes = list(depths), list(num_heads), list(window_sizes)
        stages = len(depths)
        if stages < 2 or not (len(num_heads) == len(window_sizes) == stages):
            raise ValueError(
                f"depths, num_heads and window_sizes need one entry per stage (>= 2 stages), "
                f"got {depths}, {num_heads}, {window_sizes}"
            )
        self.embed_patch = _triple(embed_patch)
        grid = [int(p) // e for p, e in zip(patch, self.embed_patch)]
        if any(int(p) % (e * 2 ** (stages - 1)) for p, e in zip(patch, self.embed_patch)):
            raise ValueError(
                f"patch {list(patch)} must be divisible by embed_patch {list(self.embed_patch)} "
                f"times 2**{stages - 1} on every axis"
            )
        widths = [embed_dim * 2**s for s in range(stages)]
        resolutions = [[g // 2**s for g in grid] for s in range(stages)]
        encoder_rates = _linear_rates(drop_path, sum(depths))
        decoder_rates = _linear_rates(drop_path, sum(depths[:-1]))

        self.embed = _embedding(in_channels, embed_dim, self.embed_patch)
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.encoder = nn.ModuleList()
        self.skip_norms = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        for s in range(stages):
            rates = encoder_rates[sum(depths[:s]) : sum(depths[: s + 1])]
            self.encoder.append(nn.ModuleList(
                VolumeBlock(widths[s], resolutions[s], num_heads[s], window_sizes[s], i % 2 == 1, rates[i])
                for i in range(depths[s])
            ))  # fmt: skip
            self.skip_norms.append(nn.LayerNorm(widths[s]))
            if s < stages - 1:
                self.downsamplers.append(nn.Sequential(
                    nn.GELU(), _ChannelsLastNorm(widths[s]), nn.Conv3d(widths[s], widths[s + 1], 3, stride=2, padding=1)
                ))  # fmt: skip
        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for s in reversed(range(stages - 1)):
            # decoder stages are numbered from the deepest; stochastic depth rises towards the output
            offset = sum(depths[s + 1 : stages - 1])
            rates = decoder_rates[offset : offset + depths[s]]
            self.upsamplers.append(nn.Sequential(
                _ChannelsLastNorm(widths[s + 1]), nn.ConvTranspose3d(widths[s + 1], widths[s], 2, stride=2)
            ))  # fmt: skip
            self.decoder.append(nn.ModuleList(
                VolumeBlock(widths[s], resolutions[s], num_heads[s + 1], window_sizes[s], i > 0, rates[i],
                            skip_attention=i == 0)
                for i in range(depths[s])
            ))  # fmt: skip
        self.head = nn.ConvTranspose3d(embed_dim, out_channels, self.embed_patch, stride=self.embed_patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed_norm(self.embed(x).permute(0, 2, 3, 4, 1))  # channels last from here on
        skips = []
        for s, blocks in enumerate(self.encoder):
            for block in blocks:
                x = block(x)
            skips.append(self.skip_norms[s](x))
            if s < len(self.downsamplers):
                x = self.downsamplers[s](x.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)
        x = skips[-1]
        for upsample, blocks, skip in zip(self.upsamplers, self.decoder, reversed(skips[:-1])):
            up = upsample(x.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)
            x = blocks[0](up + skip, skip=skip, up=up)
            for block in blocks[1:]:
                x = block(x)
        return self.head(x.permute(0, 4, 1, 2, 3))


def synapse_nnformer(in_channels: int = 1, out_channels: int = 14) -> NnFormer:
    """The paper's Synapse configuration (the one its parameter count is stated for)."""
    return NnFormer(
        in_channels, out_channels, patch=(64, 128, 128), embed_dim=192, num_heads=(6, 12, 24, 48),
        window_sizes=(4, 4, 8, 4), embed_patch=(2, 4, 4),
    )  # fmt: skip
