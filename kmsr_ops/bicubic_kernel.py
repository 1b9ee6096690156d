"""The bicubic kernel as a blur kernel: MATLAB ``imresize`` downscaling weights in 2-D.

MATLAB's ``imresize(x, 1/s, 'bicubic')`` (antialiasing on) computes each output pixel as a
weighted sum of input pixels with the Keys cubic (a = -0.5) stretched by the scale,
``h(t) = cubic(t / s) / s``, where ``t`` is the distance in input pixels from the output
pixel's centre, which falls at input coordinate ``s * i + (s - 1) / 2`` (0-based). Away from
the image border this is a blur with the separable kernel ``outer(h, h)`` followed by
decimation, so ``outer(h, h)`` is the bicubic kernel in the same HR-pixel units as KMSR's
kernels (the paper's imaging model, Eq. 1).

:func:`bicubic_kernel` samples it on a (size, size) grid about the grid's centre
``(size - 1) / 2``: an odd size centres it on a pixel (the convention of the kernel pools,
used for plots), an even size between pixels, which is where MATLAB's decimation grid puts
the output pixels for even scales. It has small negative lobes and sums to 1.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import KmsrInputError

__all__ = ["bicubic_kernel", "bicubic_kernel_1d", "keys_cubic"]


def keys_cubic(t, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (MATLAB's ``cubic``, a = -0.5), support [-2, 2]."""
    x = np.abs(np.asarray(t, dtype=np.float64))
    near = (a + 2.0) * x**3 - (a + 3.0) * x**2 + 1.0
    far = a * x**3 - 5.0 * a * x**2 + 8.0 * a * x - 4.0 * a
    return np.where(x <= 1.0, near, np.where(x < 2.0, far, 0.0))


def _check(scale, size) -> tuple[float, int]:
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise KmsrInputError(f"scale: expected a number >= 1, found {scale!r}") from None
    if not math.isfinite(s) or s < 1:
        raise KmsrInputError(f"scale: expected a number >= 1, found {scale!r}")
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise KmsrInputError(f"size: expected a positive integer, found {size!r}")
    return s, int(size)


def bicubic_kernel_1d(scale: float, size: int) -> np.ndarray:
    """``cubic(t / scale) / scale`` at the offsets ``t = i - (size - 1) / 2``, sum 1."""
    s, n = _check(scale, size)
    if (n + 1) / 2.0 < 2.0 * s:  # the first offset left out must be past the support (2 s)
        raise KmsrInputError(f"size: {n} taps cut off the x{s:g} bicubic kernel (support {4 * s:g} px wide)")
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    h = keys_cubic(t / s) / s
    return h / h.sum()  # MATLAB normalises each output pixel's weights; exact sums differ by round-off


def bicubic_kernel(scale: float = 2, size: int = 25) -> np.ndarray:
    """The x``scale`` bicubic downscaling kernel as a (size, size) blur kernel, sum 1."""
    h = bicubic_kernel_1d(scale, size)
    return np.outer(h, h)
