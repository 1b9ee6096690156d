"""SRCNN (Dong et al., ECCV 2014 / TPAMI 2016) on the Y channel of the bicubic-upscaled image.

conv 9x9 1 -> 64, ReLU, conv k x k 64 -> 32, ReLU, conv 5x5 32 -> 1, with k = 5 (``"955"``, the
configuration KMSR compares against) or k = 1 (``"915"``, the configuration of the published
weights; see :func:`kmsr_backbones.published.load_srcnn_weights`). Filters are correlations
(PyTorch's convention) and the border is padded by replicating the edge pixel, so the output has
the input's size; ``padding="zero"`` is offered for training from scratch.

Input: Y of BT.601 studio range (MATLAB ``rgb2ycbcr``) in [0, 1], i.e. in [16/255, 235/255].
"""

from __future__ import annotations

import torch
from torch import nn

from kmsr_ops.validate import check_choice

from .base import SRBackbone, check_scale
from .receptive_field import srcnn_rf

SCALES = (2, 3, 4)
VARIANTS = {"955": 5, "915": 1}
PADDINGS = {"replicate": "replicate", "zero": "zeros"}
DEFAULTS = {"variant": "955", "padding": "replicate"}


class SRCNN(SRBackbone):
    input_kind = "upsampled"
    channels = "y"

    def __init__(self, scale: int | None = None, *, variant: str = "955", padding: str = "replicate"):
        scale = check_scale(scale, SCALES, optional=True)
        variant = check_choice("variant", variant, tuple(VARIANTS))
        padding = check_choice("padding", padding, tuple(PADDINGS))
        k2 = VARIANTS[variant]
        super().__init__(scale, {"variant": variant, "padding": padding}, srcnn_rf(k2))
        mode = PADDINGS[padding]
        self.conv1 = nn.Conv2d(1, 64, 9, padding=4, padding_mode=mode)
        self.conv2 = nn.Conv2d(64, 32, k2, padding=k2 // 2, padding_mode=mode)
        self.conv3 = nn.Conv2d(32, 1, 5, padding=2, padding_mode=mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
