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

from .kmsr_net import SCALES, LRResidualNet  # noqa: F401 - SCALES: this module's, the same

DEFAULTS = {"blocks": 16, "filters": 64, "res_scale": 1.0}
# DIV2K RGB mean in [0, 1], the constant of the EDSR release.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class EDSR(LRResidualNet):
    def __init__(self, scale: int = 4, *, blocks: int = 16, filters: int = 64, res_scale: float = 1.0):
        super().__init__(scale, blocks=blocks, filters=filters, res_scale=res_scale)
        self.register_buffer("rgb_mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        return self.rgb_mean.to(x.dtype)
