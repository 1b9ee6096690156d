"""Dark channel of a greyscale image, the pixel each window takes its minimum from, and the
dark-channel "write-back" step of Pan et al.'s L0 half-quadratic solver.

Definitions (as in Pan et al.'s reference code):

- ``D(I)(y, x) = min of I over the w x w window centred on (y, x)`` (w odd, r = w // 2).
- Boundary: the image is extended by **replicating its edge pixels** r pixels on every side,
  so border windows are full w x w windows of the padded image.
- Argmin: the first position in **column-major order** of the window (leftmost column
  holding the minimum, then the topmost pixel in it), MATLAB's ``min(patch(:))``.
- Positions are (row, col) image coordinates. With ``clip=False`` they are the coordinates in
  the replicate-padded frame (they may lie up to r pixels outside the image, in the padding);
  with ``clip=True`` (default) they are clipped to the image, which gives the pixel whose value
  the padding replicates. Either way the position lies inside the window.

Implementations, all giving identical values and positions:

- :func:`dark_channel` (CPU, Numba): van Herk / Gil-Werman running minimum with argmin, columns
  first then rows, O(1) comparisons per pixel whatever the window size.
- :func:`dark_channel_xp` (NumPy or CuPy, same code): separable sparse-table minimum
  (windows doubled log2(w) times), for the GPU batch path.
- :func:`dark_channel_scipy` (plain SciPy, the slow baseline): ``scipy.ndimage.minimum_filter``
  for the values and a scan of the w² window offsets for the argmin.

:func:`assign_dark_pixels` forms the auxiliary image ``u`` of the latent-image sub-problem:
``u`` is the current estimate with the dark pixels whose dark-channel value is thresholded
to zero set to 0 (see its docstring for the exact rule, which follows the reference code's
sequential loop).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .backend import get_array_module, is_cupy_array
from .dark_channel_params import ASSIGN_MODES  # noqa: F401 - one list of modes
from .errors import KmsrInputError

DEFAULT_WINDOW = 35


def _check_window(window) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise KmsrInputError(f"window: expected an odd integer >= 1, found {window!r}")
    w = int(window)
    if w < 1 or w % 2 == 0:
        raise KmsrInputError(f"window: expected an odd integer >= 1, found {w}")
    return w


def _check_image(img, name="img"):
    if img.ndim not in (2, 3):
        raise KmsrInputError(f"{name}: expected (H, W) or (N, H, W), found shape {tuple(img.shape)}")
    if img.dtype.kind != "f":
        raise KmsrInputError(f"{name}: expected a floating-point image, found dtype {img.dtype}")
    if min(img.shape[-2:]) < 1:
        raise KmsrInputError(f"{name}: expected a non-empty image, found shape {tuple(img.shape)}")


# --------------------------------------------------------------------------- Numba (CPU)
def _numba_kernels():
    """The Numba module, imported (and its kernels compiled or loaded from cache) on first use."""
    from . import dark_channel_numba  # noqa: PLC0415 - numba costs ~0.3 s to import

    return {"dark_stack": dark_channel_numba.dark_stack, "assign_stack": dark_channel_numba.assign_stack}


def _as_stack(img):
    return (img[None], True) if img.ndim == 2 else (img, False)


def _clip_positions(rows, cols, shape, xp):
    h, w = shape[-2:]
    return xp.clip(rows, 0, h - 1), xp.clip(cols, 0, w - 1)


def dark_channel(img, window: int = DEFAULT_WINDOW, *, clip: bool = True):
    """Dark channel and argmin positions of a greyscale image or a stack of them.

    :param img: float array (H, W) or (N, H, W); NumPy (Numba path) or CuPy (sparse-table path).
    :param window: odd window size w (35 in Pan et al.).
    :param clip: clip argmin positions to the image (see the module docstring).
    :returns: ``(J, rows, cols)``: J has img's shape and dtype; rows/cols are int32.
    """
    w = _check_window(window)
    if is_cupy_array(img):
        return dark_channel_xp(img, w, clip=clip)
    img = np.asarray(img)
    _check_image(img)
    stack, squeeze = _as_stack(np.ascontiguousarray(img))
    J = np.empty_like(stack)
    ar = np.empty(stack.shape, np.int32)
    ac = np.empty(stack.shape, np.int32)
    _numba_kernels()["dark_stack"](stack, w // 2, J, ar, ac)
    if clip:
        ar, ac = _clip_positions(ar, ac, stack.shape, np)
    if squeeze:
        return J[0], ar[0], ac[0]
    return J, ar, ac


def _sliding_min_xp(a, idx, w, axis, xp):
    """Minimum over windows of w along ``axis`` (length shrinks by w - 1) with the position of
    the first (lowest-index) minimum, by doubling windows (sparse table): O(log w) passes."""

    def take(x, start, length):
        sl = [slice(None)] * x.ndim
        sl[axis] = slice(start, start + length)
        return x[tuple(sl)]

    def merge(va, ia, vb, ib):
        left = va <= vb  # ties go to the earlier window
        return xp.where(left, va, vb), xp.where(left, ia, ib)

    n = a.shape[axis]
    size = 1
    while size * 2 <= w:
        length = n - size  # windows of 2*size start at 0 .. n - 2*size
        a, idx = merge(take(a, 0, length), take(idx, 0, length), take(a, size, length), take(idx, size, length))
        n = length
        size *= 2
    if size < w:
        shift = w - size
        length = n - shift
        a, idx = merge(take(a, 0, length), take(idx, 0, length), take(a, shift, length), take(idx, shift, length))
    return a, idx


def dark_channel_xp(img, window: int = DEFAULT_WINDOW, *, clip: bool = True):
    """The same result as :func:`dark_channel`, written with array operations only, so that
    NumPy and CuPy run one code (the GPU batch path; on the CPU it serves to test it)."""
    w = _check_window(window)
    xp = get_array_module(img)
    _check_image(img)
    r = w // 2
    stack = img[None] if img.ndim == 2 else img
    n, H, W = stack.shape
    padded = xp.pad(stack, ((0, 0), (r, r), (r, r)), mode="edge")
    rows = xp.broadcast_to(xp.arange(H + 2 * r, dtype=xp.int32)[None, :, None], padded.shape)
    # Columns first (topmost wins ties), then rows (leftmost wins): MATLAB's column-major first.
    v, vrow = _sliding_min_xp(padded, rows, w, 1, xp)
    cols = xp.broadcast_to(xp.arange(W + 2 * r, dtype=xp.int32)[None, None, :], v.shape)
    J, ccol = _sliding_min_xp(v, cols, w, 2, xp)
    crow = xp.take_along_axis(vrow, ccol.astype(xp.int64), axis=2)
    ar = (crow - r).astype(xp.int32)
    ac = (ccol - r).astype(xp.int32)
    if clip:
        ar, ac = _clip_positions(ar, ac, stack.shape, xp)
    J = xp.ascontiguousarray(J)
    if img.ndim == 2:
        return J[0], ar[0], ac[0]
    return J, ar, ac


def dark_channel_scipy(img: np.ndarray, window: int = DEFAULT_WINDOW, *, clip: bool = True):
    """Baseline: ``scipy.ndimage.minimum_filter`` (replicate border) for the values, then the
    argmin by scanning the w² offsets of the window in column-major order (first match wins).
    Slow (w² passes over the image); used as the straightforward reference path."""
    w = _check_window(window)
    img = np.asarray(img)
    _check_image(img)
    if img.ndim == 3:
        outs = [dark_channel_scipy(x, w, clip=clip) for x in img]
        return tuple(np.stack(z) for z in zip(*outs))
    r = w // 2
    H, W = img.shape
    J = ndimage.minimum_filter(img, size=w, mode="nearest")
    padded = np.pad(img, r, mode="edge")
    ar = np.zeros((H, W), np.int32)
    ac = np.zeros((H, W), np.int32)
    found = np.zeros((H, W), bool)
    for dc in range(w):
        for dr in range(w):
            hit = (padded[dr : dr + H, dc : dc + W] == J) & ~found
            ar[hit] = dr
            ac[hit] = dc
            found |= hit
    ar += np.arange(H, dtype=np.int32)[:, None] - r
    ac += np.arange(W, dtype=np.int32)[None, :] - r
    if clip:
        ar, ac = _clip_positions(ar, ac, img.shape, np)
    return J, ar, ac


# --------------------------------------------------------------------------- write-back
def assign_dark_pixels(S, J, rows, cols, threshold, window: int = DEFAULT_WINDOW, *, mode: str = "sequential"):
    """The auxiliary image ``u`` of the dark-channel sub-problem.

    Windows whose dark value is thresholded away (``J**2 < threshold``) get a 0 written at
    their argmin pixel; every other pixel of ``u`` is ``S``, and the border strip of width
    ``window // 2`` is always ``S`` (as the reference code restores it).

    ``mode="sequential"`` follows the reference loop exactly: centres are visited in raster
    order and a window is skipped when its current minimum is already 0 (an earlier write fell
    inside it, for ``J > 0``); writes that land in the replicated padding change nothing in
    ``u`` but still count as zeros for later windows. ``mode="all"`` writes at every argmin
    (order-free, parallel). ``rows``/``cols`` must be unclipped positions (``clip=False``).

    :param S: float (H, W) or (N, H, W) NumPy array, the current latent estimate.
    :param J, rows, cols: :func:`dark_channel` of S with ``clip=False``.
    :param threshold: scalar or (N,) array (``lambda_dark / beta_u`` in the solver).
    """
    if mode not in ASSIGN_MODES:
        raise KmsrInputError(f"mode: expected one of {', '.join(ASSIGN_MODES)}, found {mode!r}")
    w = _check_window(window)
    if is_cupy_array(S):
        from .dark_channel_cuda import assign_dark_pixels_cupy  # noqa: PLC0415 - GPU only

        return assign_dark_pixels_cupy(S, J, rows, cols, threshold, w, mode=mode)
    S = np.asarray(S)
    _check_image(S, "S")
    stack, squeeze = _as_stack(np.ascontiguousarray(S))
    n = stack.shape[0]
    Js = np.ascontiguousarray(J, dtype=stack.dtype).reshape(stack.shape)
    rs = np.ascontiguousarray(rows, dtype=np.int32).reshape(stack.shape)
    cs = np.ascontiguousarray(cols, dtype=np.int32).reshape(stack.shape)
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (n,)).copy()
    u = np.empty_like(stack)
    _numba_kernels()["assign_stack"](stack, Js, rs, cs, thr, w // 2, mode == "sequential", u)
    return u[0] if squeeze else u


def assign_dark_pixels_reference(S: np.ndarray, J: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                                 threshold: float, window: int = DEFAULT_WINDOW) -> np.ndarray:
    """The reference loop, literally and slowly (O(w²) per pixel): for tests on small images.

    Pads S by replication, visits centres in raster order, and when the minimum of the current
    padded window differs from the thresholded dark value, writes that value at the window's
    argmin; finally crops and restores the border strip."""
    w = _check_window(window)
    r = w // 2
    H, W = S.shape
    pad = np.pad(S.astype(np.float64), r, mode="edge")
    for m in range(H):
        for n in range(W):
            target = 0.0 if J[m, n] ** 2 < threshold else float(J[m, n])
            if pad[m : m + w, n : n + w].min() != target:
                pad[rows[m, n] + r, cols[m, n] + r] = target
    u = pad[r : r + H, r : r + W].copy()
    u[:r, :] = S[:r, :]
    u[H - r :, :] = S[H - r :, :]
    u[:, :r] = S[:, :r]
    u[:, W - r :] = S[:, W - r :]
    return u.astype(S.dtype)
