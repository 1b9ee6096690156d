"""The KMSR kernel GAN as torch modules: a DCGAN-like generator and a WGAN critic.

Generator (KMSR paper, stage 2): ``z`` (100, standard normal) → transposed convolutions
4x4 with batch norm and ReLU to 1024@4x4, 512@8x8, 256@16x16 → a transposed convolution to
1@32x32 → an 8x8 valid convolution → 25x25 → non-negative, sum-to-one kernel (see
:func:`to_kernel`). Critic: three
4x4 stride-2 convolutions with instance norm and LeakyReLU(0.2) (256, 512, 1024 filters;
25 → 12 → 6 → 3) and a final 3x3 valid convolution to one score.

``width_mult`` scales every channel count (1.0 is the paper's network); it exists so that small
CPU models can be trained and tested, and is recorded in every checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LATENT_DIM = 100
KERNEL_SIZE = 25
#: Channels of the paper's generator after each of its first three transposed convolutions,
#: and of the critic's three strided convolutions.
GENERATOR_CHANNELS = (1024, 512, 256)
CRITIC_CHANNELS = (256, 512, 1024)
#: Ways to turn the last convolution's output into a kernel (see :func:`to_kernel`).
OUTPUTS = ("relu", "clip", "softmax")
#: Added to every entry before dividing by the sum in ``relu`` and ``clip`` modes: keeps the
#: division defined when every entry was clipped to zero (the kernel then comes out uniform).
CLIP_EPS = 1e-8


def scaled(channels: tuple[int, ...], width_mult: float) -> tuple[int, ...]:
    """Channel counts multiplied by ``width_mult``, at least 1 each."""
    return tuple(max(1, int(round(c * width_mult))) for c in channels)


def to_kernel(x: torch.Tensor, output: str) -> torch.Tensor:
    """(B, 1, K, K) raw maps → non-negative kernels that sum to 1.

    - ``relu`` (default): negative entries to zero, then divide by the sum.
    - ``clip``: what the official release does: clip to [0, 1], then divide by the sum. Maps
      whose entries all pass 1 (or all fall below 0) come out uniform with no gradient, a
      state training can drift into and not leave, hence not the default.
    - ``softmax``: exponentiate, then divide; never exactly zero, always a gradient, but
      sharp kernels need a wide range of logits, so it learns slowest.

    ``relu`` and ``clip`` add :data:`CLIP_EPS` before dividing, so an all-zero map gives the
    uniform kernel instead of 0/0.
    """
    b = x.shape[0]
    flat = x.reshape(b, -1)
    if output == "relu":
        flat = flat.clamp_min(0.0) + CLIP_EPS
    elif output == "clip":
        flat = flat.clamp(0.0, 1.0) + CLIP_EPS
    elif output == "softmax":
        return F.softmax(flat, dim=1).reshape_as(x)
    else:
        raise ValueError(f"output: expected one of {', '.join(OUTPUTS)}, found {output!r}")
    return (flat / flat.sum(dim=1, keepdim=True)).reshape_as(x)


class KernelGenerator(nn.Module):
    """z (B, 100) → kernels (B, 1, 25, 25), non-negative, each summing to 1."""

    def __init__(self, width_mult: float = 1.0, output: str = "relu", latent_dim: int = LATENT_DIM):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output: expected one of {', '.join(OUTPUTS)}, found {output!r}")
        c1, c2, c3 = scaled(GENERATOR_CHANNELS, width_mult)
        self.latent_dim = latent_dim
        self.output = output
        self.body = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, c1, 4, stride=1, padding=0, bias=False),  # 1 → 4
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c1, c2, 4, stride=2, padding=1, bias=False),  # 4 → 8
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c2, c3, 4, stride=2, padding=1, bias=False),  # 8 → 16
            nn.BatchNorm2d(c3),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c3, 1, 4, stride=2, padding=1),  # 16 → 32
            nn.Conv2d(1, 1, 8),  # 32 → 25, valid
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.body(z.reshape(z.shape[0], self.latent_dim, 1, 1))
        return to_kernel(x, self.output)


class KernelCritic(nn.Module):
    """kernels (B, 1, 25, 25) → one score per kernel (B,). No sigmoid: a WGAN critic."""

    def __init__(self, width_mult: float = 1.0):
        super().__init__()
        c1, c2, c3 = scaled(CRITIC_CHANNELS, width_mult)
        layers: list[nn.Module] = []
        cin = 1
        for c in (c1, c2, c3):  # 25 → 12 → 6 → 3
            layers += [
                nn.Conv2d(cin, c, 4, stride=2, padding=1),
                nn.InstanceNorm2d(c, affine=True),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            cin = c
        layers.append(nn.Conv2d(cin, 1, 3))  # 3 → 1, valid
        self.body = nn.Sequential(*layers)

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        return self.body(k).reshape(k.shape[0])


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: convolutions N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
