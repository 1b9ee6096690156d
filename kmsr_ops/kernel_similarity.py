"""How alike two blur kernels are, up to a shift and a 180-degree rotation.

Blind deblurring recovers a kernel only up to a translation (the latent image shifts the
other way), and some methods return the kernel in correlation rather than convolution
orientation. The similarity is therefore the largest normalised cross-correlation

    max over integer shifts t and R in {identity, rot180} of  <a, shift_t(R b)> / (|a| |b|),

with zeros outside each kernel. 1.0 means identical up to shift; kernels of different sizes
are compared as they are.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

from .errors import KmsrInputError


def _check(k, name: str) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2 or k.size == 0:
        raise KmsrInputError(f"{name}: expected a 2-D kernel, found shape {k.shape}")
    if not np.isfinite(k).all():
        raise KmsrInputError(f"{name}: expected finite values, found NaN or Inf")
    if not np.any(k):
        raise KmsrInputError(f"{name}: the kernel is all zeros")
    return k


def kernel_similarity(a, b) -> float:
    """Maximum normalised cross-correlation of ``a`` and ``b`` over shifts and a 180° rotation."""
    a = _check(a, "a")
    b = _check(b, "b")
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    # Cross-correlation of a with b is convolution of a with b rotated by 180 degrees; the
    # rotated variant of b correlates as plain convolution.
    corr = fftconvolve(a, b[::-1, ::-1], mode="full")
    conv = fftconvolve(a, b, mode="full")
    return float(max(corr.max(), conv.max()) / norm)


def kernel_similarity_reference(a, b) -> float:
    """Brute force over every shift, for tests: no FFT."""
    a = _check(a, "a")
    b = _check(b, "b")
    best = -np.inf
    ha, wa = a.shape
    for bb in (b, b[::-1, ::-1]):
        hb, wb = bb.shape
        for dy in range(-hb + 1, ha):
            for dx in range(-wb + 1, wa):
                y0, y1 = max(0, dy), min(ha, dy + hb)
                x0, x1 = max(0, dx), min(wa, dx + wb)
                s = float(np.sum(a[y0:y1, x0:x1] * bb[y0 - dy : y1 - dy, x0 - dx : x1 - dx]))
                best = max(best, s)
    return best / (np.linalg.norm(a) * np.linalg.norm(b))
