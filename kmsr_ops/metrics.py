"""Image-quality metrics in the super-resolution convention.

PSNR and SSIM compare two images of the same size, optionally on the Y channel of MATLAB's
``rgb2ycbcr`` (``test_y_channel``) and with ``crop_border`` pixels shaved from every side
(the SR convention shaves ``scale`` pixels). Images are (H, W) or (H, W, C) NumPy arrays in
[0, ``data_range``] (255 by default, as the literature reports). SSIM is scikit-image's with
a Gaussian window (sigma 1.5, 11x11) and population covariances: the setting of Wang et al.
2004 that MATLAB's ``ssim`` and BasicSR follow.
"""

from __future__ import annotations

import numpy as np

from .colour import rgb2ycbcr
from .errors import KmsrInputError


def _prepare(img1, img2, crop_border: int, test_y_channel: bool, data_range: float):
    a = np.asarray(img1, dtype=np.float64)
    b = np.asarray(img2, dtype=np.float64)
    if a.shape != b.shape:
        raise KmsrInputError(f"img2: expected the shape of img1 {a.shape}, found {b.shape}")
    if a.ndim not in (2, 3):
        raise KmsrInputError(f"img1: expected (H, W) or (H, W, C), found shape {a.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise KmsrInputError("img1/img2: expected finite values, found NaN or Inf")
    if crop_border < 0 or int(crop_border) != crop_border:
        raise KmsrInputError(f"crop_border: expected an integer >= 0, found {crop_border!r}")
    c = int(crop_border)
    if c and (a.shape[0] <= 2 * c or a.shape[1] <= 2 * c):
        raise KmsrInputError(f"crop_border: {c} leaves nothing of a {a.shape[0]}x{a.shape[1]} image")
    if test_y_channel:
        if a.ndim == 3 and a.shape[2] == 3:
            a = rgb2ycbcr(a / data_range)[..., 0] * data_range
            b = rgb2ycbcr(b / data_range)[..., 0] * data_range
        elif a.ndim == 3 and a.shape[2] != 1:
            raise KmsrInputError(f"img1: test_y_channel needs RGB or one channel, found {a.shape[2]} channels")
    if a.ndim == 3 and a.shape[2] == 1:
        a, b = a[..., 0], b[..., 0]
    if c:
        a = a[c:-c, c:-c, ...]
        b = b[c:-c, c:-c, ...]
    return a, b


def psnr(img1, img2, *, crop_border: int = 0, test_y_channel: bool = False, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    a, b = _prepare(img1, img2, crop_border, test_y_channel, data_range)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * np.log10(data_range**2 / mse)


def ssim(img1, img2, *, crop_border: int = 0, test_y_channel: bool = False, data_range: float = 255.0) -> float:
    """Structural similarity (Gaussian window sigma 1.5), mean over channels for colour images."""
    from skimage.metrics import structural_similarity  # noqa: PLC0415 - heavy import

    a, b = _prepare(img1, img2, crop_border, test_y_channel, data_range)
    if min(a.shape[:2]) < 11:
        raise KmsrInputError(f"img1: SSIM needs at least 11x11 pixels after cropping, found {a.shape[:2]}")
    return float(
        structural_similarity(
            a,
            b,
            data_range=data_range,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=2 if a.ndim == 3 else None,
        )
    )
