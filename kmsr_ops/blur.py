"""Batched per-sample blur: every image of a batch convolved with its own kernel.

``blur(images, kernels)`` takes images (B, C, H, W) and kernels (B, K, K) and returns
``images[b, c] * kernels[b]`` (true convolution, not correlation) at the input's size, with
the border handled by ``boundary``:

- ``reflect`` (default): mirror about the edge pixel, not repeating it (``d c b | a b c d``),
  NumPy's ``reflect`` and torch's ``reflect``; pads longer than the image keep reflecting.
- ``replicate``: repeat the edge pixel.
- ``zero``: zeros outside the image (what KMSR's release did; it darkens borders).

Output alignment is that of ``scipy.signal.convolve2d(x, k, mode="same")``: pixel (y, x)
sums ``k[i, j] * x[y + (K-1)//2 - i, x + (K-1)//2 - j]``, so odd kernels are centred and even
ones sit half a pixel off centre (their centre (K-1)/2 falls between pixels).

Paths, all equal to :func:`blur_reference` (SciPy) to 1e-5 in float32:

- ``fft``: padded batched real FFT through ``scipy.fft`` (all cores) or ``cupyx.scipy.fft``;
  one code path for NumPy and CuPy. Cost grows with log(size), not with K².
- ``direct``: a Numba loop over the padded image, parallel over images and rows; wins for
  small kernels (see ``benchmarks/blur.py`` for the measured crossover).
- torch tensors: CPU tensors without autograd go through the NumPy paths (zero-copy); CUDA
  tensors, or tensors that need gradients, use ``torch.fft`` on the tensor's own device.
"""

from __future__ import annotations

import os

import numpy as np

from .backend import get_array_module, is_cupy_array, is_torch_tensor, numba_cache_ok
from .errors import KmsrInputError

BOUNDARIES = ("reflect", "replicate", "zero")
METHODS = ("auto", "fft", "direct", "conv", "reference")

# Crossovers measured by `benchmarks/blur.py --crossover` on a 2-core x86 CPU (B=16, C=3,
# 64-256 px; table in benchmarks/results/blur.md): the Numba loop wins for small kernels in
# both precisions, oneDNN's grouped convolution for mid-sized float32 kernels, and the batched
# FFT from K = 15 (float32) or K = 13 (float64) on. oneDNN has no fast float64 path.
DIRECT_MAX_K = {np.dtype(np.float32): 9, np.dtype(np.float64): 11}
CONV_MAX_K = 13  # torch grouped convolution, float32

_SUM_ATOL = 1e-3


# --------------------------------------------------------------------------- validation
def _validate(images, kernels, boundary: str, check_sum: bool) -> None:
    _check_shapes(images, kernels, boundary)
    _check_dtypes(images, kernels)
    _check_values(images, kernels, check_sum)


def _check_shapes(images, kernels, boundary: str) -> None:
    if boundary not in BOUNDARIES:
        raise KmsrInputError(f"boundary: expected one of {', '.join(BOUNDARIES)}, found {boundary!r}")
    shape_i, shape_k = tuple(images.shape), tuple(kernels.shape)
    if len(shape_i) != 4:
        raise KmsrInputError(f"images: expected shape (B, C, H, W), found {len(shape_i)}-D shape {shape_i}")
    if len(shape_k) != 3 or shape_k[1] != shape_k[2]:
        raise KmsrInputError(f"kernels: expected shape (B, K, K) with square kernels, found {shape_k}")
    if shape_i[0] == 0:
        raise KmsrInputError("images: the batch is empty (B = 0)")
    if min(shape_i[1:]) == 0 or shape_k[1] == 0:
        raise KmsrInputError(f"images/kernels: every dimension must be non-empty, found images {shape_i}, kernels {shape_k}")
    if shape_k[0] != shape_i[0]:
        raise KmsrInputError(
            f"kernels: expected one kernel per image ({shape_i[0]}), found {shape_k[0]} kernels"
        )


