"""``bicubic``: MATLAB ``imresize(hr, 1/s, 'bicubic')`` (with antialiasing), the degradation
SRCNN, VDSR, EDSR and DBPN were trained with; upscaled back with MATLAB bicubic for
``input="upsampled"`` backbones. Deterministic; nothing is clipped or rounded (as the MATLAB
test data of the SR literature: LR and upscaled Y are kept in floating point).
"""

from __future__ import annotations

from kmsr_ops.resize import imresize

from .base import Degradation


class BicubicDegradation(Degradation):
    name = "bicubic"

    def sample(self, shape, generator=None, device=None) -> dict:
        return {}

    def apply(self, hr, params):
        return self.finish(imresize(hr, 1.0 / self.scale), hr)
