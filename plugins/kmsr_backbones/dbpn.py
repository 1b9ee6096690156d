"""D-DBPN (Haris, Shakhnarovich & Ukita, CVPR 2018): dense deep back-projection on the LR RGB image.

Feature extraction (3x3 conv to ``feat`` channels, 1x1 conv to ``filters``, PReLU after each),
then ``stages`` up-projection units and ``stages - 1`` down-projection units alternating, and a
3x3 reconstruction conv over the concatenation of every up-projection's HR output.

Up-projection (LR L -> HR H): ``H0 = up(L)``, ``L0 = down(H0)``, ``H1 = up(L0 - L)``,
``H = H0 + H1``. Down-projection (HR H -> LR L): ``L0 = down(H)``, ``H0 = up(L0)``,
``L1 = down(H0 - H)``, ``L = L0 + L1``. ``up`` is a transposed convolution and ``down`` a strided
convolution (kernel 6/8/12, stride = scale, padding 2, for x2/x4/x8), each followed by PReLU.
Dense connections: each up-projection after the first reads the concatenation of all earlier
down-projection outputs, each down-projection the concatenation of all earlier up-projection
outputs, squeezed back to ``filters`` channels by a 1x1 conv (+ PReLU).

Variants: ``"d-dbpn"`` (the paper's: 7 stages, 64 filters, 256 features) and ``"small"`` (3
stages, 32 filters, 64 features) for CPU budgets; ``stages``, ``filters`` and ``feat`` override
the variant's values.
"""

from __future__ import annotations

import torch
from torch import nn

from kmsr_ops.validate import check_choice, check_int

from .base import SRBackbone, check_scale
from .receptive_field import dbpn_rf

SCALES = (2, 4, 8)
# scale -> (kernel, stride, padding) of the projection convolutions, as in the paper.
PROJECTION = {2: (6, 2, 2), 4: (8, 4, 2), 8: (12, 8, 2)}
VARIANTS = {
    "d-dbpn": {"stages": 7, "filters": 64, "feat": 256},
    "small": {"stages": 3, "filters": 32, "feat": 64},
}
DEFAULTS = {"variant": "d-dbpn", "stages": None, "filters": None, "feat": None}


def _act(channels: int) -> nn.PReLU:
    return nn.PReLU(channels, init=0.25)


class _Up(nn.Sequential):
    """Transposed conv LR -> HR, PReLU."""

    def __init__(self, filters: int, k: int, s: int, p: int):
        super().__init__(nn.ConvTranspose2d(filters, filters, k, s, p), _act(filters))


class _Down(nn.Sequential):
    """Strided conv HR -> LR, PReLU."""

    def __init__(self, filters: int, k: int, s: int, p: int):
        super().__init__(nn.Conv2d(filters, filters, k, s, p), _act(filters))


class _Squeeze(nn.Sequential):
    def __init__(self, inputs: int, filters: int):
        super().__init__(nn.Conv2d(inputs * filters, filters, 1), _act(filters))


class UpProjection(nn.Module):
    def __init__(self, filters: int, k: int, s: int, p: int, inputs: int = 1):
        super().__init__()
        self.squeeze = _Squeeze(inputs, filters) if inputs > 1 else nn.Identity()
        self.up0 = _Up(filters, k, s, p)
        self.down0 = _Down(filters, k, s, p)
        self.up1 = _Up(filters, k, s, p)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        low = self.squeeze(low)
        h0 = self.up0(low)
        return h0 + self.up1(self.down0(h0) - low)


class DownProjection(nn.Module):
    def __init__(self, filters: int, k: int, s: int, p: int, inputs: int = 1):
        super().__init__()
        self.squeeze = _Squeeze(inputs, filters) if inputs > 1 else nn.Identity()
        self.down0 = _Down(filters, k, s, p)
        self.up0 = _Up(filters, k, s, p)
        self.down1 = _Down(filters, k, s, p)

    def forward(self, high: torch.Tensor) -> torch.Tensor:
        high = self.squeeze(high)
        l0 = self.down0(high)
        return l0 + self.down1(self.up0(l0) - high)


class DBPN(SRBackbone):
    input_kind = "lr"
    channels = "rgb"

    def __init__(self, scale: int = 4, *, variant: str = "d-dbpn", stages: int | None = None,
                 filters: int | None = None, feat: int | None = None):
        scale = check_scale(scale, SCALES)
        variant = check_choice("variant", variant, tuple(VARIANTS))
        base = VARIANTS[variant]
        stages = check_int("stages", base["stages"] if stages is None else stages)
        filters = check_int("filters", base["filters"] if filters is None else filters)
        feat = check_int("feat", base["feat"] if feat is None else feat)
        k, s, p = PROJECTION[scale]
        super().__init__(scale, {"variant": variant, "stages": stages, "filters": filters, "feat": feat},
                         dbpn_rf(scale, stages, k, s, p))
        self.features = nn.Sequential(nn.Conv2d(3, feat, 3, padding=1), _act(feat),
                                      nn.Conv2d(feat, filters, 1), _act(filters))
        # up[t] reads max(t, 1) LR maps; down[t] reads t + 1 HR maps.
        self.up = nn.ModuleList(UpProjection(filters, k, s, p, max(t, 1)) for t in range(stages))
        self.down = nn.ModuleList(DownProjection(filters, k, s, p, t + 1) for t in range(stages - 1))
        self.reconstruct = nn.Conv2d(stages * filters, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lows: list[torch.Tensor] = []
        highs: list[torch.Tensor] = []
        for t, up in enumerate(self.up):
            highs.append(up(torch.cat(lows, 1) if lows else self.features(x)))
            if t < len(self.down):
                lows.append(self.down[t](torch.cat(highs, 1)))
        return self.reconstruct(torch.cat(highs, 1))
