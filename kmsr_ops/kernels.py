"""Blur kernels: construction, hygiene, moments and validation (NumPy reference code).

Conventions used throughout this module
---------------------------------------
* A kernel is a 2-D array indexed ``k[row, col]``. Rows run along the image y axis
  (pointing down), columns along the x axis (pointing right).
* The centre of a kernel of shape (H, W) is the point ``((H - 1) / 2, (W - 1) / 2)`` in
  pixel-index coordinates: odd sizes are centred on a pixel, even sizes between four.
* Centroids are ``(row, col)`` pairs and covariances are 2x2 matrices in the same
  ``(row, col)`` order: ``[[var_row, cov], [cov, var_col]]``.
* Orientation angles ``theta`` are in radians and rotate the x axis (columns) towards the
  y axis (rows). Because rows point down, a positive angle looks clockwise on screen.
* Constructors compute in float64 and cast to ``dtype`` at the very end; the hygiene
  functions return float64 for integer input and keep the dtype of floating input.
* Bad arguments raise :class:`kmsr_ops.errors.KmsrInputError` (a ``ValueError``) with a
  message that names the argument, says what was expected and what was found.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from kmsr_ops.errors import KmsrInputError

__all__ = [
    "anisotropic_gaussian_kernel",
    "gaussian_kernel",
    "kernel_centroid",
    "kernel_covariance",
    "kernel_moments",
    "motion_kernel",
    "normalize_kernel",
    "pad_or_crop_kernel",
    "recenter_kernel",
    "threshold_kernel",
    "validate_kernel",
    "validate_kernels",
]

#: Entries at or above ``-NEG_TOL`` count as non-negative in :func:`validate_kernel`: they
#: are round-off left by FFT convolution or spline interpolation, not real negative mass.
NEG_TOL = 1e-7


# --------------------------------------------------------------------------- helpers


def _check_size(size: Any, name: str = "size", minimum: int = 1) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise KmsrInputError(f"{name}: expected an integer, found {size!r}")
    size = int(size)
    if size < minimum:
        raise KmsrInputError(f"{name}: expected an integer >= {minimum}, found {size}")
    return size


def _check_real(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise KmsrInputError(f"{name}: expected a {'positive' if positive else 'real'} number, found {value!r}")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        raise KmsrInputError(f"{name}: expected a {'positive ' if positive else ''}finite number, found {value}")
    return value


def _check_positive(value: Any, name: str) -> float:
    return _check_real(value, name, positive=True)


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise KmsrInputError(f"dtype: expected a floating dtype, found {dtype!r}") from exc
    if dt.kind != "f":
        raise KmsrInputError(f"dtype: expected a floating dtype, found {dt}")
    return dt


def _as_array(k: Any, name: str) -> np.ndarray:
    """``np.asarray`` that reports ragged or non-numeric input as a KmsrInputError."""
    try:
        arr = np.asarray(k)
    except (TypeError, ValueError) as exc:
        raise KmsrInputError(
            f"{name}: expected an array of numbers, found {type(k).__name__} ({exc})"
        ) from exc
    if arr.dtype.kind not in "fiu":
        raise KmsrInputError(f"{name}: expected a real numeric array, found dtype {arr.dtype}")
    return arr


def _float_2d(k: Any, name: str) -> tuple[np.ndarray, np.dtype]:
    """Return ``(k as float64 2-D array, dtype to hand back)``."""
    arr = _as_array(k, name)
    if arr.ndim != 2:
        raise KmsrInputError(
            f"{name}: expected a 2-D array, found {arr.ndim}-D array of shape {arr.shape}"
        )
    if arr.size == 0:
        raise KmsrInputError(f"{name}: expected a non-empty kernel, found shape {arr.shape}")
    out_dtype = arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)
    return arr.astype(np.float64, copy=False), out_dtype


def _positive_sum(k: np.ndarray, name: str, what: str) -> float:
    s = float(k.sum())
    if not math.isfinite(s) or s <= 0:
        raise KmsrInputError(f"{name}: expected a positive finite sum to {what}, found {s:g}")
    return s


def _offsets(size: int) -> np.ndarray:
    """Integer offsets of the grid points from the centre (size - 1) / 2."""
    return np.arange(size, dtype=np.float64) - (size - 1) / 2.0


def _fmt_tol(x: float) -> str:
    return np.format_float_scientific(x, trim="-", exp_digits=1)


# --------------------------------------------------------------------------- constructors


def gaussian_kernel(size: int, sigma: float, *, dtype: Any = np.float64) -> np.ndarray:
    """Isotropic Gaussian ``exp(-r^2 / (2 sigma^2))`` sampled at the integer offsets from
    the centre ``(size - 1) / 2`` and normalised to sum 1. Shape ``(size, size)``."""
    size = _check_size(size)
    sigma = _check_positive(sigma, "sigma")
    dt = _check_dtype(dtype)
    d = _offsets(size)
    # Subtracting the smallest exponent keeps a tiny sigma from underflowing to all zeros.
    e = d**2 / (2.0 * sigma**2)
    g = np.exp(-(e - e.min()))
    k = np.outer(g, g)
    return (k / k.sum()).astype(dt)


def anisotropic_gaussian_kernel(
    size: int,
    sigma_x: float,
    sigma_y: float,
    theta: float,
    *,
    dtype: Any = np.float64,
) -> np.ndarray:
    """Anisotropic Gaussian with covariance ``R diag(sigma_x^2, sigma_y^2) R^T``.

    The covariance is expressed in (x, y) = (column offset, row offset) coordinates and
    ``R = [[cos theta, -sin theta], [sin theta, cos theta]]``: ``theta`` (radians) rotates
    the x axis towards the y axis (rows). With ``theta = 0`` the column variance is
    ``sigma_x^2`` and the row variance ``sigma_y^2``; ``theta = pi/2`` swaps them.
    Sampled at integer offsets from the centre ``(size - 1) / 2`` and normalised to sum 1.
    """
    size = _check_size(size)
    sx = _check_positive(sigma_x, "sigma_x")
    sy = _check_positive(sigma_y, "sigma_y")
    theta = _check_real(theta, "theta")
    dt = _check_dtype(dtype)
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    precision = rot @ np.diag([1.0 / sx**2, 1.0 / sy**2]) @ rot.T  # inverse covariance
    d = _offsets(size)
    dx = d[None, :]  # columns
    dy = d[:, None]  # rows
    q = precision[0, 0] * dx**2 + 2.0 * precision[0, 1] * dx * dy + precision[1, 1] * dy**2
    k = np.exp(-0.5 * (q - q.min()))
    return (k / k.sum()).astype(dt)


def _trajectory(
    n_steps: int, rng: np.random.Generator, jitter: float, centripetal: float, jerk_prob: float
) -> np.ndarray:
    """Vertices of a random camera path with unit total arc length, as complex x + iy.

    The velocity keeps unit speed; each step it is nudged by Gaussian noise (``jitter``),
    pulled back towards the start (``centripetal``) and, with probability ``jerk_prob``,
    kicked hard in a random direction. Its momentum makes the path smooth.
    """
    dt = 1.0 / (n_steps - 1)
    noise = rng.standard_normal((n_steps - 1, 2))
    jerks = rng.random(n_steps - 1) < jerk_prob
    jerk_dir = np.exp(2j * np.pi * rng.random(n_steps - 1))
    v = np.exp(2j * np.pi * rng.random())
    x = 0j
    pts = np.empty(n_steps, dtype=np.complex128)
    pts[0] = x
    for t in range(n_steps - 1):
        dv = jitter * complex(noise[t, 0], noise[t, 1]) - centripetal * x
        if jerks[t]:
            dv += 2.0 * jerk_dir[t]
        w = v + dv
        mag = abs(w)
        if mag > 1e-12:
            v = w / mag
        x = x + v * dt
        pts[t + 1] = x
    return pts


def _smoothing_radius(smooth_sigma: float) -> int:
    """Half-width of :func:`motion_kernel`'s smoothing taps: ``ceil(2 * sigma)``, 0 when off."""
    return math.ceil(2.0 * smooth_sigma) if smooth_sigma > 0 else 0


