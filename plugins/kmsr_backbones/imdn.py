"""IMDN (Hui, Gao, Yang and Wang, ACM MM 2019), the Information Multi-Distillation Network, on the LR RGB image.

The published IMDN weights state no licence, so kmsr uses them for comparison only: the weights
are never redistributed and kmsr never initialises a shipped model from them (``kmsr bench`` and
``kmsr sr`` load them; ``kmsr train`` refuses ``--init imdn:FILE`` and ``--option weights=FILE``). The architecture itself is implemented here from the paper and can
be trained from scratch.

Layout (each name is a parameter prefix of the published state dict):

- ``fea_conv``: 3x3 conv 3 -> F;
- ``IMDB1`` .. ``IMDB6``: information multi-distillation modules. Each runs ``c1`` (3x3 F -> F),
  LeakyReLU(0.05), and splits off F/4 "distilled" channels; the remaining 3F/4 go through ``c2``
  and ``c3`` (3x3 3F/4 -> F, LeakyReLU, split again) and ``c4`` (3x3 3F/4 -> F/4, no activation).
  The four distilled parts (F channels) pass the contrast-aware channel attention ``cca``
  (per-channel spatial standard deviation plus spatial mean, 1x1 F -> F/16, ReLU, 1x1 F/16 -> F,
  sigmoid, times the features), then ``c5`` (1x1 F -> F), plus the module input;
- ``c.0``: 1x1 conv over the six module outputs (6F -> F), LeakyReLU(0.05);
- ``LR_conv``: 3x3 conv F -> F, plus the ``fea_conv`` output;
- ``upsampler.0``: 3x3 conv F -> 3 s^2, then pixel shuffle by s.

The input is RGB in [0, 1] with no mean shift; clip the output to [0, 1]. The channel attention
pools over the whole input, so strictly every output pixel depends on every input pixel;
``receptive_field`` is that of the convolutions alone (the window outside which a change reaches
an output pixel only through the attention's per-channel mean and standard deviation), and tiled
inference with that margin differs from untiled inference only through those statistics
(``global_context`` is True).
"""

from __future__ import annotations

import torch
from torch import nn

from kmsr_ops.validate import check_int

from .base import SRBackbone, check_scale
from .receptive_field import imdn_rf

SCALES = (2, 3, 4)
DEFAULTS = {"filters": 64, "modules": 6}
LRELU_SLOPE = 0.05
CCA_REDUCTION = 16


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class _ContrastChannelAttention(nn.Module):
    """CCA: weights per channel from its contrast (spatial std + mean), as ``conv_du.{0,2}``."""

    def __init__(self, channels: int, reduction: int = CCA_REDUCTION):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()  # population std, as published
        return x * self.conv_du(std + mean)


class _IMDModule(nn.Module):
    def __init__(self, filters: int):
        super().__init__()
        self.distilled = filters // 4
        self.remaining = filters - self.distilled
        self.c1 = _conv(filters, filters, 3)
        self.c2 = _conv(self.remaining, filters, 3)
        self.c3 = _conv(self.remaining, filters, 3)
        self.c4 = _conv(self.remaining, self.distilled, 3)
        self.act = nn.LeakyReLU(LRELU_SLOPE)
        self.cca = _ContrastChannelAttention(4 * self.distilled)
        self.c5 = _conv(4 * self.distilled, filters, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        r = x
        for conv in (self.c1, self.c2, self.c3):
            d, r = torch.split(self.act(conv(r)), (self.distilled, self.remaining), dim=1)
            parts.append(d)
        parts.append(self.c4(r))
        return self.c5(self.cca(torch.cat(parts, dim=1))) + x


class IMDN(SRBackbone):
    """IMDN for one scale; options ``filters`` (F, a multiple of 16) and ``modules`` (6 published)."""

    input_kind = "lr"
    channels = "rgb"
    global_context = True  # the channel attention pools over the whole input

    def __init__(self, scale: int = 4, *, filters: int = 64, modules: int = 6):
        scale = check_scale(scale, SCALES)
        filters = check_int("filters", filters)
        modules = check_int("modules", modules)
        if filters % CCA_REDUCTION:
            from kmsr_ops.errors import KmsrInputError

            raise KmsrInputError(f"filters: expected a multiple of {CCA_REDUCTION} (the channel attention's "
                                 f"reduction), found {filters}")
        super().__init__(scale, {"filters": filters, "modules": modules}, imdn_rf(scale, modules))
        self.fea_conv = _conv(3, filters, 3)
        self.n_modules = modules
        for i in range(1, modules + 1):
            self.add_module(f"IMDB{i}", _IMDModule(filters))
        self.c = nn.Sequential(_conv(modules * filters, filters, 1), nn.LeakyReLU(LRELU_SLOPE))
        self.LR_conv = _conv(filters, filters, 3)
        self.upsampler = nn.Sequential(_conv(filters, 3 * scale * scale, 3), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        outs, o = [], fea
        for i in range(1, self.n_modules + 1):
            o = getattr(self, f"IMDB{i}")(o)
            outs.append(o)
        body = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(body)
