"""VDSR (Kim et al., CVPR 2016) on the Y channel of the bicubic-upscaled image.

``layers`` 3x3 convolutions (20 in the paper), ``filters`` channels, no biases, zero padding,
ReLU after all but the last, and a global residual: ``output = input + net(input)``. One model
serves x2, x3 and x4. He initialisation, as in the paper. Input: Y (BT.601 studio range) in
[0, 1]; see :func:`kmsr_backbones.published.load_vdsr_weights` for the published weights.
"""

from __future__ import annotations

import torch
from torch import nn

from kmsr_ops.validate import check_int

from .base import SRBackbone, check_scale
from .receptive_field import vdsr_rf

SCALES = (2, 3, 4)
DEFAULTS = {"layers": 20, "filters": 64}


class VDSR(SRBackbone):
    input_kind = "upsampled"
    channels = "y"

    def __init__(self, scale: int | None = None, *, layers: int = 20, filters: int = 64):
        scale = check_scale(scale, SCALES, optional=True)
        layers = check_int("layers", layers, 2)
        filters = check_int("filters", filters)
        super().__init__(scale, {"layers": layers, "filters": filters}, vdsr_rf(layers))
        self.head = nn.Conv2d(1, filters, 3, padding=1, bias=False)
        self.body = nn.ModuleList(nn.Conv2d(filters, filters, 3, padding=1, bias=False) for _ in range(layers - 2))
        self.tail = nn.Conv2d(filters, 1, 3, padding=1, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(self.head(x))
        for conv in self.body:
            r = torch.relu(conv(r))
        return x + self.tail(r)