def _check_motion_args(size, n_steps, jitter, centripetal, jerk_prob, smooth_sigma, sample_spacing, dtype):
    """The checked arguments of :func:`motion_kernel`, in its order, and the output dtype."""
    smooth_sigma = _check_real(smooth_sigma, "smooth_sigma")
    jitter = _check_real(jitter, "jitter")
    centripetal = _check_real(centripetal, "centripetal")
    jerk_prob = _check_real(jerk_prob, "jerk_prob")
    for label, value in (("smooth_sigma", smooth_sigma), ("jitter", jitter),
                         ("centripetal", centripetal)):
        if value < 0:
            raise KmsrInputError(f"{label}: expected a number >= 0, found {value}")
    margin = 1 + _smoothing_radius(smooth_sigma)  # splatted points stay this far from the edge
    size = _check_size(size, minimum=2 * margin + 2)
    n_steps = _check_size(n_steps, "n_steps", minimum=2)
    if not (0.0 <= jerk_prob <= 1.0):
        raise KmsrInputError(f"jerk_prob: expected a probability in [0, 1], found {jerk_prob}")
    sample_spacing = _check_positive(sample_spacing, "sample_spacing")
    dt = _check_dtype(dtype)
    return size, n_steps, jitter, centripetal, jerk_prob, smooth_sigma, sample_spacing, dt


