"""Camera-noise level from photos: per-channel sigma of additive noise, for ``kmsr adapt``.

Method (after Immerkaer 1996, "Fast noise variance estimation", with a flat-block selection):

1. **High-pass.** Each channel is correlated with the 3x3 mask ``M = d d^T`` where
   ``d = [1, -2, 1]``, i.e. ``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]]``. It is the difference of
   two discrete Laplacians (the 8-neighbour one minus twice the 4-neighbour one), so it is
   a second difference along rows times a second difference along columns. It maps to zero
   every image that is, locally, a linear function of x or of y (constants, ramps, and even
   ``a + b x + c y + e x y`` plus any g(x) times a linear function of y), which removes most of
   the slowly varying scene while keeping almost all of the pixel-to-pixel noise. It is
   computed on the "valid" region only (a one-pixel border is dropped), so no padding rule
   enters the residual.
2. **Exact gain.** For white noise of standard deviation sigma every residual pixel is a
   weighted sum of 9 independent samples, so its standard deviation is
   ``sigma * sqrt(sum(M**2)) = sigma * sqrt(1+4+1+4+16+4+1+4+1) = 6 sigma``. Dividing the
   residual's spread by 6 therefore gives an unbiased sigma on pure Gaussian noise (the
   residual pixels are correlated with their neighbours, which widens the estimate's
   scatter but does not bias it).
3. **Flat blocks.** Scene texture (hair, foliage, edges) also passes the high-pass and would
   inflate the estimate. The valid region is cut into non-overlapping ``block`` x ``block``
   tiles, and each tile is scored by its *signal activity*: the mean squared gradient of the
   image after Gaussian smoothing (sigma = 1 px), summed over channels. Smoothing keeps the
   score dominated by scene structure rather than by the noise itself; ranking on the
   high-pass residual instead would pick the tiles whose noise happened to be low and bias
   the estimate down. Only the flattest ``fraction`` of the tiles (at least
   :data:`MIN_BLOCKS`, when that many exist) is kept, the same tiles for every channel.
4. **Clipping.** Saturated or crushed pixels (within half an 8-bit step of 0 or 1) carry no
   noise. A tile is dropped before the ranking when any pixel its residual depends on (the
   tile plus its one-pixel rim) is clipped in any channel.
5. **Robust spread.** Per channel, sigma is ``1.4826 * MAD / 6`` of the pooled residuals of
   the kept tiles, where MAD is the median absolute deviation from the median; 1.4826 turns
   the MAD of a Gaussian into its standard deviation, and the median ignores the few residual
   pixels that still sit on an edge.

Camera noise grows with intensity (shot noise); :class:`NoiseEstimate` therefore also reports
the mean intensity of the tiles used, so a caller can tell at which level the sigma was seen.
The estimate includes 8-bit quantisation noise (about 0.0011 for images decoded from 8-bit
files) and is an upper bound on images with no flat regions at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import KmsrInputError
from .validate import check_int

__all__ = ["MIN_BLOCKS", "NoiseEstimate", "estimate_noise", "estimate_noise_many"]

#: Fewest tiles kept (when that many unclipped tiles exist), whatever ``fraction`` says.
MIN_BLOCKS = 4

# sqrt(sum(M**2)) for the mask M = [1,-2,1]^T [1,-2,1]: the residual's std on unit white noise.
_HIGHPASS_GAIN = 6.0
# MAD -> standard deviation for a Gaussian: 1 / Phi^-1(3/4).
_MAD_TO_STD = 1.4826
# Pixels this close to 0 or 1 count as clipped (half an 8-bit step).
_CLIP_MARGIN = 0.5 / 255.0
# Gaussian smoothing (px) before the activity score.
_ACTIVITY_SIGMA = 1.0


@dataclass(frozen=True)
class NoiseEstimate:
    """Per-channel noise sigma (image units, [0, 1] scale) and where it was measured.

    ``sigma`` and ``mean_level`` have one entry per channel (one for a greyscale image);
    ``blocks_used`` counts the tiles the sigma came from (summed over photos for
    :func:`estimate_noise_many`); ``mean_level`` is the mean intensity of those tiles.
    """

    sigma: tuple[float, ...]
    blocks_used: int
    mean_level: tuple[float, ...]

    @property
    def sigma_mean(self) -> float:
        """Mean of the per-channel sigmas."""
        return float(sum(self.sigma) / len(self.sigma))

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (lists of floats, an int)."""
        return {
            "sigma": [float(s) for s in self.sigma],
            "sigma_mean": self.sigma_mean,
            "blocks_used": int(self.blocks_used),
            "mean_level": [float(m) for m in self.mean_level],
        }


