"""PSNR/SSIM in the SR convention, and kernel similarity, against published figures."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.io as sio
from scipy.signal import convolve2d

from kmsr_ops.errors import KmsrInputError
from kmsr_ops.kernel_similarity import kernel_similarity, kernel_similarity_reference
from kmsr_ops.metrics import psnr, ssim


@pytest.mark.parametrize("name,expected", [("butterfly", 24.04), ("woman", 28.57)])
def test_bicubic_psnr_of_set5_x3(shared_data, name, expected):
    # Published bicubic x3 Y-PSNR (3-pixel shave), computed here from MATLAB's own arrays.
    d = sio.loadmat(shared_data / "matlab" / f"{name}_GT_x3.mat")
    assert psnr(d["im_b_y"], d["im_gt_y"], crop_border=3) == pytest.approx(expected, abs=0.005)


def _ssim_oracle(a, b, data_range=255.0):
    """Wang et al. 2004 written out: 11x11 Gaussian window (sigma 1.5), valid region, mean."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def f(x):
        return convolve2d(x, w, mode="valid")

    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return m.mean()


def test_ssim_matches_written_out_formula(shared_data):
    d = sio.loadmat(shared_data / "matlab" / "butterfly_GT_x3.mat")
    a, b = d["im_b_y"][3:-3, 3:-3], d["im_gt_y"][3:-3, 3:-3]
    assert ssim(d["im_b_y"], d["im_gt_y"], crop_border=3) == pytest.approx(_ssim_oracle(a, b), abs=1e-6)


def test_y_channel_and_colour():
    rng = np.random.default_rng(0)
    a = rng.random((40, 30, 3)) * 255
    b = np.clip(a + rng.normal(0, 5, a.shape), 0, 255)
    # Y of BT.601 studio range from RGB in [0, 255]
    ya = (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255 + 16
    yb = (65.481 * b[..., 0] + 128.553 * b[..., 1] + 24.966 * b[..., 2]) / 255 + 16
    mse = np.mean((ya[2:-2, 2:-2] - yb[2:-2, 2:-2]) ** 2)
    assert psnr(a, b, crop_border=2, test_y_channel=True) == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-9)
    assert ssim(a, a, test_y_channel=True) == pytest.approx(1.0)
    assert psnr(a, a) == float("inf")
    assert 0 < ssim(a, b) < 1


def test_metric_bad_input():
    with pytest.raises(KmsrInputError, match="img2: expected the shape of img1"):
        psnr(np.zeros((5, 5)), np.zeros((5, 6)))
    with pytest.raises(KmsrInputError, match="crop_border: 3 leaves nothing"):
        psnr(np.zeros((5, 5)), np.zeros((5, 5)), crop_border=3)
    with pytest.raises(KmsrInputError, match="finite"):
        psnr(np.full((5, 5), np.nan), np.zeros((5, 5)))


def _levin(shared_data):
    est = shared_data / "kernels" / "levin09" / "published_estimates.npz"
    if not est.exists():
        pytest.skip(f"{est} is missing")
    gt = {i: np.load(shared_data / "kernels" / "levin09" / f"levin09_kernel{i}.npy") for i in range(1, 9)}
    return np.load(est), gt


@pytest.mark.parametrize("method,expected", [("BD_pan_cvpr_2016", 0.798), ("BD_sun_iccp_2013", 0.816),
                                             ("BD_cho_and_lee_tog_2009", 0.755)])
def test_published_levin_similarities(shared_data, method, expected):
    est, gt = _levin(shared_data)
    sims = [kernel_similarity(est[k], gt[int(re.search(r"__k_(\d+)_", k).group(1))]) for k in est if k.startswith(method + "__")]
    assert len(sims) == 32
    assert np.mean(sims) == pytest.approx(expected, abs=0.0005)


def test_similarity_fft_equals_brute_force(shared_data):
    est, gt = _levin(shared_data)
    for key in list(est)[::20]:
        k = gt[int(re.search(r"__k_(\d+)_", key).group(1))]
        assert kernel_similarity(est[key], k) == pytest.approx(kernel_similarity_reference(est[key], k), abs=1e-12)


def test_similarity_analytic_cases():
    rng = np.random.default_rng(3)
    k = rng.random((9, 9))
    big = np.zeros((15, 15))
    big[2:11, 5:14] = k
    assert kernel_similarity(k, big) == pytest.approx(1.0)  # shifted copy
    assert kernel_similarity(k, k[::-1, ::-1]) == pytest.approx(1.0)  # 180 degree rotation
    a = np.zeros((5, 5))
    a[2, 2] = 1
    b = np.zeros((5, 5))
    b[0, 0] = b[4, 4] = 1
    assert kernel_similarity(a, b) == pytest.approx(1 / np.sqrt(2))
    with pytest.raises(KmsrInputError, match="all zeros"):
        kernel_similarity(np.zeros((3, 3)), a)