def _motion_path(n_steps: int, rng: np.random.Generator, jitter: float, centripetal: float,
                 jerk_prob: float, length: float, sample_spacing: float, half: float) -> np.ndarray:
    """Points of a random path of arc length ``length``, every ``sample_spacing`` pixels,
    centred on their mean and shrunk so that none lies further than ``half`` along an axis."""
    verts = _trajectory(n_steps, rng, jitter, centripetal, jerk_prob) * length
    # All segments have equal length, so uniform arc-length samples are uniform in index.
    n_samples = max(2, math.ceil(length / sample_spacing) + 1)
    idx = np.linspace(0.0, n_steps - 1, n_samples)
    base = np.arange(n_steps)
    pts = np.interp(idx, base, verts.real) + 1j * np.interp(idx, base, verts.imag)
    pts = pts - pts.mean()
    reach = max(np.abs(pts.real).max(), np.abs(pts.imag).max())
    if reach > half:
        pts = pts * (half / reach * (1.0 - 1e-9))
    return pts


def _splat_bilinear(pts: np.ndarray, size: int, centre: float) -> np.ndarray:
    """Equal weights (summing to 1) at the points ``x + iy`` about ``centre``, splatted bilinearly."""
    rows = centre + pts.imag
    cols = centre + pts.real
    r0 = np.floor(rows).astype(np.intp)
    c0 = np.floor(cols).astype(np.intp)
    fr = rows - r0
    fc = cols - c0
    k = np.zeros((size, size))
    w = 1.0 / len(pts)
    np.add.at(k, (r0, c0), w * (1 - fr) * (1 - fc))
    np.add.at(k, (r0 + 1, c0), w * fr * (1 - fc))
    np.add.at(k, (r0, c0 + 1), w * (1 - fr) * fc)
    np.add.at(k, (r0 + 1, c0 + 1), w * fr * fc)
    return k


def _smooth_separable(k: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """A separable Gaussian of ``sigma`` with taps out to ``radius``, zero outside the grid."""
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(taps**2) / (2.0 * sigma**2))
    g /= g.sum()
    k = ndimage.correlate1d(k, g, axis=0, mode="constant", cval=0.0)
    return ndimage.correlate1d(k, g, axis=1, mode="constant", cval=0.0)


