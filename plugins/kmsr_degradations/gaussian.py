"""``gaussian``: random isotropic or anisotropic Gaussian blur, then decimation.

Per sample: with probability ``iso_prob`` an isotropic Gaussian with sigma ~ U[sigma_min,
sigma_max], otherwise an anisotropic one with both sigmas ~ U[sigma_min, sigma_max] and angle
~ U[0, pi) (HR pixels; the conventions of :mod:`kmsr_ops.kernels`). The kernels are built as one
batched tensor on the device, blurred with ``kmsr_ops.blur`` and decimated with MATLAB's
geometry (odd kernel for odd scales, even kernel, i.e. centred half a pixel over, for even
scales: see :mod:`kmsr_ops.degrade`). ``input="upsampled"`` backbones get the LR
image upscaled back with MATLAB bicubic.

``sigma_min == sigma_max`` with ``iso_prob=1`` gives the fixed-sigma test sets of KMSR's Table 1
(σ = 1.25, 1.6, 1.7).
"""

from __future__ import annotations

import math

import torch

from kmsr_ops.blur import blur
from kmsr_ops.degrade import decimate, needs_even_kernel
from kmsr_ops.validate import check_choice, check_int, check_probability, check_range

from .base import BOUNDARIES, Degradation, uniform


def gaussian_kernels(size: int, sigma_x: torch.Tensor, sigma_y: torch.Tensor, theta: torch.Tensor,
                     dtype=torch.float64) -> torch.Tensor:
    """(B, size, size) Gaussians, one per entry of the (B,) parameter tensors, on their device.

    Same definition as :func:`kmsr_ops.kernels.anisotropic_gaussian_kernel`: covariance
    ``R diag(sigma_x², sigma_y²) Rᵀ`` in (column, row) offsets from the centre ``(size - 1)/2``,
    R rotating by ``theta``; normalised to sum 1. Even sizes are centred between pixels.
    """
    dev = sigma_x.device
    sx, sy, th = (t.to(torch.float64).reshape(-1, 1, 1) for t in (sigma_x, sigma_y, theta))
    d = torch.arange(size, dtype=torch.float64, device=dev) - (size - 1) / 2.0
    dx, dy = d.view(1, 1, -1), d.view(1, -1, 1)
    c, s = torch.cos(th), torch.sin(th)
    # Rotate the offsets into the kernel's own axes: u along sigma_x, v along sigma_y.
    u = c * dx + s * dy
    v = -s * dx + c * dy
    q = (u / sx) ** 2 + (v / sy) ** 2
    k = torch.exp(-0.5 * (q - q.amin(dim=(1, 2), keepdim=True)))
    return (k / k.sum(dim=(1, 2), keepdim=True)).to(dtype)


class GaussianDegradation(Degradation):
    name = "gaussian"

    def __init__(self, scale: int, input: str = "upsampled", channels: str = "rgb", *,  # noqa: A002
                 sigma_min: float = 0.2, sigma_max: float = 2.0, iso_prob: float = 0.5,
                 kernel_size: int | None = None, boundary: str = "reflect"):
        super().__init__(scale, input, channels)
        self.sigma_min, self.sigma_max = check_range("sigma_min/sigma_max", sigma_min, sigma_max, strict_low=True)
        self.iso_prob = check_probability("iso_prob", iso_prob)
        self.boundary = check_choice("boundary", boundary, BOUNDARIES)
        if kernel_size is None:
            kernel_size = 2 * math.ceil(3 * self.sigma_max) + 1
        kernel_size = check_int("kernel_size", kernel_size, odd=True)
        self.kernel_size = kernel_size
        # Even scales need the kernel centred between pixels (see kmsr_ops.degrade).
        self.blur_size = kernel_size + 1 if needs_even_kernel(self.scale) else kernel_size

    def options(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "iso_prob": self.iso_prob,
                "kernel_size": self.kernel_size, "boundary": self.boundary}

    def sample(self, shape, generator=None, device=None) -> dict:
        b = shape[0]
        device = device or "cpu"
        sx = uniform(b, self.sigma_min, self.sigma_max, generator, device)
        sy = uniform(b, self.sigma_min, self.sigma_max, generator, device)
        theta = uniform(b, 0.0, math.pi, generator, device)
        iso = uniform(b, 0.0, 1.0, generator, device) < self.iso_prob
        return {"sigma_x": sx, "sigma_y": torch.where(iso, sx, sy), "theta": torch.where(iso, torch.zeros_like(theta), theta)}

    def kernels(self, params: dict, dtype=torch.float64) -> torch.Tensor:
        return gaussian_kernels(self.blur_size, params["sigma_x"], params["sigma_y"], params["theta"], dtype)

    def apply(self, hr, params):
        ks = self.kernels({k: v.to(hr.device) for k, v in params.items()}, hr.dtype)
        return self.finish(decimate(blur(hr, ks, self.boundary), self.scale, channels_first=True), hr)