def _check_dtypes(images, kernels) -> None:
    if is_torch_tensor(images):
        import torch

        if not torch.is_floating_point(images):
            raise KmsrInputError(f"images: expected a floating-point tensor, found {images.dtype}")
        if images.device.type == "cpu" and images.dtype not in (torch.float32, torch.float64):
            raise KmsrInputError(f"images: expected float32 or float64 on the CPU, found {images.dtype}")
        if not torch.is_floating_point(kernels):
            raise KmsrInputError(f"kernels: expected a floating-point tensor, found {kernels.dtype}")
    else:
        if images.dtype not in (np.float32, np.float64):
            raise KmsrInputError(f"images: expected a floating-point array (float32 or float64), found {images.dtype}")
        if kernels.dtype.kind != "f":
            raise KmsrInputError(f"kernels: expected a floating-point array, found {kernels.dtype}")


def _check_values(images, kernels, check_sum: bool) -> None:
    if is_torch_tensor(images):
        import torch

        bad_img = not bool(torch.isfinite(images).all())
        bad_k = not bool(torch.isfinite(kernels).all())
        sums = kernels.detach().sum(dim=(1, 2)).double().cpu().numpy() if not bad_k else None
    else:
        xp = get_array_module(images)
        bad_img = not bool(xp.isfinite(images).all())
        bad_k = not bool(xp.isfinite(kernels).all())
        sums = None if bad_k else np.asarray(_to_numpy(kernels.sum(axis=(1, 2)), xp), dtype=np.float64)
    if bad_img:
        raise KmsrInputError("images: expected finite values, found NaN or Inf")
    if bad_k:
        raise KmsrInputError("kernels: expected finite values, found NaN or Inf")
    if check_sum:
        off = np.abs(sums - 1.0)
        if off.max() > _SUM_ATOL:
            i = int(off.argmax())
            raise KmsrInputError(
                f"kernels[{i}]: expected a kernel that sums to 1 (±{_SUM_ATOL:g}), found sum {sums[i]:.6g}; "
                "normalise it (kmsr_ops.kernels.normalize_kernel) or pass check_sum=False"
            )


def _to_numpy(x, xp):
    return x.get() if xp is not np else x


# --------------------------------------------------------------------------- padding
def pad_indices(n: int, before: int, after: int, boundary: str) -> np.ndarray:
    """Source index of every padded position along one axis (-1 marks a zero for ``zero``)."""
    idx = np.arange(-before, n + after)
    if boundary == "replicate":
        return np.clip(idx, 0, n - 1)
    if boundary == "zero":
        return np.where((idx >= 0) & (idx < n), idx, -1)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


def _pad_amounts(k: int) -> tuple[int, int]:
    # Matches scipy.signal.convolve2d(mode="same"): K//2 before, (K-1)//2 after.
    return k // 2, (k - 1) // 2


def pad_images(images, k: int, boundary: str):
    """Pad (…, H, W) by the amounts a K x K ``same`` convolution needs (NumPy, CuPy or torch)."""
    h, w = images.shape[-2], images.shape[-1]
    b, a = _pad_amounts(k)
    rows = pad_indices(h, b, a, boundary)
    cols = pad_indices(w, b, a, boundary)
    if is_torch_tensor(images):
        import torch

        dev = images.device
        if boundary == "zero":
            out = torch.nn.functional.pad(images, (b, a, b, a))
            return out
        r = torch.as_tensor(rows, device=dev)
        c = torch.as_tensor(cols, device=dev)
        return images.index_select(-2, r).index_select(-1, c)
    xp = get_array_module(images)
    if boundary == "zero":
        width = [(0, 0)] * (images.ndim - 2) + [(b, a), (b, a)]
        return xp.pad(images, width, mode="constant")
    return xp.take(xp.take(images, xp.asarray(rows), axis=-2), xp.asarray(cols), axis=-1)


# --------------------------------------------------------------------------- reference
def blur_reference(images: np.ndarray, kernels: np.ndarray, boundary: str = "reflect") -> np.ndarray:
    """Plain SciPy reference: pad with NumPy, then ``convolve2d(mode='valid')`` per image, in float64."""
    from scipy.signal import convolve2d

    images = np.asarray(images)
    kernels = np.asarray(kernels)
    _validate(images, kernels, boundary, check_sum=False)
    k = kernels.shape[-1]
    b_, a_ = _pad_amounts(k)
    mode = {"reflect": "reflect", "replicate": "edge", "zero": "constant"}[boundary]
    out = np.empty(images.shape, dtype=np.float64)
    for b in range(images.shape[0]):
        for c in range(images.shape[1]):
            padded = np.pad(images[b, c].astype(np.float64), ((b_, a_), (b_, a_)), mode=mode)
            out[b, c] = convolve2d(padded, kernels[b].astype(np.float64), mode="valid")
    return out.astype(images.dtype, copy=False)


