"""CARN-M (Ahn, Kang and Sohn, ECCV 2018), the mobile Cascading Residual Network, on the LR RGB image.

Layout (each name is a parameter prefix of the published state dict):

- ``sub_mean`` / ``add_mean``: 1x1 convolutions subtracting and adding back an RGB mean (the
  DIV2K mean; the published file stores its own copy, which is loaded as it is);
- ``entry``: 3x3 conv 3 -> F;
- ``b1``, ``b2``, ``b3``: cascading blocks. Each holds **one** efficient residual unit ``b1``
  (grouped 3x3, ReLU, grouped 3x3, ReLU, 1x1, then ReLU of the sum with the input), applied three
  times with shared weights, and the 1x1 fusions ``c1``, ``c2``, ``c3`` (2F, 3F, 4F -> F, ReLU)
  over the concatenation of everything so far;
- ``c1``, ``c2``, ``c3``: the same cascading fusions around the three blocks;
- ``upsample.up{2,3,4}``: grouped 3x3 conv to 4F (9F for x3), ReLU, pixel shuffle, once per x2
  stage (twice for x4); the published model is multi-scale and holds all three branches;
- ``exit``: 3x3 conv F -> 3 at HR.

A kmsr CARN-M is built for one scale and keeps only that scale's branch (``multi_scale=False``,
the default), so a fine-tuned model carries no weights it never trained; ``multi_scale=True``
keeps the three branches, as the published file has them. The input is RGB in [0, 1]; clip the
output to [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from kmsr_ops.validate import check_int

from .base import SRBackbone, check_scale
from .receptive_field import carn_m_rf

SCALES = (2, 3, 4)
DEFAULTS = {"filters": 64, "groups": 4, "multi_scale": False}
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class _MeanShift(nn.Module):
    """x -> W x + b with a 1x1 convolution, initialised to +/- the RGB mean."""

    def __init__(self, sign: float):
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.shifter.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.shifter.bias.copy_(sign * torch.tensor(DIV2K_RGB_MEAN))
        for p in self.shifter.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        return self.shifter(x)


class _Fuse(nn.Module):
    """1x1 conv + ReLU (CARN's BasicBlock), named ``body.0`` as published."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.body(x)


class _EResidual(nn.Module):
    def __init__(self, filters: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(filters, filters, 3, padding=1, groups=groups), nn.ReLU(inplace=True),
            nn.Conv2d(filters, filters, 3, padding=1, groups=groups), nn.ReLU(inplace=True),
            nn.Conv2d(filters, filters, 1),
        )

    def forward(self, x):
        return torch.relu(self.body(x) + x)


def _cascade(x, units, fusions):
    """CARN's cascade: concatenate every output so far, fuse with 1x1, feed the next unit."""
    cat, o = x, x
    for unit, fuse in zip(units, fusions):
        cat = torch.cat([cat, unit(o)], dim=1)
        o = fuse(cat)
    return o


class _Block(nn.Module):
    def __init__(self, filters: int, groups: int):
        super().__init__()
        self.b1 = _EResidual(filters, groups)
        self.c1 = _Fuse(2 * filters, filters)
        self.c2 = _Fuse(3 * filters, filters)
        self.c3 = _Fuse(4 * filters, filters)

    def forward(self, x):
        return _cascade(x, (self.b1, self.b1, self.b1), (self.c1, self.c2, self.c3))


class _Up(nn.Module):
    def __init__(self, filters: int, scale: int, groups: int):
        super().__init__()
        layers: list[nn.Module] = []
        for s in ([2, 2] if scale == 4 else [scale]):
            layers += [nn.Conv2d(filters, filters * s * s, 3, padding=1, groups=groups), nn.ReLU(inplace=True),
                       nn.PixelShuffle(s)]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


class _Upsample(nn.Module):
    def __init__(self, filters: int, groups: int, scales):
        super().__init__()
        for s in scales:
            self.add_module(f"up{s}", _Up(filters, s, groups))

    def forward(self, x, scale: int):
        return getattr(self, f"up{scale}")(x)


class CARNM(SRBackbone):
    input_kind = "lr"
    channels = "rgb"

    def __init__(self, scale: int = 4, *, filters: int = 64, groups: int = 4, multi_scale: bool = False):
        scale = check_scale(scale, SCALES)
        filters = check_int("filters", filters)
        groups = check_int("groups", groups)
        if filters % groups:
            from kmsr_ops.errors import KmsrInputError

            raise KmsrInputError(f"groups: {groups} does not divide filters={filters}")
        multi_scale = bool(multi_scale)
        super().__init__(scale, {"filters": filters, "groups": groups, "multi_scale": multi_scale},
                         max(carn_m_rf(s) for s in SCALES) if multi_scale else carn_m_rf(scale))
        self.sub_mean = _MeanShift(-1.0)
        self.add_mean = _MeanShift(1.0)
        self.entry = nn.Conv2d(3, filters, 3, padding=1)
        self.b1 = _Block(filters, groups)
        self.b2 = _Block(filters, groups)
        self.b3 = _Block(filters, groups)
        self.c1 = _Fuse(2 * filters, filters)
        self.c2 = _Fuse(3 * filters, filters)
        self.c3 = _Fuse(4 * filters, filters)
        self.upsample = _Upsample(filters, groups, SCALES if multi_scale else (scale,))
        self.exit = nn.Conv2d(filters, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.entry(self.sub_mean(x))
        f = _cascade(f, (self.b1, self.b2, self.b3), (self.c1, self.c2, self.c3))
        return self.add_mean(self.exit(self.upsample(f, self.scale)))
