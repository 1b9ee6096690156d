"""FFT deconvolution pieces against dense linear algebra and SciPy: the closed-form latent solve
minimises its quadratic energy, OTF convolution is SciPy's periodic convolution, the difference
operators are adjoint, the boundary extension is harmonic, Otsu as MATLAB's graythresh."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.sparse.linalg import LinearOperator, cg

from kmsr_ops import deconv
from kmsr_ops.blind_kernel import thresholded_divergence, thresholded_divergence_fast
from kmsr_ops.errors import KmsrInputError


def periodic_conv_matrix(k: np.ndarray, shape) -> np.ndarray:
    """Dense matrix of S ↦ k ∗ S on a periodic frame, kernel centred at ((K-1)//2, (K-1)//2):
    (k ∗ S)[y, x] = Σ_ij k[i, j] S[y - (i - c1), x - (j - c2)]. Built entry by entry."""
    H, W = shape
    c1, c2 = (k.shape[0] - 1) // 2, (k.shape[1] - 1) // 2
    M = np.zeros((H * W, H * W))
    for y in range(H):
        for x in range(W):
            for i in range(k.shape[0]):
                for j in range(k.shape[1]):
                    M[y * W + x, ((y - i + c1) % H) * W + (x - j + c2) % W] += k[i, j]
    return M


def forward_diff_matrices(shape):
    H, W = shape
    n = H * W
    Dx = np.zeros((n, n))
    Dy = np.zeros((n, n))
    for y in range(H):
        for x in range(W):
            p = y * W + x
            Dx[p, p] -= 1
            Dx[p, y * W + (x + 1) % W] += 1
            Dy[p, p] -= 1
            Dy[p, ((y + 1) % H) * W + x] += 1
    return Dx, Dy


@pytest.mark.parametrize("beta_u", [0.0, 0.7])
def test_closed_form_minimises_the_quadratic_energy(beta_u):
    rng = np.random.default_rng(0)
    shape = (8, 11)
    k = rng.random((3, 5))
    k /= k.sum()
    B, h, v, u = (rng.standard_normal(shape) for _ in range(4))
    beta = 0.37
    S = deconv.latent_closed_form(B, k, h, v, beta, u=u if beta_u else None, beta_u=beta_u)

    Km = periodic_conv_matrix(k, shape)
    Dx, Dy = forward_diff_matrices(shape)
    A = Km.T @ Km + beta * (Dx.T @ Dx + Dy.T @ Dy) + beta_u * np.eye(Km.shape[0])
    rhs = Km.T @ B.ravel() + beta * (Dx.T @ h.ravel() + Dy.T @ v.ravel()) + beta_u * u.ravel()
    dense = np.linalg.solve(A, rhs).reshape(shape)
    np.testing.assert_allclose(S, dense, atol=1e-10)
    it, info = cg(LinearOperator(A.shape, matvec=lambda z: A @ z), rhs, rtol=1e-13, maxiter=2000)
    assert info == 0
    np.testing.assert_allclose(S, it.reshape(shape), atol=1e-8)

    def energy(X):
        x = X.ravel()
        e = np.sum((Km @ x - B.ravel()) ** 2) + beta * (np.sum((Dx @ x - h.ravel()) ** 2) + np.sum((Dy @ x - v.ravel()) ** 2))
        return e + beta_u * np.sum((x - u.ravel()) ** 2)

    e0 = energy(S)
    for _ in range(5):
        assert energy(S + 1e-3 * rng.standard_normal(shape)) > e0


def test_psf2otf_convolution_is_scipy_periodic_convolution():
    rng = np.random.default_rng(1)
    img = rng.random((20, 17))
    k = rng.random((5, 5))  # asymmetric: orientation matters
    K = deconv.psf2otf(k, img.shape)
    got = np.fft.irfft2(np.fft.rfft2(img) * K, s=img.shape)
    want = ndimage.convolve(img, k, mode="wrap")  # true convolution, centred on k[2, 2]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_divergence_is_the_adjoint_of_forward_differences():
    rng = np.random.default_rng(2)
    S, h, v = (rng.standard_normal((9, 13)) for _ in range(3))
    gh, gv = deconv.forward_differences(S)
    lhs = np.sum(gh * h) + np.sum(gv * v)
    rhs = np.sum(S * deconv.divergence_adjoint(h, v))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    den = deconv.gradient_denominator((9, 13), dtype=np.float64)
    lap = np.fft.irfft2(np.fft.rfft2(S) * den, s=S.shape)
    np.testing.assert_allclose(lap, deconv.divergence_adjoint(gh, gv), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_thresholded_divergence_matches_reference(dtype):
    rng = np.random.default_rng(3)
    S = rng.random((3, 24, 31)).astype(dtype)
    thr = np.array([0.0, 0.05, 0.3])
    got = thresholded_divergence_fast(S, thr)
    want = thresholded_divergence(S, thr)
    np.testing.assert_allclose(got, want, atol=1e-6 if dtype == np.float32 else 1e-12)
    # the mask really removes something at the larger thresholds
    assert not np.allclose(want[2], deconv.divergence_adjoint(*deconv.forward_differences(S[2])))


# --------------------------------------------------------------------------- boundary
def periodic_laplacian(x: np.ndarray) -> np.ndarray:
    return np.roll(x, 1, 0) + np.roll(x, -1, 0) + np.roll(x, 1, 1) + np.roll(x, -1, 1) - 4 * x


@pytest.mark.parametrize("shape,target", [((30, 41), (40, 48)), ((17, 17), (27, 25)), ((64, 50), (66, 53))])
def test_extension_is_harmonic_across_the_wrap(shape, target):
    rng = np.random.default_rng(4)
    img = rng.random(shape)
    ext = deconv.extend_boundary(img, target)
    H, W = shape
    assert ext.shape == target
    np.testing.assert_array_equal(ext[:H, :W], img)
    lap = periodic_laplacian(ext)
    np.testing.assert_allclose(lap[H:, 1 : W - 1], 0, atol=1e-9)  # band below, off its ramp columns
    np.testing.assert_allclose(lap[1 : H - 1, W:], 0, atol=1e-9)  # band right, off its ramp rows
    np.testing.assert_allclose(lap[H:, W:], 0, atol=1e-9)  # corner


def test_extension_removes_the_wrap_jump():
    img = np.tile(np.linspace(0, 1, 40), (32, 1))  # a ramp: its plain periodic copy jumps by 1
    ext = deconv.extend_boundary(img, deconv.extended_shape(img.shape, 25))
    jump_plain = np.abs(np.roll(img, -1, 1) - img).max()
    jump_ext = np.abs(np.roll(ext, -1, 1) - ext).max()
    assert jump_plain == pytest.approx(1.0)
    assert jump_ext < 0.1


def test_extension_rejects_a_too_small_frame():
    with pytest.raises(KmsrInputError, match="shape"):
        deconv.extend_boundary(np.zeros((10, 10)), (11, 20))


def test_extended_shape_is_fast_and_large_enough():
    for h, w, k in [(512, 512, 25), (255, 255, 31), (97, 131, 7)]:
        H, W = deconv.extended_shape((h, w), k)
        assert H >= h + k - 1 and W >= w + k - 1
        for n in (H, W):
            m = n
            for p in (2, 3, 5):
                while m % p == 0:
                    m //= p
            assert m == 1


# --------------------------------------------------------------------------- Otsu
def test_otsu_two_spikes_is_midway_as_graythresh():
    x = np.concatenate([np.full(500, 0.2), np.full(500, 0.8)])
    # Between-class variance is maximal for every cut between bins 52 and 204 (1-based):
    # graythresh returns the mean position, (128 - 1) / 255.
    assert deconv.otsu_threshold(x) == pytest.approx(127 / 255)


def test_otsu_constant_image_is_zero():
    assert deconv.otsu_threshold(np.full((8, 8), 0.4)) == 0.0