def motion_kernel(
    size: int,
    *,
    rng: np.random.Generator,
    length: float | None = None,
    n_steps: int = 64,
    jitter: float = 0.12,
    centripetal: float = 0.25,
    jerk_prob: float = 0.02,
    smooth_sigma: float = 0.5,
    sample_spacing: float = 0.1,
    dtype: Any = np.float64,
) -> np.ndarray:
    """A random camera-shake kernel of shape ``(size, size)``.

    A smooth random path of ``n_steps`` vertices (see :func:`_trajectory`) is scaled to arc
    length ``length`` pixels, resampled every ``sample_spacing`` pixels with equal weights
    (constant camera speed) and splatted bilinearly onto the grid. The path is centred on
    its own mean, so the kernel's centroid lies at the centre ``(size - 1) / 2`` (bilinear
    splatting and the symmetric smoothing both keep the first moment). If the path would
    reach into the outer margin it is shrunk uniformly about its centroid; the outer
    border row/column always stays exactly zero. ``smooth_sigma > 0`` then applies a small
    separable Gaussian (truncated at ``ceil(2 * smooth_sigma)`` px); ``0`` disables it.

    ``length`` defaults to a draw from ``rng``, uniform in [0.5, 1] times the usable span.
    The result is a deterministic function of ``rng``'s state and the other arguments.
    """
    if not isinstance(rng, np.random.Generator):
        raise KmsrInputError(
            f"rng: expected a numpy.random.Generator, found {type(rng).__name__}"
        )
    size, n_steps, jitter, centripetal, jerk_prob, smooth_sigma, sample_spacing, dt = _check_motion_args(
        size, n_steps, jitter, centripetal, jerk_prob, smooth_sigma, sample_spacing, dtype
    )
    radius = _smoothing_radius(smooth_sigma)
    centre = (size - 1) / 2.0
    half = centre - (1 + radius)  # largest allowed distance from the centroid along each axis
    if length is None:
        length = float(rng.uniform(0.5, 1.0)) * 2.0 * half
    length = _check_positive(length, "length")

    pts = _motion_path(n_steps, rng, jitter, centripetal, jerk_prob, length, sample_spacing, half)
    k = _splat_bilinear(pts, size, centre)
    if radius:
        k = _smooth_separable(k, smooth_sigma, radius)
    k = np.clip(k, 0.0, None)
    return (k / k.sum()).astype(dt)


# --------------------------------------------------------------------------- hygiene


def normalize_kernel(k: Any, *, name: str = "kernel") -> np.ndarray:
    """Divide a kernel, or each kernel of a ``(..., H, W)`` stack, by its sum.

    Raises KmsrInputError if a sum is not finite or not positive."""
    arr = _as_array(k, name)
    if arr.ndim < 2 or arr.size == 0:
        raise KmsrInputError(
            f"{name}: expected a non-empty array of shape (..., H, W), found shape {arr.shape}"
        )
    out_dtype = arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)
    a = arr.astype(np.float64, copy=False)
    s = a.sum(axis=(-2, -1), keepdims=True)
    bad = ~np.isfinite(s) | (s <= 0)
    if bad.any():
        flat_bad = bad.reshape(-1)
        j = int(np.argmax(flat_bad))
        where = np.unravel_index(j, arr.shape[:-2]) if arr.ndim > 2 else ()
        label = name + "".join(f"[{int(i)}]" for i in where)
        value = float(s.reshape(-1)[j])
        raise KmsrInputError(
            f"{label}: expected a positive finite sum to normalise, found {value:g}"
        )
    return (a / s).astype(out_dtype)


