"""Blind blur-kernel estimation with the dark-channel prior (Pan, Sun, Pfister & Yang, CVPR 2016),
following what the authors' reference MATLAB code (as shipped with KMSR) does.

Objective: ``min_{I,k} ||I ∗ k − B||² + γ||k||² + λ_dark ||D(I)||₀ + λ_grad ||∇I||₀`` with
``k ≥ 0, Σk = 1`` and D the dark channel (minimum over a w x w window).

Outline (``estimate_kernels``), coarse to fine over a pyramid of ratio √½:

- Levels: ``floor(log(5/K)/log(√½)) + 1``; kernel size ``ceil(K ratioˢ)`` made odd (25, 19, 13,
  9, 7 for K = 25). The level image is Gaussian-prefiltered ('valid' convolution, σ = 1/(2·ratioˢ)
  px, taps trimmed to 90 % of the mass) and bilinearly resampled. The coarsest kernel is a
  horizontal 2-tap seed just above-left of the centre; between levels the kernel is resized
  with MATLAB bicubic, clamped at 0, trimmed/padded (on the lighter side) and renormalised.
- Gradient threshold τ: from the blurred coarsest image (:func:`kernel_solve.initial_gradient_threshold`);
  every level starts from it and divides it by 1.1 after each iteration.
- Per level, ``iterations`` (5) alternations of
  1. latent image on the blurred image extended to a fast FFT size (:func:`deconv.extend_boundary`),
     restarted from that image, by half-quadratic splitting:
     outer loop β_u = λ_dark / Otsu(B²), ×2 while < 8: dark channel of S with argmins,
     zero the windows with J² < λ_dark/β_u, write the zeros back (u); inner loop β = 2λ_grad,
     ×2 while < 1e5: forward differences of S zeroed where h² + v² < λ_grad/β, then the closed
     FFT solve (:func:`deconv.latent_solve_spectral`);
  2. gradient selection on the cropped S with τ, then τ ← τ / 1.1;
  3. kernel by conjugate gradients on the gradients (γ = 2, 20 iterations, tol 1e-5) and the
     clean-up (5 % threshold, 8-connected components lighter than 0.1 dropped, renormalised);
  4. λ_dark, λ_grad ← max(λ/1.1, 1e-4).
- After each level the kernel is re-centred on its centroid (whole pixels); at the end entries
  below max/20 are zeroed and the kernel renormalised. Output: convolution orientation,
  ``blurred = convolve2d(sharp, k)``.

Backends (same schedule, same results up to float precision):

- ``numba`` (CPU default): float32, fused Numba passes, real FFTs via ``scipy.fft``, van Herk dark
  channel, every spectrum that is constant inside a loop computed once.
- ``reference``: the straightforward NumPy/SciPy version (float64, complex ``numpy.fft``,
  ``scipy.ndimage.minimum_filter`` plus an argmin scan), the speed baseline.
- ``xp``: array expressions only, on NumPy or CuPy (``device="cuda"``): the batched GPU path.
"""

from __future__ import annotations

import math

import numpy as np

from . import dark_channel as dc
from . import deconv
from . import kernel_solve as ks
from .backend import get_array_module, get_cupy
from .dark_channel_params import SCHEDULES, DarkChannelParams, make_params  # noqa: F401 - re-exported
from .errors import KmsrInputError
from .kernels import recenter_kernel
from .resize import imresize

BACKENDS = ("numba", "reference", "xp")


# --------------------------------------------------------------------------- pyramid helpers
def pyramid_kernel_sizes(kernel_size: int, ratio: float = math.sqrt(0.5), coarsest: int = 5) -> list[int]:
    """Odd kernel sizes from the finest level to the coarsest (25 → [25, 19, 13, 9, 7])."""
    top = max(int(math.floor(math.log(coarsest / kernel_size) / math.log(ratio) + 1e-9)), 0)
    sizes = [int(math.ceil(kernel_size * ratio**s - 1e-9)) for s in range(top + 1)]
    return [s + (s % 2 == 0) for s in sizes]


