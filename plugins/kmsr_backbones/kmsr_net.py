"""The KMSR network (Zhou & Süsstrunk 2019): same-size RGB restoration of the bicubic-upscaled image.

Head conv 3 -> F, ``blocks`` residual blocks (conv-ReLU-conv + identity, F filters, 3x3, zero
padding), tail conv F -> 3. Two variants:

- ``"edsr"`` (default): EDSR-style blocks (no activation after the addition, optional residual
  scaling) and a global skip, ``output = input + tail(...)``. The network only has to learn the
  correction to the blurry input, which makes it train much faster, the difference that matters
  on CPU budgets (150 Adam steps of a 4-block, 32-filter model on pool-blurred 48x48 patches:
  L1 0.025 against 0.054 for ``"release"``).
- ``"release"``: the official release's blocks, with a ReLU after each addition, and no global
  skip: the network must reproduce the whole image.

Both variants have the same parameters (same state-dict keys and shapes); only the forward pass
differs, so the variant is recorded with a checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from kmsr_ops.validate import check_choice, check_float, check_int

from .base import SRBackbone, check_scale
from .receptive_field import edsr_rf, kmsr_rf

SCALES = (2, 3, 4)
VARIANTS = ("edsr", "release")
DEFAULTS = {"variant": "edsr", "blocks": 16, "filters": 64, "res_scale": 1.0}


class ResidualBlock(nn.Module):
    """conv-ReLU-conv, times ``res_scale``, plus identity; a ReLU after the sum when ``post_relu``."""

    def __init__(self, filters: int, res_scale: float = 1.0, post_relu: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(filters, filters, 3, padding=1)
        self.conv2 = nn.Conv2d(filters, filters, 3, padding=1)
        self.res_scale = res_scale
        self.post_relu = post_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv2(torch.relu(self.conv1(x)))
        if self.res_scale != 1.0:
            r = r * self.res_scale
        out = x + r
        return torch.relu(out) if self.post_relu else out


def _upsampler(scale: int, filters: int) -> nn.Sequential:
    steps = [2, 2] if scale == 4 else [scale]
    layers: list[nn.Module] = []
    for s in steps:
        layers += [nn.Conv2d(filters, filters * s * s, 3, padding=1), nn.PixelShuffle(s)]
    return nn.Sequential(*layers)


class LRResidualNet(SRBackbone):
    """EDSR's layout on the LR RGB image, shared by :class:`~kmsr_backbones.edsr.EDSR` and
    :class:`KMSRNetLR`: the input shifted by :meth:`centre`, head conv 3 -> F, ``blocks``
    residual blocks and a body conv with a skip over the body, a pixel-shuffle upsampler (one
    conv + shuffle by s for x2/x3, two x2 stages for x4), a tail conv F -> 3 at HR, the shift
    added back."""

    input_kind = "lr"
    channels = "rgb"

    def __init__(self, scale: int, *, blocks: int, filters: int, res_scale: float):
        scale = check_scale(scale, SCALES)
        blocks = check_int("blocks", blocks, 0)
        filters = check_int("filters", filters)
        res_scale = check_float("res_scale", res_scale)
        super().__init__(scale, {"blocks": blocks, "filters": filters, "res_scale": res_scale}, edsr_rf(scale, blocks))
        self.head = nn.Conv2d(3, filters, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(filters, res_scale) for _ in range(blocks)],
                                  nn.Conv2d(filters, filters, 3, padding=1))
        self.upsample = _upsampler(scale, filters)
        self.tail = nn.Conv2d(filters, 3, 3, padding=1)

    def centre(self, x: torch.Tensor):
        """What is subtracted from the input before the head and added to the output."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.centre(x)
        f = self.head(x - c)
        f = f + self.body(f)
        return self.tail(self.upsample(f)) + c


class KMSRNet(SRBackbone):
    input_kind = "upsampled"
    channels = "rgb"

    def __init__(self, scale: int | None = None, *, variant: str = "edsr", blocks: int = 16, filters: int = 64,
                 res_scale: float = 1.0):
        scale = check_scale(scale, SCALES, optional=True)
        variant = check_choice("variant", variant, VARIANTS)
        blocks = check_int("blocks", blocks, 0)
        filters = check_int("filters", filters)
        res_scale = check_float("res_scale", res_scale)
        super().__init__(scale, {"variant": variant, "blocks": blocks, "filters": filters, "res_scale": res_scale},
                         kmsr_rf(blocks))
        self.global_skip = variant == "edsr"
        self.head = nn.Conv2d(3, filters, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(filters, res_scale, post_relu=not self.global_skip)
                                    for _ in range(blocks)])
        self.tail = nn.Conv2d(filters, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tail(self.body(self.head(x)))
        return x + out if self.global_skip else out


class KMSRNetLR(LRResidualNet):
    """The KMSR body on the LR image: head conv 3 -> F, ``blocks`` EDSR-style residual blocks, a
    body conv with a skip over the body, a pixel-shuffle upsampler (one conv + shuffle for x2/x3,
    two x2 stages for x4) and a tail conv F -> 3 at HR; no bicubic pre-upsampling.

    Same residual blocks and filter count as :class:`KMSRNet` (the paper's 16 x 64 by default),
    but every block runs at LR resolution: per output pixel it costs ``1/scale**2`` of the
    pre-upsampled network (16x less at x4), which is what makes a useful size trainable on a CPU.
    The input is centred on 0.5 before the head and the output shifted back (no dataset mean).
    """

    def __init__(self, scale: int = 4, *, blocks: int = 16, filters: int = 64, res_scale: float = 1.0):
        super().__init__(scale, blocks=blocks, filters=filters, res_scale=res_scale)

    def centre(self, x: torch.Tensor) -> float:
        return 0.5