def _shift_integer(k: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """Shift by whole pixels, filling with zeros (no wrap-around)."""
    out = np.zeros_like(k)
    h, w = k.shape
    if abs(dr) >= h or abs(dc) >= w:
        return out
    src_r = slice(max(0, -dr), h - max(0, dr))
    dst_r = slice(max(0, dr), h - max(0, -dr))
    src_c = slice(max(0, -dc), w - max(0, dc))
    dst_c = slice(max(0, dc), w - max(0, -dc))
    out[dst_r, dst_c] = k[src_r, src_c]
    return out


def recenter_kernel(
    k: Any, *, method: Literal["linear", "cubic", "integer"] = "linear"
) -> np.ndarray:
    """Shift a kernel so that its centroid lies at the centre ``((H-1)/2, (W-1)/2)``.

    ``method``:

    * ``"linear"`` (default): sub-pixel shift with ``scipy.ndimage.shift(order=1)`` and
      zero padding. Linear interpolation keeps entries non-negative and moves the centroid
      by exactly the requested shift, so one pass puts it on the centre (unless mass falls
      off the frame). It slightly blurs the kernel for fractional shifts.
    * ``"cubic"``: cubic spline shift (sharper); negative ringing is clamped to zero, so the
      centroid is only approximately centred.
    * ``"integer"``: whole-pixel shift with zero fill; exact values, centroid within 0.5 px.

    Mass shifted out of the frame is lost and the result is rescaled so that its sum equals
    the input's sum.
    """
    arr, out_dtype = _float_2d(k, "kernel")
    total = _positive_sum(arr, "kernel", "recentre")
    cy, cx = kernel_centroid(arr)
    h, w = arr.shape
    shift = ((h - 1) / 2.0 - cy, (w - 1) / 2.0 - cx)
    if method == "integer":
        out = _shift_integer(arr, int(round(shift[0])), int(round(shift[1])))
    elif method in ("linear", "cubic"):
        order = 1 if method == "linear" else 3
        # 'grid-constant' pads with zeros and still interpolates against the padding.
        out = ndimage.shift(arr, shift, order=order, mode="grid-constant", cval=0.0)
        if method == "cubic":
            out = np.clip(out, 0.0, None)
    else:
        raise KmsrInputError(
            f"method: expected 'linear', 'cubic' or 'integer', found {method!r}"
        )
    s = float(out.sum())
    if not math.isfinite(s) or s <= 0:
        raise KmsrInputError("kernel: recentring pushed all of its mass out of the frame")
    return (out * (total / s)).astype(out_dtype)


def threshold_kernel(k: Any, rel: float = 0.05) -> np.ndarray:
    """Zero the entries below ``rel * max(k)`` (negative entries included) and
    renormalise to sum 1."""
    arr, out_dtype = _float_2d(k, "kernel")
    rel = _check_real(rel, "rel")
    if not (0.0 <= rel <= 1.0):
        raise KmsrInputError(f"rel: expected a fraction in [0, 1], found {rel}")
    if not np.isfinite(arr).all():
        raise KmsrInputError("kernel: expected finite entries, found NaN or Inf")
    peak = float(arr.max())
    if peak <= 0:
        raise KmsrInputError(f"kernel: expected a positive maximum, found {peak:g}")
    out = np.where(arr >= rel * peak, arr, 0.0)
    return (out / out.sum()).astype(out_dtype)


def pad_or_crop_kernel(k: Any, size: int) -> np.ndarray:
    """Zero-pad or crop a 2-D kernel to ``(size, size)`` about its centre.

    Each axis is handled on its own: the pixel at index ``n // 2`` of an axis of length
    ``n`` lands at index ``size // 2`` (the ``fftshift`` convention). Between sizes of
    equal parity this keeps the geometric centre exactly; when the parity changes the
    kernel ends up half a pixel up/left of the new centre (use :func:`recenter_kernel`
    if that matters). If anything is cropped, the result is rescaled to the input's sum;
    pure padding leaves the values untouched.
    """
    arr, out_dtype = _float_2d(k, "kernel")
    size = _check_size(size)
    out = np.zeros((size, size))
    src, dst = [], []
    cropped = False
    for n in arr.shape:
        off = size // 2 - n // 2
        dst_lo = max(off, 0)
        src_lo = max(-off, 0)
        m = min(n - src_lo, size - dst_lo)
        cropped |= src_lo > 0 or src_lo + m < n
        src.append(slice(src_lo, src_lo + m))
        dst.append(slice(dst_lo, dst_lo + m))
    out[tuple(dst)] = arr[tuple(src)]
    if cropped:
        total = _positive_sum(arr, "kernel", "renormalise after cropping")
        s = float(out.sum())
        if not math.isfinite(s) or s <= 0:
            raise KmsrInputError(
                f"size: cropping to {size} removed all of the kernel's mass"
            )
        out *= total / s
    return out.astype(out_dtype)


# --------------------------------------------------------------------------- moments


def kernel_centroid(k: Any) -> tuple[float, float]:
    """First moment ``(row, col)`` of a 2-D kernel, in pixel-index coordinates."""
    arr, _ = _float_2d(k, "kernel")
    s = _positive_sum(arr, "kernel", "take moments")
    rows = np.arange(arr.shape[0], dtype=np.float64)
    cols = np.arange(arr.shape[1], dtype=np.float64)
    return float(arr.sum(axis=1) @ rows / s), float(arr.sum(axis=0) @ cols / s)


def kernel_covariance(k: Any) -> np.ndarray:
    """Central second moments of a 2-D kernel as a 2x2 matrix in (row, col) order:
    ``[[var_row, cov_row_col], [cov_row_col, var_col]]``."""
    arr, _ = _float_2d(k, "kernel")
    s = _positive_sum(arr, "kernel", "take moments")
    cy, cx = kernel_centroid(arr)
    dr = np.arange(arr.shape[0], dtype=np.float64)[:, None] - cy
    dc = np.arange(arr.shape[1], dtype=np.float64)[None, :] - cx
    vrr = float((arr * dr * dr).sum() / s)
    vcc = float((arr * dc * dc).sum() / s)
    vrc = float((arr * dr * dc).sum() / s)
    return np.array([[vrr, vrc], [vrc, vcc]])


def kernel_moments(k: Any) -> dict[str, Any]:
    """Summary moments of a 2-D kernel.

    Returns a dict with ``mass`` (sum), ``centroid`` ((row, col) array), ``covariance``
    ((row, col) order), ``sigma_major`` / ``sigma_minor`` (square roots of the
    covariance's eigenvalues), ``anisotropy`` (``sigma_major / sigma_minor``, inf for a
    line) and ``theta`` (angle of the major axis in [-pi/2, pi/2), same convention as
    :func:`anisotropic_gaussian_kernel`: from the x axis towards the y axis).
    """
    arr, _ = _float_2d(k, "kernel")
    mass = _positive_sum(arr, "kernel", "take moments")
    cov = kernel_covariance(arr)
    ev = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    sig_minor, sig_major = float(math.sqrt(ev[0])), float(math.sqrt(ev[1]))
    var_x, var_y, cov_xy = cov[1, 1], cov[0, 0], cov[0, 1]
    theta = 0.5 * math.atan2(2.0 * cov_xy, var_x - var_y)
    if theta >= math.pi / 2:
        theta -= math.pi
    return {
        "mass": mass,
        "centroid": np.array(kernel_centroid(arr)),
        "covariance": cov,
        "sigma_major": sig_major,
        "sigma_minor": sig_minor,
        "anisotropy": sig_major / sig_minor if sig_minor > 0 else math.inf,
        "theta": theta,
    }


# --------------------------------------------------------------------------- validation


def _check_square_odd(shape: tuple[int, int], name: str, require_odd: bool) -> None:
    h, w = shape
    if h != w:
        raise KmsrInputError(f"{name}: expected a square kernel, found size ({h}, {w})")
    if require_odd and h % 2 == 0:
        raise KmsrInputError(f"{name}: expected an odd square size, found ({h}, {w})")


def _check_values(stack: np.ndarray, label, atol: float, neg_tol: float) -> None:
    """Check finite / non-negative / sum-to-1 for each kernel of an (N, K, K) stack and
    report the first kernel that fails, with its first failing check."""
    a = stack.astype(np.float64, copy=False)
    n = a.shape[0]
    flat = a.reshape(n, -1)
    nonfinite = ~np.isfinite(flat)
    bad_finite = nonfinite.any(axis=1)
    with np.errstate(invalid="ignore"):
        mins = np.where(nonfinite, 0.0, flat).min(axis=1)
        sums = flat.sum(axis=1)
    bad_neg = ~bad_finite & (mins < -neg_tol)
    bad_sum = ~bad_finite & ~bad_neg & ~(np.abs(sums - 1.0) <= atol)
    bad = bad_finite | bad_neg | bad_sum
    if not bad.any():
        return
    i = int(np.argmax(bad))
    kshape = a.shape[1:]
    if bad_finite[i]:
        idx = np.flatnonzero(nonfinite[i])
        r, c = np.unravel_index(idx[0], kshape)
        more = f" (and {idx.size - 1} more)" if idx.size > 1 else ""
        raise KmsrInputError(
            f"{label(i)}: expected finite entries, found {flat[i, idx[0]]} at ({r}, {c}){more}"
        )
    if bad_neg[i]:
        j = int(np.argmin(flat[i]))
        r, c = np.unravel_index(j, kshape)
        raise KmsrInputError(
            f"{label(i)}: expected entries >= 0, found minimum {flat[i, j]:.4g} at ({r}, {c})"
        )
    s = float(sums[i])
    hint = (
        "; normalise it with normalize_kernel()"
        if s > 0
        else "; a kernel without positive mass cannot be normalised"
    )
    raise KmsrInputError(f"{label(i)}: expected sum 1 (±{_fmt_tol(atol)}), found {s:.6g}{hint}")


def _check_tols(atol: float, neg_tol: float) -> tuple[float, float]:
    atol = _check_real(atol, "atol")
    neg_tol = _check_real(neg_tol, "neg_tol")
    if atol < 0 or neg_tol < 0:
        raise KmsrInputError(f"atol, neg_tol: expected values >= 0, found {atol}, {neg_tol}")
    return atol, neg_tol


def validate_kernel(
    k: Any,
    *,
    name: str = "kernel",
    require_odd: bool = True,
    atol: float = 1e-4,
    neg_tol: float = NEG_TOL,
) -> np.ndarray:
    """Check that ``k`` is a usable blur kernel and return it unchanged (as an ndarray).

    Checks, in order: real numeric dtype, 2-D, non-empty, square, odd size (if
    ``require_odd``), finite entries, entries ``>= -neg_tol`` (tiny negatives down to
    ``-1e-7`` by default are tolerated as round-off), sum within ``atol`` of 1. The first
    failure raises KmsrInputError naming ``name``, e.g.
    ``"kernel: expected an odd square size, found (24, 24)"``.
    """
    atol, neg_tol = _check_tols(atol, neg_tol)
    arr = _as_array(k, name)
    if arr.ndim != 2:
        raise KmsrInputError(
            f"{name}: expected a 2-D array (K, K), found {arr.ndim}-D array of shape {arr.shape}"
        )
    if arr.size == 0:
        raise KmsrInputError(f"{name}: expected a non-empty kernel, found shape {arr.shape}")
    _check_square_odd(arr.shape, name, require_odd)
    _check_values(arr[None], lambda i: name, atol, neg_tol)
    return arr


def validate_kernels(
    ks: Any,
    *,
    name: str = "kernels",
    require_odd: bool = True,
    atol: float = 1e-4,
    neg_tol: float = NEG_TOL,
) -> np.ndarray:
    """Like :func:`validate_kernel` for an ``(N, K, K)`` stack with ``N >= 1``; messages
    name the first bad kernel by index, e.g.
    ``"kernels[3]: expected entries >= 0, found minimum -0.02 at (4, 7)"``.
    Returns the stack unchanged (as an ndarray)."""
    atol, neg_tol = _check_tols(atol, neg_tol)
    arr = _as_array(ks, name)
    if arr.ndim != 3:
        raise KmsrInputError(
            f"{name}: expected a 3-D stack (N, K, K), found {arr.ndim}-D array of shape "
            f"{arr.shape}"
        )
    if arr.shape[0] == 0:
        raise KmsrInputError(f"{name}: expected at least one kernel, found shape {arr.shape}")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise KmsrInputError(f"{name}: expected non-empty kernels, found shape {arr.shape}")
    _check_square_odd(arr.shape[1:], name, require_odd)
    _check_values(arr, lambda i: f"{name}[{i}]", atol, neg_tol)
    return arr
