"""The degradation protocol: an HR batch in, a (network input, target) pair out, on its device.

A degradation is built for one backbone convention, ``factory(scale=S, input=..., channels=...,
**options)``, and called per batch::

    x, y = degradation(hr, generator)

- ``hr``: (B, 3, H, W) float32/float64 RGB in [0, 1] on the training device; H and W multiples
  of ``scale`` whenever the degradation decimates (``hr_multiple`` says which multiple).
- ``generator``: a ``torch.Generator`` (or None for torch's global one). Random draws are made
  on the generator's device and moved to ``hr``'s: a generator on the training device avoids the
  copy, a CPU generator gives the same draws on every device.
- ``x``: the network input: (B, C, H, W) for ``input="upsampled"`` (MATLAB-bicubic-upscaled back
  to HR size where the degradation went through LR), (B, C, H/s, W/s) for ``input="lr"``;
  ``y``: the target, (B, C, H, W). C is 3 for ``channels="rgb"``, 1 for ``"y"`` (BT.601
  studio-range Y in [0, 1] of both, MATLAB ``rgb2ycbcr``).

Each draw is per sample and new on every call. ``sample(shape, generator)`` draws the random
parameters and ``apply(hr, params)`` applies them deterministically; ``__call__`` does both.
"""

from __future__ import annotations

import torch

from kmsr_ops.colour import rgb2y
from kmsr_ops.errors import KmsrInputError
from kmsr_ops.resize import imresize
from kmsr_ops.validate import check_choice, check_int

INPUT_KINDS = ("upsampled", "lr")
CHANNEL_KINDS = ("rgb", "y")
BOUNDARIES = ("reflect", "replicate", "zero")


def uniform(n: int, lo: float, hi: float, generator, device) -> torch.Tensor:
    """n float64 draws from U[lo, hi), made on the generator's device, returned on ``device``."""
    gdev = generator.device if generator is not None else "cpu"
    u = torch.rand(n, generator=generator, device=gdev, dtype=torch.float64)
    return (lo + (hi - lo) * u).to(device)


def randint(n: int, high: int, generator, device, *, low: int = 0) -> torch.Tensor:
    gdev = generator.device if generator is not None else "cpu"
    return torch.randint(low, high, (n,), generator=generator, device=gdev).to(device)


class Degradation:
    """Base class: option checks, input checks and the conversion to the backbone's convention."""

    name = "degradation"
    needs_kernels = False
    decimates = True

    def __init__(self, scale: int, input: str = "upsampled", channels: str = "rgb"):  # noqa: A002 - the backbone's word
        self.scale = check_int("scale", scale, expected="a positive integer")
        self.input = check_choice("input", input, INPUT_KINDS)
        self.channels = check_choice("channels", channels, CHANNEL_KINDS)

    # ------------------------------------------------------------------ protocol
    @property
    def hr_multiple(self) -> int:
        """HR height and width must be multiples of this (the scale when the degradation decimates)."""
        return self.scale if (self.decimates or self.input == "lr") else 1

    def options(self) -> dict:
        """The degradation's own options (JSON-friendly); subclasses extend."""
        return {}

    def config(self) -> dict:
        """Everything that defines this degradation, for a checkpoint's metadata."""
        return {"degradation": self.name, "scale": self.scale, "input": self.input, "channels": self.channels,
                **self.options()}

    def sample(self, shape, generator: torch.Generator | None = None, device=None) -> dict:
        """Draw the random parameters for a batch of ``shape`` (B, 3, H, W) on ``device``."""
        raise NotImplementedError

    def apply(self, hr: torch.Tensor, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Degrade ``hr`` with drawn ``params``; returns (network input, target)."""
        raise NotImplementedError

    def __call__(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_hr(hr)
        return self.apply(hr, self.sample(tuple(hr.shape), generator, hr.device))

    # ------------------------------------------------------------------ helpers for subclasses
    def check_hr(self, hr) -> None:
        if not isinstance(hr, torch.Tensor):
            raise KmsrInputError(f"hr: expected a torch tensor (B, 3, H, W), found {type(hr).__name__}")
        if hr.ndim != 4 or hr.shape[1] != 3 or hr.shape[0] == 0:
            raise KmsrInputError(f"hr: expected an RGB batch (B, 3, H, W) with B >= 1, found shape {tuple(hr.shape)}")
        if not torch.is_floating_point(hr):
            raise KmsrInputError(f"hr: expected a floating-point tensor in [0, 1], found {hr.dtype}")
        m = self.hr_multiple
        if hr.shape[-2] % m or hr.shape[-1] % m:
            raise KmsrInputError(
                f"hr: {self.name} at x{self.scale} needs height and width multiples of {m}, found {tuple(hr.shape[-2:])}"
            )

    def finish(self, degraded: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bring a degraded RGB image (LR or HR size) and the HR target to the backbone's convention."""
        if self.input == "upsampled" and degraded.shape[-2:] != hr.shape[-2:]:
            degraded = imresize(degraded, out_shape=tuple(hr.shape[-2:]), scale=self.scale)
        if self.channels == "y":
            return rgb2y(degraded).unsqueeze(1), rgb2y(hr).unsqueeze(1)
        return degraded, hr
