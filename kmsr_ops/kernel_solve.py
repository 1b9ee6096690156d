"""Blur-kernel update of gradient-domain blind deblurring (Cho & Lee; Pan et al.'s reference).

Given a latent estimate S and the blurred image B, the kernel solves

    min_k  Σ_{d ∈ {x, y}} ||∂d S ∗ k − ∂d B||² + γ ||k||²

with periodic convolution on the gradient images (as the FFT-based reference does), by
conjugate gradients from the uniform kernel (≤ 20 iterations, stop when the residual norm
drops below 1e-5). The normal-equation operator is a correlation with the autocorrelation of
the latent gradients: it is formed once per solve from one inverse FFT, and CG then works on
the K² unknowns alone (no FFT per CG iteration). Then :func:`clean_kernel` applies the
reference clean-up.

Gradients are those of the reference: ``conv2(X, [-1 1; 0 0], 'valid')`` and
``conv2(X, [-1 0; 1 0], 'valid')`` (see :func:`valid_gradients`). Array functions take NumPy
or CuPy arrays and work on the last two axes (batched).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from .backend import get_array_module
from .deconv import fft_module
from .errors import KmsrInputError


def valid_gradients(X):
    """The reference's 'valid' 2x2 derivatives of X (..., H, W), each (..., H-1, W-1):
    ``px[i, j] = X[i+1, j] − X[i+1, j+1]`` and ``py[i, j] = X[i, j+1] − X[i+1, j+1]``."""
    px = X[..., 1:, :-1] - X[..., 1:, 1:]
    py = X[..., :-1, 1:] - X[..., 1:, 1:]
    return px, py


def initial_gradient_threshold(px: np.ndarray, py: np.ndarray, kernel_size: int, *, step: float = 6e-5) -> float:
    """The coarsest-level gradient threshold of the reference (Cho & Lee's rule).

    Gradients are split into four orientation classes by ``atan(py/px)`` (quarters of
    [-π/2, π/2)); the threshold is the largest multiple of ``step`` (up to 2) such that every
    class keeps at least ``max(20 K, 10)`` gradients with squared magnitude in [threshold, 2].
    0 when no such value exists. NumPy, one image.
    """
    px = np.asarray(px, dtype=np.float64)
    py = np.asarray(py, dtype=np.float64)
    pm = px * px + py * py
    with np.errstate(divide="ignore", invalid="ignore"):
        pd = np.arctan(py / px)
    need = max(20 * int(kernel_size), 10)
    classes = [
        (pd >= 0) & (pd < np.pi / 4),
        (pd >= np.pi / 4) & (pd < np.pi / 2),
        (pd >= -np.pi / 4) & (pd < 0),
        (pd >= -np.pi / 2) & (pd < -np.pi / 4),
    ]
    n_steps = int(np.floor(2.0 / step + 1e-9))
    best = np.inf
    for cls in classes:
        vals = pm[cls & (pm <= n_steps * step)]
        if vals.size < need:
            return 0.0
        kth = np.partition(vals, vals.size - need)[vals.size - need]  # need-th largest
        best = min(best, kth)
    # Largest grid value not above every class's need-th largest magnitude.
    return float(np.floor(best / step + 1e-9) * step)


def select_gradients(px, py, threshold):
    """Zero the gradients whose squared magnitude is below ``threshold`` (per image).

    As in the reference, a threshold that would remove every gradient of an image is lowered
    by 0.81 until some survive. ``threshold``: scalar or (N,) for a stack. Returns
    ``(px, py, threshold_used)`` with ``threshold_used`` a NumPy float64 array (N,) (or scalar).
    """
    xp = get_array_module(px)
    pm = px * px + py * py
    scalar = np.ndim(threshold) == 0 and px.ndim == 2
    stack_pm = pm[None] if px.ndim == 2 else pm
    n = stack_pm.shape[0]
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (n,)).copy()
    peak = stack_pm.reshape(n, -1).max(axis=1)
    peak = peak.get() if hasattr(peak, "get") else np.asarray(peak)
    for i in range(n):
        if peak[i] <= 0:
            continue  # nothing to keep whatever the threshold
        while peak[i] < thr[i]:
            thr[i] *= 0.81
    t = xp.asarray(thr, dtype=pm.dtype).reshape((n,) + (1,) * (stack_pm.ndim - 1))
    keep = stack_pm >= t
    keep = keep[0] if px.ndim == 2 else keep
    px = xp.where(keep, px, 0)
    py = xp.where(keep, py, 0)
    return px, py, (float(thr[0]) if scalar else thr)


def _lag_indices(kernel_size: int, n: int):
    return np.arange(-(kernel_size - 1), kernel_size) % n


def kernel_normal_equations(Lx, Ly, Bx, By, kernel_size: int, *, FBx=None, FBy=None):
    """Autocorrelation lags and right-hand side of the kernel's normal equations.

    For periodic convolution on the gradient frame (…, h, w):
    ``(A k)[p] = Σ_q R[p − q] k[q]`` with ``R = F⁻¹(|F Lx|² + |F Ly|²)`` and
    ``b[p] = F⁻¹(conj(F Lx) F Bx + conj(F Ly) F By)[p − c]``, c the kernel centre.
    Returns ``(Rlag (…, 2K−1, 2K−1), b (…, K, K))``. ``FBx``/``FBy``: precomputed real FFTs of
    the blurred gradients (they do not change inside a pyramid level).
    """
    xp = get_array_module(Lx)
    fft = fft_module(xp)
    K = int(kernel_size)
    shape = Lx.shape[-2:]
    FLx = fft.rfft2(Lx, axes=(-2, -1))
    FLy = fft.rfft2(Ly, axes=(-2, -1))
    if FBx is None:
        FBx = fft.rfft2(Bx, axes=(-2, -1))
    if FBy is None:
        FBy = fft.rfft2(By, axes=(-2, -1))
    R = fft.irfft2((FLx * xp.conj(FLx)).real + (FLy * xp.conj(FLy)).real, s=shape, axes=(-2, -1))
    Rb = fft.irfft2(xp.conj(FLx) * FBx + xp.conj(FLy) * FBy, s=shape, axes=(-2, -1))
    ir = xp.asarray(_lag_indices(K, shape[0]))
    ic = xp.asarray(_lag_indices(K, shape[1]))
    Rlag = R[..., ir[:, None], ic[None, :]]
    c = (K - 1) // 2
    br = xp.asarray((np.arange(K) - c) % shape[0])
    bc = xp.asarray((np.arange(K) - c) % shape[1])
    b = Rb[..., br[:, None], bc[None, :]]
    return Rlag, b


def _dense_operator(Rlag, gamma: float):
    """(…, K², K²) matrix of k ↦ Σ_q R[p − q] k[q] + γ k, gathered from the lags (for tests)."""
    xp = get_array_module(Rlag)
    K = (Rlag.shape[-1] + 1) // 2
    p = np.arange(K * K)
    pr, pc = p // K, p % K
    LR = xp.asarray(pr[:, None] - pr[None, :] + K - 1)
    LC = xp.asarray(pc[:, None] - pc[None, :] + K - 1)
    A = Rlag[..., LR, LC]
    return A + gamma * xp.eye(K * K, dtype=A.dtype)


class _LagOperator:
    """k ↦ Σ_q R[p − q] k[q] + γ k through FFTs of side ≥ 2K − 1: only the K x K outputs of the
    linear convolution of the (2K−1)² lags with k are needed, and they do not alias there."""

    def __init__(self, Rlag, gamma: float):
        xp = get_array_module(Rlag)
        self.xp, self.fft = xp, fft_module(xp)
        self.K = (Rlag.shape[-1] + 1) // 2
        self.L = int(sfft.next_fast_len(2 * self.K - 1, real=True))
        self.FR = self.fft.rfft2(Rlag, s=(self.L, self.L), axes=(-2, -1))
        self.gamma = float(gamma)

    def __call__(self, x):
        K = self.K
        c = self.fft.irfft2(self.fft.rfft2(x, s=(self.L, self.L), axes=(-2, -1)) * self.FR,
                            s=(self.L, self.L), axes=(-2, -1))
        return c[..., K - 1 : 2 * K - 1, K - 1 : 2 * K - 1] + self.gamma * x


def conjugate_gradient_kernel(Rlag, b, gamma: float = 2.0, *, iterations: int = 20, tol: float = 1e-5, x0=None):
    """Conjugate gradients on ``(A + γI) k = b`` (per image of a batch), float64.

    Starts from the uniform kernel (or ``x0``); stops an image when ``||r|| < tol`` (after its
    update, as the reference does) or after ``iterations``. Returns (…, K, K).
    """
    xp = get_array_module(b)
    b = b.astype(xp.float64)
    K = b.shape[-1]
    batch = b.shape[:-2]
    n = int(np.prod(batch)) if batch else 1
    op = _LagOperator(Rlag.astype(xp.float64).reshape((n,) + Rlag.shape[-2:]), gamma)
    bb = b.reshape(n, K, K)
    x = xp.full((n, K, K), 1.0 / (K * K)) if x0 is None else xp.asarray(x0, dtype=xp.float64).reshape(n, K, K).copy()

    def dot(a, c):
        return (a * c).sum(axis=(1, 2))

    r = bb - op(x)
    p = r.copy()
    rs_old = dot(r, r)
    active = xp.ones(n, dtype=bool)
    for _ in range(int(iterations)):
        Ap = op(p)
        pAp = dot(p, Ap)
        ok = active & (pAp > 0)
        alpha = xp.where(ok, rs_old / xp.where(ok, pAp, 1.0), 0.0)[:, None, None]
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = dot(r, r)
        active = ok & (xp.sqrt(rs_new) >= tol)
        if not bool(active.any()):
            break
        beta = xp.where(active, rs_new / xp.where(rs_old > 0, rs_old, 1.0), 0.0)[:, None, None]
        p = xp.where(active[:, None, None], r + beta * p, p)
        rs_old = xp.where(active, rs_new, rs_old)
    return x.reshape(batch + (K, K))


def clean_kernel(k: np.ndarray, *, rel_threshold: float = 0.05, min_component_mass: float = 0.1) -> np.ndarray:
    """The reference clean-up of a fresh kernel estimate (NumPy, one kernel or a stack).

    1. zero entries below ``rel_threshold`` × max (negative ones included), renormalise;
    2. drop 8-connected components of the support whose mass is below ``min_component_mass``;
    3. clamp negatives, renormalise to sum 1.

    Where step 2 would remove everything (the reference then divides by zero), the heaviest
    component is kept. A kernel without a positive entry becomes the centred delta.
    """
    k = np.asarray(k, dtype=np.float64)
    if k.ndim == 3:
        return np.stack([clean_kernel(x, rel_threshold=rel_threshold, min_component_mass=min_component_mass) for x in k])
    if k.ndim != 2:
        raise KmsrInputError(f"kernel: expected (K, K) or (N, K, K), found shape {k.shape}")
    k = np.where(np.isfinite(k), k, 0.0)
    peak = k.max()
    if peak <= 0:
        out = np.zeros_like(k)
        out[k.shape[0] // 2, k.shape[1] // 2] = 1.0
        return out
    k = np.where(k < rel_threshold * peak, 0.0, k)
    k = k / k.sum()
    labels, count = ndimage.label(k != 0, structure=np.ones((3, 3), dtype=bool))
    if count:
        mass = ndimage.sum(k, labels, index=np.arange(1, count + 1))
        drop = mass < min_component_mass
        if drop.all():
            drop[np.argmax(mass)] = False
        k = np.where(np.isin(labels, np.flatnonzero(drop) + 1), 0.0, k)
    k = np.maximum(k, 0.0)
    return k / k.sum()
