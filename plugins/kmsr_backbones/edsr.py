"""EDSR (Lim et al., CVPRW 2017) on the LR RGB image.

Mean shift (subtract the DIV2K RGB mean, added back at the end), head conv 3 -> F, ``blocks``
residual blocks (conv-ReLU-conv, times ``res_scale``, plus identity), a body conv and a skip over
the whole body, a pixel-shuffle upsampler (one conv + shuffle by s for x2/x3, two x2 stages for
x4) and a tail conv F -> 3 at HR.

Defaults are EDSR-baseline: 16 blocks, 64 filters, no residual scaling (``res_scale=1``). The
paper's large EDSR is ``blocks=32, filters=256, res_scale=0.1``.
"""

from __future__ import annotations

import torch
from torch import nn

from kmsr_ops.validate import check_float, check_int

from .base import SRBackbone, check_scale
from .kmsr_net import ResidualBlock
from .receptive_field import edsr_rf

SCALES = (2, 3, 4)
DEFAULTS = {"blocks": 16, "filters": 64, "res_scale": 1.0}
# DIV2K RGB mean in [0, 1], the constant of the EDSR release.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def _upsampler(scale: int, filters: int) -> nn.Sequential:
    steps = [2, 2] if scale == 4 else [scale]
    layers: list[nn.Module] = []
    for s in steps:
        layers += [nn.Conv2d(filters, filters * s * s, 3, padding=1), nn.PixelShuffle(s)]
    return nn.Sequential(*layers)


class EDSR(SRBackbone):
    input_kind = "lr"
    channels = "rgb"

    def __init__(self, scale: int = 4, *, blocks: int = 16, filters: int = 64, res_scale: float = 1.0):
        scale = check_scale(scale, SCALES)
        blocks = check_int("blocks", blocks, 0)
        filters = check_int("filters", filters)
        res_scale = check_float("res_scale", res_scale)
        super().__init__(scale, {"blocks": blocks, "filters": filters, "res_scale": res_scale}, edsr_rf(scale, blocks))
        self.register_buffer("rgb_mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Conv2d(3, filters, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(filters, res_scale) for _ in range(blocks)],
                                  nn.Conv2d(filters, filters, 3, padding=1))
        self.upsample = _upsampler(scale, filters)
        self.tail = nn.Conv2d(filters, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.rgb_mean.to(x.dtype)
        f = self.head(x - mean)
        f = f + self.body(f)
        return self.tail(self.upsample(f)) + mean
