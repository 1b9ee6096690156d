"""Tests for kmsr_ops.kernels, checked against oracles written out here in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kmsr_ops.errors import KmsrInputError
from kmsr_ops.kernels import (
    anisotropic_gaussian_kernel,
    gaussian_kernel,
    kernel_centroid,
    kernel_covariance,
    kernel_moments,
    motion_kernel,
    normalize_kernel,
    pad_or_crop_kernel,
    recenter_kernel,
    threshold_kernel,
    validate_kernel,
    validate_kernels,
)


def oracle_gaussian(size: int, sigma: float, centre: tuple[float, float] | None = None):
    """exp(-r^2 / 2 sigma^2) / sum, evaluated pixel by pixel."""
    cy, cx = centre if centre is not None else ((size - 1) / 2, (size - 1) / 2)
    k = np.empty((size, size))
    for r in range(size):
        for c in range(size):
            k[r, c] = math.exp(-((r - cy) ** 2 + (c - cx) ** 2) / (2 * sigma**2))
    return k / k.sum()


def rc_covariance(sx: float, sy: float, theta: float) -> np.ndarray:
    """R diag(sx^2, sy^2) R^T in (x, y) order, re-ordered to (row, col) = (y, x)."""
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov_xy = rot @ np.diag([sx**2, sy**2]) @ rot.T
    return cov_xy[::-1, ::-1]


# --------------------------------------------------------------------------- Gaussians


@pytest.mark.parametrize("size,sigma", [(7, 1.0), (15, 2.5), (8, 1.3), (1, 0.7), (2, 0.4)])
def test_gaussian_matches_formula(size, sigma):
    k = gaussian_kernel(size, sigma)
    assert k.shape == (size, size)
    assert k.dtype == np.float64
    np.testing.assert_allclose(k, oracle_gaussian(size, sigma), rtol=1e-12, atol=1e-15)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)


def test_gaussian_even_size_is_centred_between_pixels():
    k = gaussian_kernel(6, 1.0)
    assert kernel_centroid(k) == pytest.approx((2.5, 2.5), abs=1e-12)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)
    # The four central pixels are equal and the maximum.
    assert np.all(k[2:4, 2:4] == pytest.approx(k.max()))


def test_gaussian_tiny_sigma_does_not_underflow():
    k = gaussian_kernel(6, 1e-3)
    assert np.isfinite(k).all() and k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k[2:4, 2:4], 0.25)


def test_gaussian_dtype():
    k = gaussian_kernel(9, 1.5, dtype=np.float32)
    assert k.dtype == np.float32
    np.testing.assert_allclose(k, oracle_gaussian(9, 1.5), rtol=1e-6)


@pytest.mark.parametrize("sigma", [1.2, 2.0, 3.0])
def test_gaussian_second_moment_is_sigma_squared(sigma):
    size = 2 * int(math.ceil(6 * sigma)) + 1
    cov = kernel_covariance(gaussian_kernel(size, sigma))
    np.testing.assert_allclose(cov, np.diag([sigma**2, sigma**2]), rtol=1e-6, atol=1e-9)


def test_anisotropic_theta_zero_rows_get_sigma_y():
    sx, sy = 3.0, 1.5
    cov = kernel_covariance(anisotropic_gaussian_kernel(41, sx, sy, 0.0))
    np.testing.assert_allclose(cov, np.diag([sy**2, sx**2]), rtol=1e-6, atol=1e-9)


def test_anisotropic_theta_half_pi_swaps():
    sx, sy = 3.0, 1.5
    cov = kernel_covariance(anisotropic_gaussian_kernel(41, sx, sy, math.pi / 2))
    np.testing.assert_allclose(cov, np.diag([sx**2, sy**2]), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("theta", [math.pi / 4, 0.3, -1.1, 2.0])
def test_anisotropic_covariance_matches_rotation(theta):
    sx, sy = 3.0, 1.5
    k = anisotropic_gaussian_kernel(41, sx, sy, theta)
    np.testing.assert_allclose(kernel_covariance(k), rc_covariance(sx, sy, theta), atol=1e-6)
    # At pi/4 the x axis rotates towards +y (rows): rows and cols are positively correlated.
    if theta == math.pi / 4:
        assert kernel_covariance(k)[0, 1] == pytest.approx((sx**2 - sy**2) / 2, abs=1e-6)


def test_anisotropic_matches_formula_pointwise():
    sx, sy, theta = 2.0, 1.0, 0.7
    size = 13
    cov_rc = rc_covariance(sx, sy, theta)
    prec = np.linalg.inv(cov_rc)
    c = (size - 1) / 2
    ref = np.empty((size, size))
    for r in range(size):
        for col in range(size):
            d = np.array([r - c, col - c])
            ref[r, col] = math.exp(-0.5 * d @ prec @ d)
    ref /= ref.sum()
    np.testing.assert_allclose(anisotropic_gaussian_kernel(size, sx, sy, theta), ref, rtol=1e-10)


@pytest.mark.parametrize("size,sigma,theta", [(11, 1.7, 0.0), (12, 2.0, 1.234), (21, 3.0, -2.5)])
def test_anisotropic_isotropic_case_equals_gaussian(size, sigma, theta):
    np.testing.assert_allclose(
        anisotropic_gaussian_kernel(size, sigma, sigma, theta),
        gaussian_kernel(size, sigma),
        rtol=1e-10,
        atol=1e-15,
    )


def test_kernel_moments_recovers_anisotropic_parameters():
    m = kernel_moments(anisotropic_gaussian_kernel(41, 4.0, 1.5, 0.6))
    assert m["mass"] == pytest.approx(1.0)
    np.testing.assert_allclose(m["centroid"], [20.0, 20.0], atol=1e-12)
    assert m["sigma_major"] == pytest.approx(4.0, rel=1e-6)
    assert m["sigma_minor"] == pytest.approx(1.5, rel=1e-6)
    assert m["anisotropy"] == pytest.approx(4.0 / 1.5, rel=1e-6)
    assert m["theta"] == pytest.approx(0.6, abs=1e-6)


@pytest.mark.parametrize(
    "call",
    [
        lambda: gaussian_kernel(0, 1.0),
        lambda: gaussian_kernel(5.0, 1.0),
        lambda: gaussian_kernel(5, 0.0),
        lambda: gaussian_kernel(5, float("nan")),
        lambda: gaussian_kernel(5, 1.0, dtype=np.int32),
        lambda: anisotropic_gaussian_kernel(5, 1.0, -1.0, 0.0),
        lambda: anisotropic_gaussian_kernel(5, 1.0, 1.0, float("inf")),
    ],
)
def test_constructor_argument_errors(call):
    with pytest.raises(KmsrInputError):
        call()


# --------------------------------------------------------------------------- motion


MOTION_CASES = [(size, seed) for size in (9, 15, 21, 31, 20) for seed in range(6)]


@pytest.mark.parametrize("size,seed", MOTION_CASES)
def test_motion_kernel_properties(size, seed):
    k = motion_kernel(size, rng=np.random.default_rng(seed))
    assert k.shape == (size, size) and k.dtype == np.float64
    assert np.isfinite(k).all()
    assert k.min() >= 0.0
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    c = (size - 1) / 2
    cy, cx = kernel_centroid(k)
    assert abs(cy - c) <= 0.5 and abs(cx - c) <= 0.5
    # Support is more than one pixel, and the mass is not almost all in one pixel.
    assert np.count_nonzero(k) > 4
    assert k.max() < 0.5
    # Fits inside: no mass on the outer border rows/columns.
    assert k[0].sum() == 0 and k[-1].sum() == 0 and k[:, 0].sum() == 0 and k[:, -1].sum() == 0
    validate_kernel(k, require_odd=False)


def test_motion_kernel_is_deterministic_per_seed():
    a = motion_kernel(21, rng=np.random.default_rng(123))
    b = motion_kernel(21, rng=np.random.default_rng(123))
    c = motion_kernel(21, rng=np.random.default_rng(124))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # Successive draws from one generator differ too.
    rng = np.random.default_rng(5)
    assert not np.allclose(motion_kernel(21, rng=rng), motion_kernel(21, rng=rng))


def test_motion_kernel_is_not_a_blob():
    """A camera-shake kernel is elongated: its principal widths differ for most seeds."""
    ratios = [
        kernel_moments(motion_kernel(25, rng=np.random.default_rng(s), length=14.0))["anisotropy"]
        for s in range(10)
    ]
    assert np.median(ratios) > 1.5


def test_motion_kernel_long_path_is_shrunk_to_fit():
    k = motion_kernel(11, rng=np.random.default_rng(0), length=200.0)
    assert k[0].sum() == 0 and k[-1].sum() == 0 and k[:, 0].sum() == 0 and k[:, -1].sum() == 0
    assert kernel_centroid(k) == pytest.approx((5.0, 5.0), abs=1e-9)


def test_motion_kernel_options():
    k = motion_kernel(15, rng=np.random.default_rng(1), smooth_sigma=0.0, dtype=np.float32)
    assert k.dtype == np.float32
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    assert k[0].sum() == 0 and k[:, -1].sum() == 0
    with pytest.raises(KmsrInputError, match="rng"):
        motion_kernel(15, rng=np.random.RandomState(0))
    with pytest.raises(KmsrInputError, match="size"):
        motion_kernel(5, rng=np.random.default_rng(0))
    with pytest.raises(KmsrInputError, match="length"):
        motion_kernel(15, rng=np.random.default_rng(0), length=-1.0)


# --------------------------------------------------------------------------- hygiene


def test_normalize_kernel():
    k = np.arange(9, dtype=np.float64).reshape(3, 3)
    np.testing.assert_allclose(normalize_kernel(k), k / 36.0)
    assert normalize_kernel(np.ones((3, 3), dtype=np.int64)).dtype == np.float64
    assert normalize_kernel(np.ones((3, 3), dtype=np.float32)).dtype == np.float32
    stack = np.stack([np.ones((3, 3)), 2 * np.ones((3, 3))])
    np.testing.assert_allclose(normalize_kernel(stack).sum(axis=(1, 2)), [1.0, 1.0])


@pytest.mark.parametrize(
    "bad", [np.zeros((3, 3)), -np.ones((3, 3)), np.full((3, 3), np.nan), np.full((3, 3), np.inf)]
)
def test_normalize_kernel_rejects_bad_sum(bad):
    with pytest.raises(KmsrInputError, match="positive finite sum"):
        normalize_kernel(bad)


def test_normalize_kernel_names_bad_stack_entry():
    stack = np.ones((3, 5, 5))
    stack[2] = 0.0
    with pytest.raises(KmsrInputError, match=r"kernel\[2\]"):
        normalize_kernel(stack)


@pytest.mark.parametrize("method", ["linear", "cubic", "integer"])
def test_recenter_moves_delta_back(method):
    k = np.zeros((11, 11))
    k[3, 8] = 1.0
    out = recenter_kernel(k, method=method)
    expected = np.zeros((11, 11))
    expected[5, 5] = 1.0
    np.testing.assert_allclose(out, expected, atol=1e-9)


@pytest.mark.parametrize("method", ["linear", "cubic", "integer"])
def test_recenter_integer_offset_gaussian(method):
    size, sigma = 31, 1.5
    shifted = oracle_gaussian(size, sigma, centre=(17.0, 12.0))
    out = recenter_kernel(shifted, method=method)
    np.testing.assert_allclose(out, gaussian_kernel(size, sigma), atol=1e-8)


def test_recenter_subpixel_offset_gaussian():
    size, sigma = 31, 2.0
    shifted = oracle_gaussian(size, sigma, centre=(17.3, 12.6))
    ref = gaussian_kernel(size, sigma)
    lin = recenter_kernel(shifted)
    assert kernel_centroid(lin) == pytest.approx((15.0, 15.0), abs=1e-9)
    assert lin.sum() == pytest.approx(1.0) and lin.min() >= 0
    # Linear interpolation by a fractional shift f is a 2-tap [1-f, f] filter, which adds
    # exactly f(1-f) to the variance along that axis: 0.3*0.7 on rows, 0.4*0.6 on columns.
    np.testing.assert_allclose(
        kernel_covariance(lin), np.diag([sigma**2 + 0.21, sigma**2 + 0.24]), atol=1e-6
    )
    assert np.abs(lin - ref).max() < 0.08 * ref.max()
    cub = recenter_kernel(shifted, method="cubic")
    assert kernel_centroid(cub) == pytest.approx((15.0, 15.0), abs=1e-3)
    assert cub.min() >= 0
    assert np.abs(cub - ref).max() < 2e-3 * ref.max()
    integer = recenter_kernel(shifted, method="integer")
    cy, cx = kernel_centroid(integer)
    assert abs(cy - 15) <= 0.5 and abs(cx - 15) <= 0.5


def test_recenter_preserves_sum_and_even_size_centre():
    k = 3.0 * oracle_gaussian(20, 1.5, centre=(8.0, 11.0))
    out = recenter_kernel(k)
    assert out.sum() == pytest.approx(3.0)
    assert kernel_centroid(out) == pytest.approx((9.5, 9.5), abs=1e-9)


def test_threshold_kernel():
    k = gaussian_kernel(15, 2.0)
    out = threshold_kernel(k, rel=0.05)
    keep = k >= 0.05 * k.max()
    assert np.all(out[~keep] == 0)
    assert np.count_nonzero(~keep) > 0
    np.testing.assert_allclose(out[keep], k[keep] / k[keep].sum())
    assert out.sum() == pytest.approx(1.0)
    with_neg = k.copy()
    with_neg[0, 0] = -1e-3
    assert threshold_kernel(with_neg, rel=0.0)[0, 0] == 0.0


def test_pad_or_crop_kernel():
    k = gaussian_kernel(5, 1.0)
    padded = pad_or_crop_kernel(k, 9)
    assert padded.shape == (9, 9)
    np.testing.assert_array_equal(padded[2:7, 2:7], k)
    assert padded.sum() == pytest.approx(1.0)
    assert kernel_centroid(padded) == pytest.approx((4.0, 4.0))
    np.testing.assert_array_equal(pad_or_crop_kernel(padded, 5), k)

    big = gaussian_kernel(9, 2.0)
    cropped = pad_or_crop_kernel(big, 5)
    np.testing.assert_allclose(cropped, big[2:7, 2:7] / big[2:7, 2:7].sum())

    # Parity change: index n//2 goes to size//2.
    odd_to_even = pad_or_crop_kernel(k, 6)
    np.testing.assert_array_equal(odd_to_even[1:6, 1:6], k)
    even = gaussian_kernel(6, 1.0)
    np.testing.assert_allclose(pad_or_crop_kernel(even, 4), even[1:5, 1:5] / even[1:5, 1:5].sum())
    np.testing.assert_array_equal(pad_or_crop_kernel(even, 10)[2:8, 2:8], even)
    # Pure padding does not rescale.
    np.testing.assert_array_equal(pad_or_crop_kernel(2 * k, 7)[1:6, 1:6], 2 * k)


# --------------------------------------------------------------------------- validation


def good(size: int = 5) -> np.ndarray:
    return gaussian_kernel(size, 1.0)


def test_validate_kernel_accepts_and_returns_unchanged():
    k = good()
    assert validate_kernel(k) is k
    # Round-off negatives are tolerated.
    k2 = pad_or_crop_kernel(good(), 7)
    k2[0, 0] = -1e-9
    validate_kernel(k2)
    validate_kernel(gaussian_kernel(6, 1.0), require_odd=False)
    validate_kernel(good().astype(np.float32))


def _with(value, at=(1, 2)):
    k = good().copy()
    k[at] = value
    return k


@pytest.mark.parametrize(
    "bad,pattern",
    [
        (_with(np.nan), r"^kernel: expected finite entries, found nan at \(1, 2\)"),
        (_with(np.inf), r"expected finite entries, found inf"),
        (_with(-np.inf), r"expected finite entries, found -inf"),
        (
            _with(-0.02, at=(3, 4)),
            r"^kernel: expected entries >= 0, found minimum -0.02 at \(3, 4\)",
        ),
        (
            0.873 * good(),
            r"^kernel: expected sum 1 \(±1e-4\), found 0.873; "
            r"normalise it with normalize_kernel\(\)",
        ),
        (np.zeros((5, 5)), r"expected sum 1 .*found 0; .*cannot be normalised"),
        (gaussian_kernel(24, 3.0), r"^kernel: expected an odd square size, found \(24, 24\)"),
        (np.ones((3, 5)) / 15, r"^kernel: expected a square kernel, found size \(3, 5\)"),
        (np.ones(5) / 5, r"^kernel: expected a 2-D array .*found 1-D"),
        (np.ones((1, 3, 3)) / 9, r"expected a 2-D array .*found 3-D"),
        (np.zeros((0, 0)), r"^kernel: expected a non-empty kernel, found shape \(0, 0\)"),
        (np.ones((3, 3), dtype=complex) / 9, r"real numeric array, found dtype complex128"),
        (np.ones((3, 3), dtype=bool), r"expected a real numeric array"),
        ([[1.0, 0.0], [0.0]], r"expected an array of numbers"),
    ],
)
def test_validate_kernel_rejects(bad, pattern):
    with pytest.raises(KmsrInputError, match=pattern):
        validate_kernel(bad)


def test_validate_kernel_uses_name_and_tolerances():
    with pytest.raises(KmsrInputError, match=r"^blur: expected sum 1"):
        validate_kernel(0.99 * good(), name="blur")
    validate_kernel(0.99 * good(), atol=0.02)
    with pytest.raises(KmsrInputError, match="entries >= 0"):
        validate_kernel(_with(-1e-9), neg_tol=0.0)
    # KmsrInputError is a ValueError.
    with pytest.raises(ValueError):
        validate_kernel(np.ones((4, 4)) / 16)


def test_validate_kernels_accepts_stack():
    ks = np.stack([good(), gaussian_kernel(5, 2.0), anisotropic_gaussian_kernel(5, 1.0, 0.5, 0.3)])
    assert validate_kernels(ks) is ks


@pytest.mark.parametrize(
    "index,value,at,pattern",
    [
        (3, -0.02, (4, 7), r"^kernels\[3\]: expected entries >= 0, found minimum -0.02 at \(4, 7"),
        (2, np.nan, (0, 1), r"^kernels\[2\]: expected finite entries, found nan at \(0, 1\)"),
        (4, np.inf, (8, 8), r"^kernels\[4\]: expected finite entries"),
    ],
)
def test_validate_kernels_names_bad_index(index, value, at, pattern):
    ks = np.stack([gaussian_kernel(9, 1.0 + i / 3) for i in range(5)])
    ks[index][at] = value
    with pytest.raises(KmsrInputError, match=pattern):
        validate_kernels(ks)


def test_validate_kernels_reports_first_bad_kernel_and_sum():
    ks = np.stack([good() for _ in range(4)])
    ks[1] *= 0.873
    ks[3, 0, 0] = np.nan
    with pytest.raises(
        KmsrInputError,
        match=r"^kernels\[1\]: expected sum 1 \(±1e-4\), found 0.873; "
        r"normalise it with normalize_kernel\(\)",
    ):
        validate_kernels(ks)


@pytest.mark.parametrize(
    "bad,pattern",
    [
        (good(), r"^kernels: expected a 3-D stack \(N, K, K\), found 2-D"),
        (np.zeros((0, 5, 5)), r"^kernels: expected at least one kernel, found shape \(0, 5, 5\)"),
        (np.zeros((2, 0, 0)), r"expected non-empty kernels"),
        (np.ones((2, 3, 5)) / 15, r"^kernels: expected a square kernel, found size \(3, 5\)"),
        (np.ones((2, 4, 4)) / 16, r"^kernels: expected an odd square size, found \(4, 4\)"),
    ],
)
def test_validate_kernels_rejects_shape(bad, pattern):
    with pytest.raises(KmsrInputError, match=pattern):
        validate_kernels(bad)


def test_validate_kernels_custom_name_and_even():
    ks = np.ones((2, 4, 4)) / 16
    assert validate_kernels(ks, require_odd=False) is ks
    ks2 = ks.copy()
    ks2[1] *= 2
    with pytest.raises(KmsrInputError, match=r"^pool\[1\]: expected sum 1"):
        validate_kernels(ks2, name="pool", require_odd=False)
