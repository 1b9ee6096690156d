"""Gradient-domain kernel update against a dense least-squares solve, the gradients against
SciPy's convolve2d, the threshold rules against literal versions of the reference code, and the
kernel clean-up on kernels built to show each step."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import convolve2d

from kmsr_ops import kernel_solve as ks


def periodic_conv_columns(img: np.ndarray, K: int) -> np.ndarray:
    """(pixels, K²) matrix M with M @ k.ravel() = k ∗ img (periodic, kernel centred), entry by entry."""
    H, W = img.shape
    c = (K - 1) // 2
    M = np.zeros((H * W, K * K))
    for y in range(H):
        for x in range(W):
            for i in range(K):
                for j in range(K):
                    M[y * W + x, i * K + j] = img[(y - i + c) % H, (x - j + c) % W]
    return M


def test_valid_gradients_are_the_reference_conv2():
    rng = np.random.default_rng(0)
    X = rng.random((12, 15))
    px, py = ks.valid_gradients(X)
    np.testing.assert_allclose(px, convolve2d(X, np.array([[-1.0, 1.0], [0.0, 0.0]]), mode="valid"), atol=1e-15)
    np.testing.assert_allclose(py, convolve2d(X, np.array([[-1.0, 0.0], [1.0, 0.0]]), mode="valid"), atol=1e-15)


@pytest.fixture(scope="module")
def small_problem():
    rng = np.random.default_rng(1)
    K, gamma = 5, 0.3
    Lx, Ly = (rng.standard_normal((14, 17)) for _ in range(2))
    k_true = rng.random((K, K))
    k_true /= k_true.sum()
    Mx, My = periodic_conv_columns(Lx, K), periodic_conv_columns(Ly, K)
    Bx = (Mx @ k_true.ravel()).reshape(Lx.shape) + 0.01 * rng.standard_normal(Lx.shape)
    By = (My @ k_true.ravel()).reshape(Ly.shape) + 0.01 * rng.standard_normal(Ly.shape)
    # Dense regularised least squares: min ||Mx k - Bx||² + ||My k - By||² + γ||k||².
    A = np.vstack([Mx, My, np.sqrt(gamma) * np.eye(K * K)])
    rhs = np.concatenate([Bx.ravel(), By.ravel(), np.zeros(K * K)])
    dense = np.linalg.lstsq(A, rhs, rcond=None)[0].reshape(K, K)
    return dict(K=K, gamma=gamma, Lx=Lx, Ly=Ly, Bx=Bx, By=By, dense=dense, Mx=Mx, My=My)


def test_cg_kernel_equals_dense_least_squares(small_problem):
    p = small_problem
    Rlag, b = ks.kernel_normal_equations(p["Lx"], p["Ly"], p["Bx"], p["By"], p["K"])
    np.testing.assert_allclose(b.ravel(), p["Mx"].T @ p["Bx"].ravel() + p["My"].T @ p["By"].ravel(), atol=1e-10)
    k = ks.conjugate_gradient_kernel(Rlag, b, p["gamma"], iterations=500, tol=1e-13)
    np.testing.assert_allclose(k, p["dense"], atol=1e-9)


def test_fft_operator_equals_dense_operator(small_problem):
    p = small_problem
    Rlag, _ = ks.kernel_normal_equations(p["Lx"], p["Ly"], p["Bx"], p["By"], p["K"])
    x = np.random.default_rng(2).standard_normal((p["K"], p["K"]))
    dense = p["Mx"].T @ p["Mx"] + p["My"].T @ p["My"] + p["gamma"] * np.eye(p["K"] ** 2)
    np.testing.assert_allclose(ks._LagOperator(Rlag[None], p["gamma"])(x[None])[0].ravel(), dense @ x.ravel(), atol=1e-10)
    np.testing.assert_allclose(ks._dense_operator(Rlag, p["gamma"]), dense, atol=1e-10)


def test_batched_cg_stops_each_image_on_its_own(small_problem):
    p = small_problem
    Rlag, b = ks.kernel_normal_equations(p["Lx"], p["Ly"], p["Bx"], p["By"], p["K"])
    easy_b = np.zeros_like(b)  # zero right-hand side: uniform start, converges towards 0
    stack = ks.conjugate_gradient_kernel(np.stack([Rlag, Rlag]), np.stack([b, easy_b]), p["gamma"], iterations=20)
    one = ks.conjugate_gradient_kernel(Rlag, b, p["gamma"], iterations=20)
    np.testing.assert_allclose(stack[0], one, atol=1e-12)
    twenty = ks.conjugate_gradient_kernel(Rlag, b, p["gamma"], iterations=20)
    start = np.full_like(b, 1.0 / b.size)
    A = ks._dense_operator(Rlag, p["gamma"])

    def resid(x):
        return np.linalg.norm(A @ x.ravel() - b.ravel())

    assert resid(twenty) < 1e-2 * resid(start)  # 20 iterations do most of the work


def literal_initial_threshold(px, py, psf_size):
    """threshold_pxpy_v1's first call, as written: histograms on 0:0.00006:2 per direction class."""
    pm = px**2 + py**2
    with np.errstate(divide="ignore", invalid="ignore"):
        pd = np.arctan(py / px)
    steps = np.arange(0, 2 + 1e-12, 0.00006)
    edges = np.append(steps, np.inf)

    def histc(vals):  # MATLAB histc: steps[k] <= x < steps[k+1], last bin x == steps[-1]
        h, _ = np.histogram(vals[vals <= steps[-1]], bins=edges)
        return h

    hs = [
        np.cumsum(histc(pm[(pd >= 0) & (pd < np.pi / 4)])[::-1]),
        np.cumsum(histc(pm[(pd >= np.pi / 4) & (pd < np.pi / 2)])[::-1]),
        np.cumsum(histc(pm[(pd >= -np.pi / 4) & (pd < 0)])[::-1]),
        np.cumsum(histc(pm[(pd >= -np.pi / 2) & (pd < -np.pi / 4)])[::-1]),
    ]
    th = max(psf_size * 20, 10)
    for t in range(steps.size):
        if min(h[t] for h in hs) >= th:
            return steps[steps.size - 1 - t]
    return 0.0