def _check_params(block, fraction) -> tuple[int, float]:
    block = check_int("block", block, 4)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating)):
        raise KmsrInputError(f"fraction: expected a number in (0, 1], found {fraction!r}")
    f = float(fraction)
    if not (0.0 < f <= 1.0):  # also rejects NaN
        raise KmsrInputError(f"fraction: expected a number in (0, 1], found {fraction!r}")
    return block, f


def _as_image(image, block: int) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] < 1):
        raise KmsrInputError(f"image: expected an array (H, W) or (H, W, C), found shape {a.shape}")
    if a.dtype.kind != "f":
        raise KmsrInputError(
            f"image: expected floats in [0, 1], found dtype {a.dtype} (convert 8-bit images with x / 255)"
        )
    h, w = a.shape[:2]
    if h < block + 2 or w < block + 2:
        raise KmsrInputError(
            f"image: {h}x{w} is too small for one {block}x{block} block "
            f"(needs at least {block + 2}x{block + 2}: the high-pass drops a 1-pixel border)"
        )
    x = a.astype(np.float64, copy=False)
    if x.ndim == 2:
        x = x[:, :, None]
    if not np.all(np.isfinite(x)):
        raise KmsrInputError("image: contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1.0 + 1e-6:
        raise KmsrInputError(f"image: expected values in [0, 1], found range [{lo:.4g}, {hi:.4g}]")
    return x


def _highpass(x: np.ndarray) -> np.ndarray:
    """Correlation with [1,-2,1]^T [1,-2,1] on the valid region: (H-2, W-2, C)."""
    r = x[:-2] - 2.0 * x[1:-1] + x[2:]
    return r[:, :-2] - 2.0 * r[:, 1:-1] + r[:, 2:]


def _tiles(a: np.ndarray, block: int, ny: int, nx: int) -> np.ndarray:
    """(ny*block, nx*block, ...) crop of ``a`` as (ny*nx, block*block, ...) tiles."""
    rest = a.shape[2:]
    t = a[: ny * block, : nx * block].reshape(ny, block, nx, block, *rest)
    t = np.moveaxis(t, 2, 1)  # (ny, nx, block, block, ...)
    return t.reshape(ny * nx, block * block, *rest)


def _estimate(x: np.ndarray, block: int, fraction: float):
    """(sigma (C,), mean level (C,), tiles used); None when every tile is clipped."""
    h, w, c = x.shape
    ny, nx = (h - 2) // block, (w - 2) // block

    resid = _tiles(_highpass(x), block, ny, nx)  # (n, b*b, C)
    inner = x[1:-1, 1:-1]
    level = _tiles(inner, block, ny, nx).mean(axis=1)  # (n, C)

    clipped = np.any((x <= _CLIP_MARGIN) | (x >= 1.0 - _CLIP_MARGIN), axis=2)
    touched = ndimage.maximum_filter(clipped, size=3, mode="constant", cval=False)[1:-1, 1:-1]
    usable = ~_tiles(touched, block, ny, nx).any(axis=1)  # (n,)
    if not usable.any():
        return None

    activity = np.zeros((h - 2, w - 2))
    for ch in range(c):
        activity += ndimage.gaussian_gradient_magnitude(x[:, :, ch], _ACTIVITY_SIGMA, mode="reflect")[1:-1, 1:-1] ** 2
    score = _tiles(activity, block, ny, nx).mean(axis=1)

    idx = np.flatnonzero(usable)
    n_keep = min(idx.size, max(MIN_BLOCKS, math.ceil(fraction * idx.size)))
    order = np.argsort(score[idx], kind="stable")
    keep = idx[order[:n_keep]]

    r = resid[keep].reshape(-1, c)  # pooled residuals per channel
    med = np.median(r, axis=0)
    mad = np.median(np.abs(r - med), axis=0)
    sigma = _MAD_TO_STD * mad / _HIGHPASS_GAIN
    return sigma, level[keep].mean(axis=0), int(keep.size)


def estimate_noise(image: np.ndarray, *, block: int = 16, fraction: float = 0.1) -> NoiseEstimate:
    """Noise sigma per channel of one photo, (H, W) or (H, W, C) floats in [0, 1].

    ``block``: tile side in pixels (>= 4); the image must be at least ``block + 2`` on each
    side. ``fraction``: share of the unclipped tiles, flattest first, that the sigma is
    measured on (at least :data:`MIN_BLOCKS` tiles when that many exist).

    Raises :class:`~kmsr_ops.errors.KmsrInputError` (a ``ValueError``) for bad arguments and
    for images in which every tile touches a clipped pixel.
    """
    block, fraction = _check_params(block, fraction)
    x = _as_image(image, block)
    out = _estimate(x, block, fraction)
    if out is None:
        raise KmsrInputError(
            "image: every block touches a clipped pixel (near 0 or 1); the noise cannot be measured"
        )
    sigma, level, used = out
    return NoiseEstimate(
        sigma=tuple(float(s) for s in sigma),
        blocks_used=used,
        mean_level=tuple(float(m) for m in level),
    )


def estimate_noise_many(images: list[np.ndarray], **kw) -> NoiseEstimate:
    """Combine :func:`estimate_noise` over photos of one camera.

    Per channel, ``sigma`` is the median of the per-photo sigmas; ``blocks_used`` is the sum
    over photos and ``mean_level`` the mean intensity over all tiles used. Photos in which
    every tile is clipped are skipped; the call fails when no photo is left. All photos must
    have the same number of channels. Keyword arguments (``block``, ``fraction``) go to
    :func:`estimate_noise`.
    """
    unknown = set(kw) - {"block", "fraction"}
    if unknown:
        raise TypeError(f"estimate_noise_many: unexpected keyword argument(s) {sorted(unknown)}")
    block, fraction = _check_params(kw.get("block", 16), kw.get("fraction", 0.1))
    images = list(images)
    if not images:
        raise KmsrInputError("images: expected at least one image, found none")

    sigmas, levels, counts = [], [], []
    channels = None
    for i, image in enumerate(images):
        try:
            x = _as_image(image, block)
        except KmsrInputError as e:
            raise KmsrInputError(f"images[{i}]: {e}") from e
        if channels is None:
            channels = x.shape[2]
        elif x.shape[2] != channels:
            raise KmsrInputError(f"images[{i}]: has {x.shape[2]} channel(s), images[0] has {channels}")
        out = _estimate(x, block, fraction)
        if out is None:
            continue
        sigmas.append(out[0])
        levels.append(out[1] * out[2])
        counts.append(out[2])
    if not counts:
        raise KmsrInputError(
            "images: in every image each block touches a clipped pixel (near 0 or 1); "
            "the noise cannot be measured"
        )
    total = int(sum(counts))
    return NoiseEstimate(
        sigma=tuple(float(s) for s in np.median(np.stack(sigmas), axis=0)),
        blocks_used=total,
        mean_level=tuple(float(m) for m in np.sum(levels, axis=0) / total),
    )