# --------------------------------------------------------------------------- FFT (NumPy / CuPy)
def _fft_module(xp):
    if xp is np:
        import scipy.fft as sfft

        return sfft, {"workers": _fft_workers()}
    import cupyx.scipy.fft as cfft

    return cfft, {}


def fft_size(n: int) -> int:
    """Smallest 2/3/5-smooth length >= n that an FFT handles quickly."""
    import scipy.fft as sfft

    return int(sfft.next_fast_len(n, real=True))


def _fft_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_pad_into_kernel = None


def _get_pad_into_kernel():
    """Numba: gather the padded image straight into the zeroed FFT buffer (one pass, no temporaries)."""
    global _pad_into_kernel
    if _pad_into_kernel is None:
        import numba

        # Serial on purpose: the copy is memory-bound, and a parallel Numba region leaves
        # OpenMP threads spinning that then slow down the FFT's own worker threads by 2x.
        @numba.njit(parallel=False, cache=numba_cache_ok(__file__))
        def _pad_into(images, rows, cols, buf):
            nb, nc = images.shape[0], images.shape[1]
            hp, wp = rows.shape[0], cols.shape[0]
            for t in range(nb * nc * hp):
                b = t // (nc * hp)
                c = (t // hp) % nc
                r = t % hp
                dst = buf[b, c, r]
                if rows[r] < 0:
                    for j in range(wp):
                        dst[j] = 0.0
                    continue
                src = images[b, c, rows[r]]
                for j in range(wp):
                    cj = cols[j]
                    dst[j] = src[cj] if cj >= 0 else 0.0

        _pad_into_kernel = _pad_into
    return _pad_into_kernel


# Images per FFT chunk on the CPU: keep each chunk's buffers around a megabyte or two, so
# they stay in cache and are recycled by the allocator instead of page-faulted in afresh;
# on a 2-core machine this is 1.7x faster than one big batched transform.
_CPU_CHUNK_BYTES = 3 << 19


def _kernel_spectrum(fft, kernels, shape, kw):
    # The kernel fills a corner of the FFT frame: transform its K rows along x first, then
    # zero-pad along y, which costs K/L of a full 2-D transform's first pass.
    spec = fft.rfft(kernels, n=shape[1], axis=-1, **kw)
    return fft.fft(spec, n=shape[0], axis=-2, **kw)


def _blur_fft_xp(images, kernels, boundary: str):
    xp = get_array_module(images)
    fft, kw = _fft_module(xp)
    bsz, nch, h, w = images.shape
    k = kernels.shape[-1]
    b_, a_ = _pad_amounts(k)
    hp, wp = h + b_ + a_, w + b_ + a_
    # Circular convolution of length >= the padded size has no wrap-around on the valid part.
    shape = (fft_size(hp), fft_size(wp))
    fk = _kernel_spectrum(fft, kernels.astype(images.dtype, copy=False), shape, kw)
    if xp is not np:
        fi = fft.rfft2(pad_images(images, k, boundary), s=shape, axes=(-2, -1), **kw)
        fi *= fk[:, None]
        full = fft.irfft2(fi, s=shape, axes=(-2, -1), **kw)
        return xp.ascontiguousarray(full[..., k - 1 : k - 1 + h, k - 1 : k - 1 + w], dtype=images.dtype)

    images = np.ascontiguousarray(images)
    rows = pad_indices(h, b_, a_, boundary)
    cols = pad_indices(w, b_, a_, boundary)
    per_sample = nch * shape[0] * shape[1] * images.dtype.itemsize
    chunk = int(max(1, min(bsz, _CPU_CHUNK_BYTES // per_sample)))
    buf = np.zeros((chunk, nch) + shape, dtype=images.dtype)
    out = np.empty(images.shape, dtype=images.dtype)
    pad_into = _get_pad_into_kernel()
    for s0 in range(0, bsz, chunk):
        s1 = min(bsz, s0 + chunk)
        part = buf[: s1 - s0]
        # Pad straight into the FFT-sized buffer (its zero margin is never written).
        pad_into(images[s0:s1], rows, cols, part)
        fi = fft.rfft2(part, axes=(-2, -1), **kw)
        fi *= fk[s0:s1, None]
        full = fft.irfft2(fi, s=shape, axes=(-2, -1), overwrite_x=True, **kw)
        out[s0:s1] = full[..., k - 1 : k - 1 + h, k - 1 : k - 1 + w]
    return out


# --------------------------------------------------------------------------- direct (Numba)
_direct_kernel = None


def _get_direct_kernel():
    global _direct_kernel
    if _direct_kernel is None:
        import numba

        @numba.njit(parallel=True, fastmath=False, cache=numba_cache_ok(__file__))
        def _direct(padded, kernels, out):
            nb, nc, h, w = out.shape
            kk = kernels.shape[-1]
            for t in numba.prange(nb * nc * h):
                b = t // (nc * h)
                c = (t // h) % nc
                y = t % h
                row = out[b, c, y]
                for x in range(w):
                    row[x] = 0.0
                for i in range(kk):
                    src = padded[b, c, y + i]
                    for j in range(kk):
                        # true convolution: flip the kernel
                        wgt = kernels[b, kk - 1 - i, kk - 1 - j]
                        for x in range(w):
                            row[x] += wgt * src[x + j]

        _direct_kernel = _direct
    return _direct_kernel


def _blur_direct_numpy(images: np.ndarray, kernels: np.ndarray, boundary: str) -> np.ndarray:
    k = kernels.shape[-1]
    padded = np.ascontiguousarray(pad_images(images, k, boundary))
    kern = np.ascontiguousarray(kernels, dtype=images.dtype)
    out = np.empty(images.shape, dtype=images.dtype)
    _get_direct_kernel()(padded, kern, out)
    return out


# --------------------------------------------------------------------------- torch
def _blur_torch_fft(images, kernels, boundary: str):
    import torch

    _, _, h, w = images.shape
    k = kernels.shape[-1]
    padded = pad_images(images, k, boundary)
    hp, wp = padded.shape[-2:]
    shape = (fft_size(hp), fft_size(wp))
    fi = torch.fft.rfft2(padded, s=shape)
    fk = torch.fft.rfft2(kernels.to(images.dtype), s=shape)
    full = torch.fft.irfft2(fi * fk[:, None], s=shape)
    return full[..., k - 1 : k - 1 + h, k - 1 : k - 1 + w].contiguous()


def _blur_torch_conv(images, kernels, boundary: str):
    """One grouped convolution over the whole batch (oneDNN on CPU, cuDNN on GPU)."""
    import torch

    b, c, h, w = images.shape
    k = kernels.shape[-1]
    padded = pad_images(images, k, boundary).reshape(1, b * c, h + k - 1, w + k - 1)
    # conv2d correlates: flip the kernels for a true convolution; one filter per (sample, channel).
    weight = kernels.to(images.dtype).flip(-1, -2).repeat_interleave(c, dim=0).unsqueeze(1)
    return torch.nn.functional.conv2d(padded, weight, groups=b * c).reshape(b, c, h, w)


# --------------------------------------------------------------------------- dispatch
def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def choose_method(kernel_size: int, dtype=np.float32, *, torch_ok: bool | None = None) -> str:
    """The CPU path ``auto`` picks for a kernel size and dtype (see the crossover note above)."""
    if torch_ok is None:
        torch_ok = _torch_available()
    dtype = np.dtype(dtype)
    if kernel_size <= DIRECT_MAX_K.get(dtype, 9):
        return "direct"
    if dtype == np.float32 and torch_ok and kernel_size <= CONV_MAX_K:
        return "conv"
    return "fft"


def blur(images, kernels, boundary: str = "reflect", *, method: str = "auto", check_sum: bool = True):
    """Convolve each image of a batch with its own kernel (see the module docstring).

    :param images: (B, C, H, W) float32/float64 NumPy array, CuPy array or torch tensor.
    :param kernels: (B, K, K) of the same kind; each should sum to 1 (``check_sum``).
    :param boundary: ``reflect`` (default), ``replicate`` or ``zero``.
    :param method: ``auto``; ``fft`` (batched FFT); ``direct`` (Numba, NumPy only); ``conv``
        (torch grouped convolution); ``reference`` (SciPy, float64, NumPy only).
    :returns: blurred images, same shape, dtype and backend as ``images``.
    """
    if method not in METHODS:
        raise KmsrInputError(f"method: expected one of {', '.join(METHODS)}, found {method!r}")
    if type(images) is not type(kernels) and not (is_torch_tensor(images) and is_torch_tensor(kernels)):
        raise KmsrInputError(
            f"kernels: expected the same array type as images ({type(images).__name__}), found {type(kernels).__name__}"
        )
    if is_torch_tensor(images):
        return _blur_tensor(images, kernels, boundary, method, check_sum)
    _validate(images, kernels, boundary, check_sum)
    if is_cupy_array(images):
        if method in ("direct", "reference", "conv"):
            raise KmsrInputError(f"method: {method!r} does not run on CuPy arrays; use fft or auto")
        return _blur_fft_xp(images, kernels, boundary)
    return _blur_array(np.asarray(images), np.asarray(kernels), boundary, method)


def _blur_tensor(images, kernels, boundary: str, method: str, check_sum: bool):
    """:func:`blur` of torch tensors: CPU tensors without autograd through the NumPy paths (zero-copy)."""
    import torch

    _check_shapes(images, kernels, boundary)
    _check_dtypes(images, kernels)
    needs_grad = torch.is_grad_enabled() and (images.requires_grad or kernels.requires_grad)
    on_numpy = images.device.type == "cpu" and kernels.device == images.device and not needs_grad
    if on_numpy and kernels.dtype in (torch.float32, torch.float64):
        # Checked in NumPy too: torch's small ops (isfinite, sum) right after a training step wait
        # on its busy thread pool (100 ms against 11 ms per batch of 16x3x64x64 on a loaded 2-core
        # machine, benchmarks/results/train_step.md). Same checks, same numbers.
        x = images.detach().contiguous().numpy()
        k = kernels.detach().contiguous().numpy()
        _check_values(x, k, check_sum)
        return torch.from_numpy(_blur_array(x, k.astype(x.dtype, copy=False), boundary, method))
    _check_values(images, kernels, check_sum)
    if kernels.device != images.device:
        raise KmsrInputError(f"kernels: expected device {images.device}, found {kernels.device}")
    if on_numpy:
        x = images.detach().contiguous().numpy()
        k = kernels.detach().to(images.dtype).contiguous().numpy()
        return torch.from_numpy(_blur_array(x, k, boundary, method))
    if method in ("direct", "reference"):
        raise KmsrInputError(f"method: {method!r} runs on NumPy arrays only; use fft, conv or auto for this tensor")
    # On the GPU, cuDNN's grouped convolution is quick for small kernels, FFT for large ones.
    if method == "conv" or (method == "auto" and kernels.shape[-1] <= CONV_MAX_K):
        return _blur_torch_conv(images, kernels, boundary)
    return _blur_torch_fft(images, kernels, boundary)


def _blur_array(images: np.ndarray, kernels: np.ndarray, boundary: str, method: str) -> np.ndarray:
    """:func:`blur` of checked NumPy arrays."""
    if method == "auto":
        method = choose_method(kernels.shape[-1], images.dtype)
    if method == "reference":
        return blur_reference(images, kernels, boundary)
    if method == "direct":
        return _blur_direct_numpy(images, kernels, boundary)
    if method == "conv":
        import torch

        with torch.no_grad():
            out = _blur_torch_conv(torch.from_numpy(np.ascontiguousarray(images)),
                                   torch.from_numpy(np.ascontiguousarray(kernels)), boundary)
        return out.numpy()
    return _blur_fft_xp(images, kernels, boundary)

__all__ = [
    "BOUNDARIES",
    "METHODS",
    "blur",
    "blur_reference",
    "choose_method",
    "fft_size",
    "pad_images",
    "pad_indices",
]
