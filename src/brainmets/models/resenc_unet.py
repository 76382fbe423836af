"""nnU-Net's residual-encoder U-Net (ResEnc), the field's reference row beyond the paper.

nnU-Net v2's recommended ResEnc presets (Isensee et al., MICCAI 2024, "nnU-Net
Revisited") build ``ResidualEncoderUNet`` from the package
``dynamic-network-architectures``. That package requires ``timm``, which pulls
torchvision and huggingface_hub, for modules this network never imports; the
network is therefore rebuilt here from the package's published description
(version 0.4.4). Parameter count and output equal the package's for the same
settings (checked once in a throwaway environment; the numbers are in
``tests/models/test_new_networks.py``).

The network, with nnU-Net's 3D ResEnc settings:

* stem: one Conv3x3x3 (bias) - InstanceNorm (affine, eps 1e-5) - LeakyReLU(0.01)
  at full resolution, ``features[0]`` channels;
* encoder stage ``s``: ``blocks[s]`` ResNet-D basic blocks; the first one has
  stride 2 (stride 1 at stage 0). A block is Conv-Norm-LeakyReLU, Conv-Norm, plus
  a skip that is the identity, or average pooling (stride 2) followed by a 1x1x1
  convolution without bias and a norm when the shape changes; the sum goes through
  LeakyReLU. The last norm of every block starts at zero, so each block starts as
  its skip;
* decoder stage: transposed convolution (kernel = stride = 2, bias) to the skip's
  width, concatenation with the skip, ``decoder_convs`` Conv-Norm-LeakyReLU;
* head: a 1x1x1 convolution (bias) at full resolution.

Convolutions are He-initialised (``kaiming_normal_`` with slope 0.01), biases zero.

The ResEnc presets (M/L/XL) share this architecture; they differ in patch and
batch size. For a 128^3 patch nnU-Net plans 6 stages, widths 32-64-128-256-320-320,
blocks 1-3-4-6-6-6 and one decoder convolution per stage: the registry defaults.

One difference from the package, on purpose: the package builds a segmentation
layer for every decoder stage and uses all of them only with deep supervision,
which nnU-Net's losses combine at lower resolutions. This registry's forward
contract has no such heads, so only the full-resolution head is built; the
package's count for the same settings is larger by those unused layers
(``(features[s] + 1) * out_channels`` for every stage but the first and the last).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: nnU-Net's 3D ResEnc widths and encoder depth for a 6-stage (128^3) plan.
RESENC_FEATURES = (32, 64, 128, 256, 320, 320)
RESENC_BLOCKS = (1, 3, 4, 6, 6, 6)


def _conv_norm(cin: int, cout: int, kernel: int, stride: int, bias: bool, activate: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv3d(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2, bias=bias),
        nn.InstanceNorm3d(cout, eps=1e-5, affine=True),
    ]
    if activate:
        layers.append(nn.LeakyReLU(0.01, inplace=True))
    return nn.Sequential(*layers)


class ResidualBlockD(nn.Module):
    """ResNet-D basic block (He et al. 2019): average-pooled 1x1x1 projection on the skip."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _conv_norm(cin, cout, 3, stride, bias=True, activate=True)
        self.conv2 = _conv_norm(cout, cout, 3, 1, bias=True, activate=False)
        skip: list[nn.Module] = []
        if stride != 1:
            skip.append(nn.AvgPool3d(stride, stride))
        if cin != cout:
            skip.append(_conv_norm(cin, cout, 1, 1, bias=False, activate=False))
        self.skip = nn.Sequential(*skip)  # an empty Sequential is the identity
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))


class ResEncUNet(nn.Module):
    """Residual-encoder U-Net with concatenating skips; stride 2 between stages."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = RESENC_FEATURES,
        blocks: Sequence[int] = RESENC_BLOCKS,
        decoder_convs: int = 1,
    ):
        super().__init__()
        features, blocks = [int(f) for f in features], [int(b) for b in blocks]
        if len(features) < 2 or len(features) != len(blocks) or min(blocks) < 1 or decoder_convs < 1:
            raise ValueError(
                f"ResEnc U-Net needs >= 2 stages with one block count >= 1 each and decoder_convs >= 1, "
                f"got features={features}, blocks={blocks}, decoder_convs={decoder_convs}"
            )
        self.stem = _conv_norm(in_channels, features[0], 3, 1, bias=True, activate=True)
        self.stages = nn.ModuleList()
        previous = features[0]
        for stage, (width, count) in enumerate(zip(features, blocks)):
            first = ResidualBlockD(previous, width, 1 if stage == 0 else 2)
            self.stages.append(nn.Sequential(first, *[ResidualBlockD(width, width, 1) for _ in range(count - 1)]))
            previous = width
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for deeper, width in zip(features[:0:-1], features[-2::-1]):
            self.upsamplers.append(nn.ConvTranspose3d(deeper, width, 2, stride=2))
            convs = [_conv_norm(2 * width, width, 3, 1, bias=True, activate=True)]
            convs += [_conv_norm(width, width, 3, 1, bias=True, activate=True) for _ in range(decoder_convs - 1)]
            self.decoders.append(nn.Sequential(*convs))
        self.head = nn.Conv3d(features[0], out_channels, 1)
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(module.weight, a=1e-2)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            if isinstance(module, ResidualBlockD):
                # each block starts as its skip path (nnU-Net's init_last_bn_before_add_to_0)
                nn.init.zeros_(module.conv2[1].weight)
                nn.init.zeros_(module.conv2[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips[:-1])):
            x = decoder(torch.cat((upsample(x), skip), dim=1))
        return self.head(x)
