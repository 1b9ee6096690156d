"""Dark channel with argmin (van Herk Numba, sparse-table xp, SciPy baseline) against a brute-force
window scan, and the dark-pixel write-back against the reference loop run literally."""

from __future__ import annotations

import numpy as np
import pytest

from kmsr_ops import dark_channel as dc
from kmsr_ops.backend import cupy_status
from kmsr_ops.errors import KmsrInputError

IMPLS = {
    "numba": dc.dark_channel,
    "xp-numpy": dc.dark_channel_xp,
    "scipy": dc.dark_channel_scipy,
}


def brute_force(img: np.ndarray, w: int):
    """Scan every window of the replicate-padded image; the argmin is the first minimum in
    column-major order (MATLAB's min(patch(:))). Positions in padded-frame image coordinates."""
    r = w // 2
    H, W = img.shape
    pad = np.pad(img, r, mode="edge")
    J = np.empty_like(img)
    rows = np.empty((H, W), np.int64)
    cols = np.empty((H, W), np.int64)
    for m in range(H):
        for n in range(W):
            patch = pad[m : m + w, n : n + w]
            flat = patch.T.ravel()  # column-major
            i = int(np.argmin(flat))
            c, rr = divmod(i, w)
            J[m, n] = patch[rr, c]
            rows[m, n] = m + rr - r
            cols[m, n] = n + c - r
    return J, rows, cols


CASES = [((23, 31), 5), ((40, 37), 35), ((9, 7), 11), ((1, 6), 3), ((16, 16), 1), ((50, 20), 9)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape,w", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_brute_force_scan(impl, shape, w, ties, dtype):
    rng = np.random.default_rng(hash((shape, w, ties)) % 2**32)
    img = rng.random(shape)
    if ties:
        img = np.round(img * 3) / 3  # many equal minima: the tie rule matters
    img = img.astype(dtype)
    J_ref, r_ref, c_ref = brute_force(img, w)
    J, rows, cols = IMPLS[impl](img, w, clip=False)
    assert J.dtype == img.dtype and J.shape == img.shape
    np.testing.assert_array_equal(J, J_ref)  # exact: a minimum is one of the pixels
    np.testing.assert_array_equal(rows, r_ref)
    np.testing.assert_array_equal(cols, c_ref)


@pytest.mark.parametrize("impl", IMPLS)
def test_clipped_positions_point_inside_window_at_the_minimum(impl):
    rng = np.random.default_rng(3)
    img = rng.random((45, 52)).astype(np.float32)
    w, r = 35, 17
    J, rows, cols = IMPLS[impl](img, w)  # clip=True by default
    H, W = img.shape
    m, n = np.mgrid[0:H, 0:W]
    assert (rows >= 0).all() and (rows < H).all() and (cols >= 0).all() and (cols < W).all()
    assert (np.abs(rows - m) <= r).all() and (np.abs(cols - n) <= r).all()
    np.testing.assert_array_equal(img[rows, cols], J)


@pytest.mark.parametrize("impl", IMPLS)
def test_stack_equals_per_image(impl):
    rng = np.random.default_rng(5)
    imgs = rng.random((3, 30, 26))
    J, rows, cols = IMPLS[impl](imgs, 7)
    for i in range(3):
        Ji, ri, ci = IMPLS[impl](imgs[i], 7)
        np.testing.assert_array_equal(J[i], Ji)
        np.testing.assert_array_equal(rows[i], ri)
        np.testing.assert_array_equal(cols[i], ci)


@pytest.mark.parametrize("bad", [0, 4, -3, 2.0, True])
def test_bad_window_is_rejected(bad):
    with pytest.raises(KmsrInputError, match="window"):
        dc.dark_channel(np.zeros((5, 5)), bad)


def test_integer_image_is_rejected():
    with pytest.raises(KmsrInputError, match="floating"):
        dc.dark_channel(np.zeros((5, 5), np.uint8), 3)


# --------------------------------------------------------------------------- write-back
@pytest.mark.parametrize("shape,w", [((30, 40), 5), ((25, 25), 7), ((50, 44), 11), ((12, 9), 35)])
@pytest.mark.parametrize("offset", [0.0, 0.3], ids=["positive", "with-negatives"])
@pytest.mark.parametrize("thr", [1e-3, 0.01, 0.05, 1.0])
def test_sequential_write_back_equals_reference_loop(shape, w, offset, thr):
    rng = np.random.default_rng(7)
    S = rng.random(shape) - offset
    J, rows, cols = dc.dark_channel(S, w, clip=False)
    got = dc.assign_dark_pixels(S, J, rows, cols, thr, w)
    want = dc.assign_dark_pixels_reference(S, J, rows, cols, thr, w)
    np.testing.assert_array_equal(got, want)


def test_write_back_zeros_dark_pixels_and_keeps_the_border():
    rng = np.random.default_rng(11)
    S = 0.5 + 0.5 * rng.random((60, 60))
    S[30, 30] = 0.01  # one dark pixel: every window containing it has J = 0.01
    J, rows, cols = dc.dark_channel(S, 7, clip=False)
    u = dc.assign_dark_pixels(S, J, rows, cols, threshold=1e-3, window=7)
    assert u[30, 30] == 0.0
    changed = np.argwhere(u != S)
    assert changed.tolist() == [[30, 30]]  # the other windows have J >= 0.5, J² above the threshold
    S[1, 1] = 0.01  # inside the 3-pixel border strip: kept as it was
    J, rows, cols = dc.dark_channel(S, 7, clip=False)
    u = dc.assign_dark_pixels(S, J, rows, cols, threshold=1e-3, window=7)
    assert u[1, 1] == S[1, 1] and u[30, 30] == 0.0


def test_all_mode_writes_every_thresholded_argmin():
    rng = np.random.default_rng(13)
    S = rng.random((40, 33))
    w, r, thr = 9, 4, 0.01
    J, rows, cols = dc.dark_channel(S, w, clip=False)
    want = S.copy()
    hit = (J**2 < thr) & (J != 0) & (rows >= 0) & (rows < 40) & (cols >= 0) & (cols < 33)
    want[rows[hit], cols[hit]] = 0.0
    want[:r], want[-r:], want[:, :r], want[:, -r:] = S[:r], S[-r:], S[:, :r], S[:, -r:]
    got = dc.assign_dark_pixels(S, J, rows, cols, thr, w, mode="all")
    np.testing.assert_array_equal(got, want)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_status().ok, reason=f"needs CuPy and a CUDA device: {cupy_status().reason}")
@pytest.mark.parametrize("mode", dc.ASSIGN_MODES)
def test_cupy_matches_numpy(mode):
    import cupy as cp

    rng = np.random.default_rng(17)
    S = (rng.random((3, 70, 64)) - 0.1).astype(np.float32)
    J, rows, cols = dc.dark_channel(S, 35, clip=False)
    Jg, rg, cg = dc.dark_channel(cp.asarray(S), 35, clip=False)
    np.testing.assert_array_equal(cp.asnumpy(Jg), J)
    np.testing.assert_array_equal(cp.asnumpy(rg), rows)
    np.testing.assert_array_equal(cp.asnumpy(cg), cols)
    thr = np.array([1e-3, 0.02, 0.3])
    u = dc.assign_dark_pixels(S, J, rows, cols, thr, 35, mode=mode)
    ug = dc.assign_dark_pixels(cp.asarray(S), Jg, rg, cg, thr, 35, mode=mode)
    np.testing.assert_array_equal(cp.asnumpy(ug), u)
