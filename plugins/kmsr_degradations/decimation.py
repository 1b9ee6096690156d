"""Decimation aligned with MATLAB's ``imresize`` geometry.

MATLAB puts LR pixel i at HR position ``i*s + (s - 1)/2`` (the centre of the s x s block it
replaces), and bicubic upscaling assumes the same. ``kmsr_ops.blur`` aligns its output as
``scipy.signal.convolve2d(mode="same")``: with an odd kernel centred on a pixel, output pixel y
is centred on input pixel y; with an even kernel (centred between pixels), on ``y - 1/2``.

- odd s: keep every s-th pixel from ``(s - 1)/2`` after an odd kernel: no sub-pixel shift;
- even s: the wanted position ``i*s + s/2 - 1/2`` lies between pixels, so the kernel must be
  even, and the kept pixels start at ``s/2``. Gaussians are sampled directly on an even grid
  (exact); arbitrary kernels (pool) are convolved with a 2x2 box, :func:`half_pixel_kernels`,
  which centres them between pixels at the cost of a little extra blur (variance + 1/4 HR
  pixel² per axis).

Both cases keep every s-th pixel from ``s // 2``.
"""

from __future__ import annotations

import torch


def decimation_offset(scale: int) -> int:
    """Index of the first kept HR row/column (for an odd kernel at odd scales, an even one at even scales)."""
    return int(scale) // 2


def needs_even_kernel(scale: int) -> bool:
    return int(scale) % 2 == 0


def decimate(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Every ``scale``-th pixel of (..., H, W), starting at :func:`decimation_offset`."""
    o = decimation_offset(scale)
    return x[..., o::scale, o::scale]


def half_pixel_kernels(kernels: torch.Tensor) -> torch.Tensor:
    """(N, K, K) -> (N, K + 1, K + 1): each kernel convolved with a 2x2 box (sums are kept)."""
    box = torch.full((1, 1, 2, 2), 0.25, dtype=kernels.dtype, device=kernels.device)
    return torch.nn.functional.conv2d(kernels.unsqueeze(1), box, padding=1).squeeze(1)