def downsample_level(img: np.ndarray, ratio: float) -> np.ndarray:
    """One pyramid image: Gaussian prefilter ('valid'), then bilinear samples every 1/ratio px."""
    if ratio == 1:
        return np.asarray(img, dtype=np.float64)
    taps = np.arange(-50, 51)
    sf = np.exp(-2.0 * ratio**2 * taps**2)  # σ = 1/(2 ratio) px
    sf /= sf.sum()
    csf = np.cumsum(sf)
    sf = sf[np.minimum(csf, csf[::-1]) > 0.05]
    x = np.asarray(img, dtype=np.float64)
    from scipy.ndimage import correlate1d  # noqa: PLC0415

    n = sf.size
    x = correlate1d(x, sf, axis=0, mode="constant")[n // 2 : x.shape[0] - (n - 1 - n // 2)]
    x = correlate1d(x, sf, axis=1, mode="constant")[:, n // 2 : x.shape[1] - (n - 1 - n // 2)]
    step = 1.0 / ratio

    def grid(length):
        return np.arange(int(math.floor((length - 1) * ratio + 1e-9)) + 1) * step

    rows, cols = grid(x.shape[0]), grid(x.shape[1])
    src_r, src_c = np.arange(x.shape[0]), np.arange(x.shape[1])
    x = np.stack([np.interp(cols, src_c, row) for row in x])
    x = np.stack([np.interp(rows, src_r, col) for col in x.T]).T
    return x


def initial_kernel(size: int) -> np.ndarray:
    """The reference's coarsest seed: two taps of 1/2 on the row above the centre, starting
    one column left of it."""
    k = np.zeros((size, size))
    c = (size - 1) // 2
    k[c - 1, c - 1 : c + 1] = 0.5
    return k


def _fix_size(k: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad a kernel to n x n one row/column at a time, on its lighter side."""
    while k.shape != (n, n):
        if k.shape[0] > n:
            s = k.sum(axis=1)
            k = k[1:] if s[0] < s[-1] else k[:-1]
        elif k.shape[0] < n:
            s = k.sum(axis=1)
            z = np.zeros((1, k.shape[1]))
            k = np.vstack([k, z]) if s[0] < s[-1] else np.vstack([z, k])
        if k.shape[1] > n:
            s = k.sum(axis=0)
            k = k[:, 1:] if s[0] < s[-1] else k[:, :-1]
        elif k.shape[1] < n:
            s = k.sum(axis=0)
            z = np.zeros((k.shape[0], 1))
            k = np.hstack([k, z]) if s[0] < s[-1] else np.hstack([z, k])
    return k


def upsample_kernel(k: np.ndarray, ratio: float, size: int) -> np.ndarray:
    """Next finer level's kernel: MATLAB-bicubic resize by 1/ratio, clamp, fit to size, sum 1."""
    up = np.maximum(imresize(np.asarray(k, dtype=np.float64), 1.0 / ratio), 0.0)
    up = _fix_size(up, size)
    s = up.sum()
    return up / s if s > 0 else up


# --------------------------------------------------------------------------- compute backends
def _fused_kernels():
    """Numba passes of the inner loop (thresholded gradients → ∇ᵀ, spectral solve), loaded on first use."""
    from . import latent_numba  # noqa: PLC0415 - numba costs ~0.3 s to import

    return {"grad_div": latent_numba.grad_div, "combine": latent_numba.combine}


def thresholded_divergence(S, threshold):
    """Reference of the inner loop's first step: ∇ᵀ(h, v) with (h, v) the periodic forward
    differences of S zeroed where ``h² + v² < threshold`` (scalar, or (N,) for a stack)."""
    xp = get_array_module(S)
    h, v = deconv.forward_differences(S)
    t = xp.asarray(threshold, dtype=S.dtype)
    if t.ndim == 1:
        t = t.reshape((-1,) + (1,) * (S.ndim - 1))
    keep = (h * h + v * v >= t).astype(S.dtype)
    return deconv.divergence_adjoint(h * keep, v * keep)


def thresholded_divergence_fast(S: np.ndarray, threshold) -> np.ndarray:
    """Numba version of :func:`thresholded_divergence` for NumPy stacks (N, H, W)."""
    stack = S if S.ndim == 3 else S[None]
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (stack.shape[0],)).copy()
    out = np.empty_like(stack)
    _fused_kernels()["grad_div"](np.ascontiguousarray(stack), thr, out)
    return out if S.ndim == 3 else out[0]


class _Ops:
    """What the latent-image loops need from a compute backend (this one: array code, NumPy or CuPy)."""

    def __init__(self, xp, dtype, assign_mode: str):
        self.xp = xp
        self.dtype = np.dtype(dtype)
        self.assign_mode = assign_mode
        self.fft = deconv.fft_module(xp)

    def asarray(self, x):
        return self.xp.asarray(x, dtype=self.dtype)

    def to_host(self, x) -> np.ndarray:
        return x.get() if hasattr(x, "get") else np.asarray(x)

    def fft2(self, x):
        return self.fft.rfft2(x, axes=(-2, -1))

    def ifft2(self, X, shape):
        return self.fft.irfft2(X, s=shape, axes=(-2, -1))

    def grad_div(self, S, thr):
        return thresholded_divergence(S, np.asarray(thr, dtype=np.float64))

    def combine(self, num, Fd, den, den_g, beta):
        """(num + β Fd) / (den + β den_g): the closed form with the parts fixed in the inner loop
        (num = conj(K)F(B) + β_u F(u), den = |K|² + β_u) summed beforehand."""
        return deconv.latent_solve_spectral(num, den, den_g, Fd, beta)

    def dark_u(self, S, thr, window):
        J, ar, ac = dc.dark_channel_xp(S, window, clip=False)
        return dc.assign_dark_pixels(S, J, ar, ac, thr, window, mode=self.assign_mode)


class _NumbaOps(_Ops):
    def __init__(self, assign_mode: str, threads: int = 1):
        super().__init__(np, np.float32, assign_mode)
        self.threads = int(threads)
        self.kern = _fused_kernels()

    def fft2(self, x):
        return self.fft.rfft2(x, axes=(-2, -1), workers=self.threads)

    def ifft2(self, X, shape):
        return self.fft.irfft2(X, s=shape, axes=(-2, -1), workers=self.threads, overwrite_x=True)

    def grad_div(self, S, thr):
        out = np.empty_like(S)
        self.kern["grad_div"](S, np.asarray(thr, dtype=np.float64), out)
        return out

    def combine(self, num, Fd, den, den_g, beta):
        self.kern["combine"](num.view(np.float32), Fd.view(np.float32), den, den_g, float(beta))
        return Fd

    def dark_u(self, S, thr, window):
        J, ar, ac = dc.dark_channel(S, window, clip=False)
        return dc.assign_dark_pixels(S, J, ar, ac, thr, window, mode=self.assign_mode)


class _ReferenceOps(_Ops):
    """Straightforward float64 NumPy/SciPy: complex FFTs, minimum filter plus argmin scan."""

    def __init__(self, assign_mode: str):
        super().__init__(np, np.float64, assign_mode)

    def fft2(self, x):
        return np.fft.fft2(x)

    def ifft2(self, X, shape):
        return np.real(np.fft.ifft2(X))

    def grad_div(self, S, thr):
        return thresholded_divergence(S, np.asarray(thr, dtype=np.float64))

    def dark_u(self, S, thr, window):
        J, ar, ac = dc.dark_channel_scipy(S, window, clip=False)
        return dc.assign_dark_pixels(S, J, ar, ac, thr, window, mode=self.assign_mode)


def make_ops(backend: str, device: str = "cpu", *, assign_mode: str = "sequential", threads: int = 1) -> _Ops:
    if backend not in BACKENDS:
        raise KmsrInputError(f"backend: expected one of {', '.join(BACKENDS)}, found {backend!r}")
    if device.startswith("cuda"):
        if backend != "xp":
            raise KmsrInputError(f"backend {backend!r} runs on the CPU only; the GPU uses backend 'xp'")
        cp = get_cupy()
        if ":" in device:
            cp.cuda.Device(int(device.split(":", 1)[1])).use()
        return _Ops(cp, np.float32, assign_mode)
    if backend == "numba":
        return _NumbaOps(assign_mode, threads)
    if backend == "reference":
        return _ReferenceOps(assign_mode)
    return _Ops(np, np.float32, assign_mode)


# --------------------------------------------------------------------------- the solver
def _kernel_frames(k: np.ndarray, shape) -> np.ndarray:
    """(N, K, K) kernels zero-padded to the frame and rolled so their centre is at (0, 0)."""
    n, k1, k2 = k.shape
    frame = np.zeros((n,) + tuple(shape))
    frame[:, :k1, :k2] = k
    return np.roll(frame, (-((k1 - 1) // 2), -((k2 - 1) // 2)), axis=(1, 2))


def _gradient_den(ops: _Ops, shape):
    fx = np.zeros(shape)
    fx[0, 0], fx[0, -1] = -1.0, 1.0  # S[j+1] - S[j] as a convolution centred at 0
    fy = np.zeros(shape)
    fy[0, 0], fy[-1, 0] = -1.0, 1.0
    Fx, Fy = ops.fft2(ops.asarray(fx)), ops.fft2(ops.asarray(fy))
    return (Fx * Fx.conj()).real + (Fy * Fy.conj()).real


def latent_update(ops: _Ops, Bw, k: np.ndarray, lam_dark: float, lam_grad: float, p: DarkChannelParams,
                  *, otsu: np.ndarray, S0=None):
    """Pan et al.'s L0 dark-channel latent image on the extended blurred images ``Bw`` (N, H, W)
    (device arrays in the backend's dtype) with kernels ``k`` (N, K, K). Returns S (N, H, W)."""
    xp = ops.xp
    shape = tuple(Bw.shape[-2:])
    KER = ops.fft2(ops.asarray(_kernel_frames(k, shape)))
    den_k = (KER * KER.conj()).real.astype(ops.dtype)
    num_b = (KER.conj() * ops.fft2(Bw)).astype(KER.dtype)
    den_g = _gradient_den(ops, shape).astype(ops.dtype)
    S = Bw.copy() if S0 is None else S0.copy()
    n = Bw.shape[0]
    if lam_dark > 0:
        with np.errstate(divide="ignore"):
            bu = np.where(otsu > 0, lam_dark / np.maximum(otsu, 1e-300), np.inf)
    else:
        bu = np.zeros(n)
    while True:
        active = bu < p.beta_dark_max if lam_dark > 0 else np.ones(n, bool)
        if not active.any():
            break
        if lam_dark > 0:
            thr_dark = np.where(active, lam_dark / np.where(bu > 0, bu, 1.0), 0.0)
            Fu = ops.fft2(ops.dark_u(S, thr_dark, p.window))
            b_u = ops.asarray(np.where(active, bu, 0.0)).reshape(-1, 1, 1)
            num = (num_b + b_u * Fu).astype(num_b.dtype)  # fixed for the whole inner loop
            den = (den_k + b_u).astype(ops.dtype)
        else:
            num, den = num_b, den_k
        beta = 2.0 * lam_grad
        act = None if active.all() else xp.asarray(active).reshape(-1, 1, 1)
        while True:
            div = ops.grad_div(S, np.full(n, lam_grad / beta) if lam_grad > 0 else np.zeros(n))
            FS = ops.combine(num, ops.fft2(div), den, den_g, beta)
            S_new = ops.ifft2(FS, shape).astype(ops.dtype, copy=False)
            S = S_new if act is None else xp.where(act, S_new, S)
            beta *= p.kappa
            if lam_grad == 0 or beta >= p.beta_max:
                break
        if lam_dark <= 0:
            break
        bu = bu * p.kappa_dark
    return S


def _level(ops: _Ops, ys: np.ndarray, k: np.ndarray, lam_dark: float, lam_grad: float, tau0: np.ndarray,
           p: DarkChannelParams):
    """One pyramid level (the reference's blind_deconv_main) for a stack ys (N, H, W)."""
    xp = ops.xp
    n, H, W = ys.shape
    K = k.shape[-1]
    shape = deconv.extended_shape((H, W), K)
    Bw_host = np.stack([deconv.extend_boundary(y, shape) for y in ys])
    otsu = np.array([deconv.otsu_threshold(b * b) for b in Bw_host])
    Bw = ops.asarray(Bw_host)
    Bx, By = ks.valid_gradients(ops.asarray(ys))
    fft = deconv.fft_module(xp)
    FBx, FBy = fft.rfft2(Bx, axes=(-2, -1)), fft.rfft2(By, axes=(-2, -1))
    tau = tau0.copy()
    S = None
    for _ in range(p.iterations):
        S = latent_update(ops, Bw, k, lam_dark, lam_grad, p, otsu=otsu, S0=S if p.warm_start else None)
        px, py = ks.valid_gradients(S[:, :H, :W])
        px, py, tau = ks.select_gradients(px, py, tau)
        tau = tau / p.threshold_decay
        Rlag, b = ks.kernel_normal_equations(px, py, Bx, By, K, FBx=FBx, FBy=FBy)
        k_new = ks.conjugate_gradient_kernel(Rlag, b, p.gamma, iterations=p.cg_iterations, tol=p.cg_tol)
        k = ks.clean_kernel(ops.to_host(k_new), rel_threshold=p.kernel_threshold,
                            min_component_mass=p.component_mass)
        if lam_dark != 0:
            lam_dark = max(lam_dark / p.lambda_decay, p.lambda_min)
        if lam_grad != 0:
            lam_grad = max(lam_grad / p.lambda_decay, p.lambda_min)
    return k, lam_dark, lam_grad


def _check_patches(patches, kernel_size: int) -> np.ndarray:
    x = np.asarray(patches)
    if x.ndim != 3:
        raise KmsrInputError(f"patches: expected (N, H, W) greyscale, found shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise KmsrInputError(f"patches: expected a numeric array, found dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise KmsrInputError("patches: expected finite values, found NaN or Inf")
    need = 2 * kernel_size + 1
    if min(x.shape[1:]) < need:
        raise KmsrInputError(
            f"patches: expected at least {need}x{need} pixels for a {kernel_size}x{kernel_size} kernel, "
            f"found {x.shape[1]}x{x.shape[2]}"
        )
    return x


def estimate_kernels(patches, params: DarkChannelParams | None = None, *, backend: str = "numba",
                     device: str = "cpu", threads: int = 1) -> np.ndarray:
    """Blur kernels (N, K, K) of greyscale patches (N, H, W) in [0, 1], all of one size.

    The patches of a stack are solved together (one batch on the GPU); kernels are float64,
    non-negative, sum to 1, odd-sized, in convolution orientation.
    """
    p = (params or DarkChannelParams()).validate()
    y = _check_patches(patches, p.kernel_size)
    if p.gamma_correct != 1:
        y = np.clip(y, 0, None) ** p.gamma_correct
    ops = make_ops(backend, device, assign_mode=p.dark_assign, threads=threads)
    n = y.shape[0]
    sizes = pyramid_kernel_sizes(p.kernel_size, p.pyramid_ratio, p.coarsest_kernel)
    lam_dark, lam_grad = float(p.lambda_dark), float(p.lambda_grad)
    k = None
    tau0 = None
    for s in range(len(sizes) - 1, -1, -1):
        ratio = p.pyramid_ratio**s
        ys = np.stack([downsample_level(img, ratio) for img in y])
        if k is None:
            k = np.repeat(initial_kernel(sizes[s])[None], n, axis=0)
            tau0 = np.array([ks.initial_gradient_threshold(*ks.valid_gradients(img), sizes[s]) for img in ys])
        else:
            k = np.stack([upsample_kernel(x, p.pyramid_ratio, sizes[s]) for x in k])
        k, lam_dark, lam_grad = _level(ops, ys, k, lam_dark, lam_grad, tau0, p)
        k = np.stack([recenter_kernel(np.maximum(x, 0.0) / x.sum(), method="integer") for x in k])
        k = np.maximum(k, 0.0)
        k /= k.sum(axis=(1, 2), keepdims=True)
    out = np.where(k < p.final_threshold * k.max(axis=(1, 2), keepdims=True), 0.0, k)
    return out / out.sum(axis=(1, 2), keepdims=True)


def estimate_kernel(patch, params: DarkChannelParams | None = None, **kw) -> np.ndarray:
    """One patch (H, W) → kernel (K, K); see :func:`estimate_kernels`."""
    x = np.asarray(patch)
    if x.ndim != 2:
        raise KmsrInputError(f"patch: expected a greyscale (H, W) array, found shape {x.shape}")
    return estimate_kernels(x[None], params, **kw)[0]
