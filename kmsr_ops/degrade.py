"""Test-set LR images from HR ones: MATLAB bicubic, Gaussian blur or any kernel, then decimation.

The LR images sit on MATLAB's ``imresize`` grid: LR pixel i stands for the HR position
``i*s + (s - 1)/2`` (the centre of the s x s block it replaces), which is where bicubic
upscaling puts it back. A blur then decimation lands there when

- odd s: an odd kernel (centred on a pixel), keeping every s-th pixel from ``(s - 1)/2``;
- even s: an even kernel (centred between pixels; ``kmsr_ops.blur`` aligns it like
  ``convolve2d(mode="same")``, half a pixel up-left), keeping every s-th pixel from ``s/2``.

Both keep every s-th pixel from ``s // 2`` (:func:`decimation_offset`); the training
degradations (``kmsr_degradations``) decimate their (B, C, H, W) tensors with the same
:func:`decimate`. Gaussians are sampled directly on a grid of the
right parity (exact). Other kernels of the wrong parity are convolved with a 2x2 box, which
centres them (the training degradations do the same) at the cost of 1/4 HR pixel² of extra
variance per axis. Kernels whose centroid is off their centre would move the whole LR image:
:func:`prepare_kernel` can first move them by whole pixels (exact values).

Images are NumPy (H, W) or (H, W, C) floats; results are float64 and neither clipped nor rounded.
"""

from __future__ import annotations

import math

import numpy as np

from .blur import blur
from .errors import KmsrInputError
from .kernels import gaussian_kernel, recenter_kernel
from .resize import imresize

__all__ = [
    "bicubic_lr",
    "decimate",
    "decimation_offset",
    "gaussian_lr",
    "gaussian_test_kernel",
    "kernel_lr",
    "match_parity",
    "needs_even_kernel",
    "prepare_kernel",
]


def _check_scale(scale) -> int:
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise KmsrInputError(f"scale: expected a positive integer, found {scale!r}")
    return int(scale)


def _as_image(hr) -> np.ndarray:
    a = np.asarray(hr)
    if a.ndim not in (2, 3) or a.dtype.kind not in "uif":
        raise KmsrInputError(f"hr: expected a numeric image (H, W) or (H, W, C), found {a.dtype} shape {a.shape}")
    return a.astype(np.float64, copy=False)


def decimation_offset(scale: int) -> int:
    """Index of the first kept HR row/column (for an odd kernel at odd scales, an even one at even scales)."""
    return _check_scale(scale) // 2


def needs_even_kernel(scale: int) -> bool:
    """Whether a blur before decimating by ``scale`` needs an even kernel (even scales) to stay on the grid."""
    return _check_scale(scale) % 2 == 0


def decimate(x, scale: int, *, channels_first: bool = False):
    """Every ``scale``-th row and column, starting at :func:`decimation_offset`: of (H, W[, C]), or,
    with ``channels_first``, of (..., H, W) (NumPy arrays and torch tensors alike)."""
    s = _check_scale(scale)
    o = s // 2
    return x[..., o::s, o::s] if channels_first else x[o::s, o::s]


def gaussian_test_kernel(sigma: float, scale: int) -> np.ndarray:
    """The isotropic Gaussian of the test sets: ``2*ceil(3 sigma) + 1`` taps, one more for even scales."""
    s = _check_scale(scale)
    size = 2 * math.ceil(3 * float(sigma)) + 1 + (s % 2 == 0)
    return gaussian_kernel(size, sigma)


def match_parity(kernel: np.ndarray, scale: int) -> np.ndarray:
    """The kernel, or the kernel convolved with a 2x2 box when its size has the wrong parity for ``scale``."""
    s = _check_scale(scale)
    k = np.asarray(kernel, dtype=np.float64)
    if (k.shape[0] % 2 == 0) == (s % 2 == 0):
        return k
    from scipy.signal import convolve2d  # noqa: PLC0415 - only needed here

    return convolve2d(k, np.full((2, 2), 0.25))


def prepare_kernel(kernel, scale: int, *, recenter: bool = True) -> np.ndarray:
    """A (K, K) kernel ready for :func:`kernel_lr`: checked, normalised to sum 1, moved by whole
    pixels so its centroid is within half a pixel of its centre (``recenter``), parity matched."""
    k = np.asarray(kernel)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.size == 0:
        raise KmsrInputError(f"kernel: expected a square (K, K) array, found shape {k.shape}")
    if k.dtype.kind not in "uif" or not np.isfinite(k).all():
        raise KmsrInputError(f"kernel: expected finite real numbers, found dtype {k.dtype}")
    k = k.astype(np.float64)
    total = float(k.sum())
    if not total > 0:
        raise KmsrInputError(f"kernel: expected a positive sum, found {total:g}")
    k = k / total
    if recenter:
        k = recenter_kernel(k, method="integer")
    return match_parity(k, scale)


def kernel_lr(hr, kernel, scale: int, *, boundary: str = "reflect") -> np.ndarray:
    """``decimate(hr * kernel)``: the kernel is used as given (see :func:`prepare_kernel`).

    :param hr: (H, W) or (H, W, C) HR image, sides multiples of ``scale`` for an exact LR size.
    :param kernel: (K, K) kernel of the parity ``scale`` needs (odd for odd scales, even for even).
    """
    s = _check_scale(scale)
    x = _as_image(hr)
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise KmsrInputError(f"kernel: expected a square (K, K) array, found shape {k.shape}")
    if (k.shape[0] % 2 == 0) != (s % 2 == 0):
        raise KmsrInputError(f"kernel: a {k.shape[0]}x{k.shape[0]} kernel is misaligned at x{s} "
                             f"(expected an {'even' if s % 2 == 0 else 'odd'} size; see match_parity)")
    if min(x.shape[:2]) < k.shape[0]:
        raise KmsrInputError(f"hr: a {x.shape[0]}x{x.shape[1]} image is smaller than the {k.shape[0]}x{k.shape[0]} kernel")
    chw = x[None, None] if x.ndim == 2 else x.transpose(2, 0, 1)[None]
    out = blur(np.ascontiguousarray(chw), k[None], boundary, check_sum=False)[0]
    out = out[0] if x.ndim == 2 else out.transpose(1, 2, 0)
    return np.ascontiguousarray(decimate(out, s))


def gaussian_lr(hr, sigma: float, scale: int, *, boundary: str = "reflect") -> np.ndarray:
    """Isotropic Gaussian blur of standard deviation ``sigma`` (HR pixels), then decimation."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise KmsrInputError(f"sigma: expected a positive number, found {sigma!r}")
    return kernel_lr(hr, gaussian_test_kernel(sigma, scale), scale, boundary=boundary)


def bicubic_lr(hr, scale: int) -> np.ndarray:
    """MATLAB ``imresize(hr, 1/scale, 'bicubic')`` (anti-aliased) in float64."""
    s = _check_scale(scale)
    return imresize(_as_image(hr), 1.0 / s)