@pytest.mark.parametrize("seed", [3, 4])
def test_initial_threshold_is_the_reference_histogram_rule(seed):
    rng = np.random.default_rng(seed)
    img = np.cumsum(rng.standard_normal((60, 70)), axis=1) * 0.02  # textured, all orientations
    img += 0.3 * rng.random((60, 70))
    px, py = ks.valid_gradients(img)
    got = ks.initial_gradient_threshold(px, py, 7)
    want = literal_initial_threshold(px, py, 7)
    assert want > 0
    assert got == pytest.approx(want, abs=1e-12)


def test_select_gradients_lowers_a_threshold_that_removes_everything():
    rng = np.random.default_rng(5)
    px, py = rng.random((10, 10)) * 0.1, rng.random((10, 10)) * 0.1
    pm = px**2 + py**2
    qx, qy, used = ks.select_gradients(px, py, 10.0)
    assert used < pm.max() and used >= pm.max() * 0.81 * 0.999
    keep = pm >= used
    assert keep.any()
    np.testing.assert_array_equal(qx, np.where(keep, px, 0))
    np.testing.assert_array_equal(qy, np.where(keep, py, 0))
    qx, qy, used = ks.select_gradients(px, py, 0.01)
    assert used == 0.01
    np.testing.assert_array_equal(qx != 0, pm >= 0.01)


def test_clean_kernel_drops_small_components_and_weak_entries():
    k = np.zeros((9, 9))
    k[3:6, 3:6] = 1.0  # main blob, mass 9
    k[0, 8] = 0.5  # isolated: 0.5 / 9.5 ≈ 0.05 < 0.1 after the first renormalisation
    k[8, 0] = 0.02  # below 5 % of the max: zeroed first
    k[7, 7] = -0.3  # negative: zeroed
    out = ks.clean_kernel(k)
    want = np.zeros((9, 9))
    want[3:6, 3:6] = 1 / 9
    np.testing.assert_allclose(out, want, atol=1e-15)


def test_clean_kernel_uses_8_connectivity():
    k = np.zeros((7, 7))
    k[1:6, 1] = 1.0  # main line, mass 5
    k[4, 4] = k[5, 5] = 0.35  # two diagonal neighbours: one component of mass 0.7 / 5.7 > 0.1
    out = ks.clean_kernel(k)
    assert out[4, 4] > 0 and out[5, 5] > 0
    assert out.sum() == pytest.approx(1.0)


def test_clean_kernel_keeps_the_heaviest_component_when_all_are_light():
    k = np.zeros((11, 11))
    for i, (r, c) in enumerate([(0, 0), (0, 5), (0, 10), (5, 0), (5, 5), (5, 10), (10, 0), (10, 5), (10, 10), (2, 8), (8, 2)]):
        k[r, c] = 1.0 + 0.01 * i  # eleven isolated taps, each < 0.1 of the total
    out = ks.clean_kernel(k)
    assert out[8, 2] == 1.0 and out.sum() == 1.0
