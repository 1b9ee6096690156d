"""FFT deconvolution pieces: smooth periodic boundary extension, OTFs of small filters, the
periodic difference operators and the closed-form latent-image solve of the L0 solvers.

Everything here treats images as periodic (the FFT's view). A blurred photo is not periodic,
so :func:`extend_boundary` first grows it to an FFT-friendly size with a band that joins the
right edge smoothly to the left one and the bottom edge to the top one.

The array functions take NumPy or CuPy arrays (``xp`` follows the input) and work on the last
two axes, so a batch (N, H, W) is solved in one call. Real FFTs are used throughout: spectra
have shape (..., H, W // 2 + 1).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from .backend import get_array_module
from .errors import KmsrInputError


# --------------------------------------------------------------------------- FFT helpers
def fft_module(xp):
    """``scipy.fft`` for NumPy, ``cupyx.scipy.fft`` for CuPy (same call signatures)."""
    if xp is np:
        return sfft
    import cupyx.scipy.fft as cfft  # noqa: PLC0415 - GPU only

    return cfft


def fast_fft_size(n: int) -> int:
    """Smallest 5-smooth length >= n (fast for pocketfft and cuFFT alike)."""
    return int(sfft.next_fast_len(int(n), real=True))


def extended_shape(shape, kernel_size: int) -> tuple[int, int]:
    """Frame for a periodic solve: at least (H + K - 1, W + K - 1), rounded up to fast sizes."""
    h, w = shape[-2:]
    return fast_fft_size(h + kernel_size - 1), fast_fft_size(w + kernel_size - 1)


def psf2otf(kernel, shape, *, xp=None, dtype=None):
    """Real-FFT transfer function of a small filter on a periodic frame ``shape``.

    The filter is zero-padded to ``shape`` and rolled so that its centre pixel
    (``(K - 1) // 2`` along each axis) sits at (0, 0): multiplying spectra then convolves
    (true convolution, not correlation) with the filter centred. Batched: kernel (..., k1, k2).
    """
    xp = xp or get_array_module(kernel)
    k = xp.asarray(kernel, dtype=dtype) if dtype is not None else xp.asarray(kernel)
    k1, k2 = k.shape[-2:]
    H, W = shape
    if k1 > H or k2 > W:
        raise KmsrInputError(f"kernel: expected at most the frame size {shape}, found {k.shape[-2:]}")
    frame = xp.zeros(k.shape[:-2] + (H, W), dtype=k.dtype)
    frame[..., :k1, :k2] = k
    frame = xp.roll(frame, (-((k1 - 1) // 2), -((k2 - 1) // 2)), axis=(-2, -1))
    return fft_module(xp).rfft2(frame, axes=(-2, -1))


def gradient_denominator(shape, *, xp=np, dtype=np.float32):
    """|F(dx)|² + |F(dy)|² on the real-FFT grid: the spectrum of the periodic ∇ᵀ∇ (Laplacian)."""
    H, W = shape
    wy = 2.0 - 2.0 * np.cos(2.0 * np.pi * np.arange(H) / H)
    wx = 2.0 - 2.0 * np.cos(2.0 * np.pi * np.arange(W // 2 + 1) / W)
    return xp.asarray((wy[:, None] + wx[None, :]).astype(dtype))


def forward_differences(S):
    """Periodic forward differences along x (columns) and y (rows): (h, v)."""
    xp = get_array_module(S)
    h = xp.roll(S, -1, axis=-1) - S
    v = xp.roll(S, -1, axis=-2) - S
    return h, v


def divergence_adjoint(h, v):
    """∇ᵀ(h, v): the adjoint of :func:`forward_differences` (a negative divergence)."""
    xp = get_array_module(h)
    return (xp.roll(h, 1, axis=-1) - h) + (xp.roll(v, 1, axis=-2) - v)


# --------------------------------------------------------------------------- latent solve
def latent_closed_form(B, kernel, h, v, beta, u=None, beta_u=0.0):
    """Minimiser of the periodic quadratic energy

        ||k ∗ S − B||² + β ||∇S − (h, v)||² + β_u ||S − u||²

    by one FFT solve:
    ``S = F⁻¹{[conj(K)F(B) + β F(∇ᵀ(h, v)) + β_u F(u)] / [|K|² + β(|Fx|² + |Fy|²) + β_u]}``.

    All images (..., H, W) on the same periodic frame; ``kernel`` (..., K, K) centred as in
    :func:`psf2otf`. This convenience form recomputes every spectrum; the solvers keep the
    fixed ones (K, F(B), the denominators) across their continuation loops and call
    :func:`latent_solve_spectral`.
    """
    xp = get_array_module(B)
    fft = fft_module(xp)
    shape = B.shape[-2:]
    K = psf2otf(kernel, shape, xp=xp)
    num_b = xp.conj(K) * fft.rfft2(B, axes=(-2, -1))
    den_k = (K * xp.conj(K)).real
    den_g = gradient_denominator(shape, xp=xp, dtype=B.dtype)
    Fu = fft.rfft2(u, axes=(-2, -1)) if u is not None else None
    Fd = fft.rfft2(divergence_adjoint(h, v), axes=(-2, -1))
    FS = latent_solve_spectral(num_b, den_k, den_g, Fd, beta, Fu, beta_u)
    return fft.irfft2(FS, s=shape, axes=(-2, -1))


def latent_solve_spectral(num_b, den_k, den_g, Fdiv, beta, Fu=None, beta_u=0.0):
    """The closed form in the Fourier domain: ``(num_b + β Fdiv + β_u Fu) / (den_k + β den_g + β_u)``.

    ``beta``/``beta_u`` are scalars or arrays broadcasting against the spectra (per image:
    shape (N, 1, 1)). Returns the spectrum of S.
    """
    num = num_b + beta * Fdiv
    den = den_k + beta * den_g
    if Fu is not None:
        num = num + beta_u * Fu
        den = den + beta_u
    return num / den


# --------------------------------------------------------------------------- boundary
def _dst1(x, axis):
    return sfft.dst(x, type=1, axis=axis)


def _harmonic_fill(frame: np.ndarray) -> np.ndarray:
    """Fill the interior of ``frame`` (its outer ring fixed) with the discrete harmonic
    function taking those ring values: the 5-point Laplacian is zero at every interior pixel.
    Solved exactly with type-I discrete sine transforms (Dirichlet eigenbasis)."""
    H, W = frame.shape
    out = frame.copy()
    if H < 3 or W < 3:
        return out
    ring = frame.copy()
    ring[1:-1, 1:-1] = 0.0
    # Right-hand side: minus the ring's contribution to the Laplacian at interior pixels.
    rhs = -(ring[1:-1, 2:] + ring[1:-1, :-2] + ring[2:, 1:-1] + ring[:-2, 1:-1])
    n, m = H - 2, W - 2
    coef = _dst1(_dst1(rhs, 0), 1)
    ev = (2.0 * np.cos(np.pi * np.arange(1, n + 1) / (n + 1)) - 2.0)[:, None] + (
        2.0 * np.cos(np.pi * np.arange(1, m + 1) / (m + 1)) - 2.0
    )[None, :]
    # DST-I is its own inverse up to 2(n+1) per axis.
    out[1:-1, 1:-1] = _dst1(_dst1(coef / ev, 0), 1) / (4.0 * (n + 1) * (m + 1))
    return out


def extend_boundary(img, shape) -> np.ndarray:
    """Grow ``img`` (H, W) to ``shape`` (H + a, W + b) so that the result wraps smoothly.

    In the spirit of Liu & Jia (ICIP 2008), as in Cho's ``wrap_boundary_liu`` used by the
    reference code: the new band is harmonic (Laplacian zero), so it interpolates between
    opposite edges of the image as smoothly as possible.

    - The band below the image (a rows) is the harmonic interpolation between the image's
      last row (above it) and its first row (below it, across the wrap); its first and last
      columns are linear ramps between the corresponding corner values.
    - The band to the right (b columns) likewise joins the last column to the first.
    - The corner block is harmonic with the adjacent band edges as its boundary (periodically).

    The top-left (H, W) block of the result is ``img``; at every pixel of the band except the
    ramp columns/rows the periodic 5-point Laplacian of the result is zero.
    NumPy float64 (computed once per pyramid level, so it stays on the CPU).
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 2:
        raise KmsrInputError(f"img: expected a 2-D image, found shape {img.shape}")
    H, W = img.shape
    Ht, Wt = int(shape[0]), int(shape[1])
    a, b = Ht - H, Wt - W
    if a < 2 or b < 2:
        raise KmsrInputError(f"shape: expected at least 2 more rows and columns than {img.shape}, found {shape}")
    # Band below: (a + 2) x W frame, top row = last image row, bottom row = first image row.
    fa = np.zeros((a + 2, W))
    fa[0], fa[-1] = img[-1], img[0]
    t = np.linspace(0.0, 1.0, a + 2)[1:-1]
    fa[1:-1, 0] = (1 - t) * img[-1, 0] + t * img[0, 0]
    fa[1:-1, -1] = (1 - t) * img[-1, -1] + t * img[0, -1]
    band_a = _harmonic_fill(fa)[1:-1]
    # Band right: H x (b + 2).
    fb = np.zeros((H, b + 2))
    fb[:, 0], fb[:, -1] = img[:, -1], img[:, 0]
    t = np.linspace(0.0, 1.0, b + 2)[1:-1]
    fb[0, 1:-1] = (1 - t) * img[0, -1] + t * img[0, 0]
    fb[-1, 1:-1] = (1 - t) * img[-1, -1] + t * img[-1, 0]
    band_b = _harmonic_fill(fb)[:, 1:-1]
    # Corner: boundary from the bands (above: last row of band_b; below: its first row,
    # across the wrap; left: last column of band_a; right: its first column).
    fc = np.zeros((a + 2, b + 2))
    fc[0, 1:-1], fc[-1, 1:-1] = band_b[-1], band_b[0]
    fc[1:-1, 0], fc[1:-1, -1] = band_a[:, -1], band_a[:, 0]
    corner = _harmonic_fill(fc)[1:-1, 1:-1]
    return np.block([[img, band_b], [band_a, corner]])


# --------------------------------------------------------------------------- Otsu
def otsu_threshold(x: np.ndarray) -> float:
    """MATLAB ``graythresh`` of a float image in [0, 1]: Otsu's threshold on a 256-bin
    histogram (values rounded to the nearest of 0, 1/255, ..., 1; outside values clipped),
    returned as a level in [0, 1]. 0 for a constant image."""
    x = np.asarray(x, dtype=np.float64).ravel()
    bins = np.clip(np.round(x * 255.0), 0, 255).astype(np.int64)
    counts = np.bincount(bins, minlength=256).astype(np.float64)
    p = counts / counts.sum()
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(1, 257))
    mu_t = mu[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_b = (mu_t * omega - mu) ** 2 / (omega * (1.0 - omega))
    finite = np.isfinite(sigma_b)
    if not finite.any():
        return 0.0
    best = np.nanmax(np.where(finite, sigma_b, np.nan))
    idx = np.mean(np.flatnonzero(finite & (sigma_b == best))) + 1  # 1-based bin, as MATLAB
    return float((idx - 1) / 255.0)
