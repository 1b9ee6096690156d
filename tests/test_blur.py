"""Batched per-sample blur against scipy.signal.convolve2d, on every path."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import convolve2d

from kmsr_ops.backend import cupy_status, torch_cuda_status
from kmsr_ops.blur import BOUNDARIES, blur, blur_reference, choose_method
from kmsr_ops.errors import KmsrInputError

# (B, C, H, W, K): odd and even K, non-square images, B = 1, C = 1, K larger than the image.
SHAPES = [
    (2, 3, 20, 31, 5),
    (3, 2, 16, 16, 4),
    (1, 3, 33, 17, 25),
    (1, 1, 7, 9, 12),
    (2, 1, 5, 6, 11),
    (4, 3, 24, 24, 3),
]
NP_MODE = {"reflect": "reflect", "replicate": "edge", "zero": "constant"}


def _data(shape, dtype, seed=0):
    b, c, h, w, k = shape
    rng = np.random.default_rng(seed)
    x = rng.random((b, c, h, w)).astype(dtype)
    ks = rng.random((b, k, k)).astype(dtype)
    ks /= ks.sum(axis=(1, 2), keepdims=True)
    return x, ks


def _oracle(x, ks, boundary):
    """SciPy/NumPy oracle written independently of kmsr_ops.blur."""
    out = np.empty(x.shape, dtype=np.float64)
    k = ks.shape[-1]
    before, after = k // 2, (k - 1) // 2
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            img = x[b, c].astype(np.float64)
            ker = ks[b].astype(np.float64)
            if boundary == "zero":
                out[b, c] = convolve2d(img, ker, mode="same", boundary="fill")
            else:
                padded = np.pad(img, ((before, after), (before, after)), mode=NP_MODE[boundary])
                out[b, c] = convolve2d(padded, ker, mode="valid")
    return out


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("method", ["reference", "fft", "direct", "conv", "auto"])
def test_numpy_paths_match_convolve2d(shape, boundary, method):
    x, ks = _data(shape, np.float32)
    got = blur(x, ks, boundary, method=method)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, _oracle(x, ks, boundary), rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["fft", "direct", "conv"])
def test_float64_is_exact(method):
    x, ks = _data((2, 3, 19, 23, 7), np.float64)
    got = blur(x, ks, method=method)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, _oracle(x, ks, "reflect"), rtol=0, atol=1e-12)


def test_zero_boundary_is_convolve2d_same():
    # The documented alignment: scipy's mode="same" for odd and even kernels.
    for k in (4, 5):
        x, ks = _data((1, 1, 12, 14, k), np.float64, seed=k)
        want = convolve2d(x[0, 0], ks[0], mode="same")
        np.testing.assert_allclose(blur(x, ks, "zero", method="fft")[0, 0], want, atol=1e-12)


def test_each_sample_gets_its_own_kernel():
    # A delta kernel shifted differently per sample moves each image by its own offset.
    x, _ = _data((3, 1, 16, 16, 5), np.float64)
    ks = np.zeros((3, 5, 5))
    ks[0, 2, 2] = 1  # identity
    ks[1, 2, 3] = 1  # shift right by one
    ks[2, 3, 2] = 1  # shift down by one
    got = blur(x, ks, "zero", method="fft")
    np.testing.assert_allclose(got[0], x[0], atol=1e-12)
    np.testing.assert_allclose(got[1, 0, :, 1:], x[1, 0, :, :-1], atol=1e-12)
    np.testing.assert_allclose(got[2, 0, 1:, :], x[2, 0, :-1, :], atol=1e-12)


def test_reference_keeps_dtype():
    x, ks = _data((1, 1, 8, 8, 3), np.float32)
    assert blur_reference(x, ks).dtype == np.float32


def test_choose_method_prefers_fft_for_big_kernels():
    assert choose_method(25, np.float32) == "fft"
    assert choose_method(25, np.float64) == "fft"
    assert choose_method(3, np.float32) == "direct"
    assert choose_method(11, np.float32, torch_ok=True) == "conv"
    assert choose_method(11, np.float32, torch_ok=False) == "fft"
    assert choose_method(11, np.float64) == "direct"


# ----------------------------------------------------------------------------- torch
torch = pytest.importorskip("torch")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_torch_cpu_matches(shape, boundary):
    x, ks = _data(shape, np.float32)
    got = blur(torch.from_numpy(x), torch.from_numpy(ks), boundary)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), _oracle(x, ks, boundary), rtol=0, atol=1e-5)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("method", ["fft", "conv", "auto"])
def test_torch_paths_with_autograd(boundary, method):
    # Tensors that need gradients stay in torch (torch.fft or conv2d) so the blur is differentiable.
    x, ks = _data((2, 3, 18, 13, 6), np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    got = blur(xt, torch.from_numpy(ks), boundary, method=method)
    np.testing.assert_allclose(got.detach().numpy(), _oracle(x, ks, boundary), rtol=0, atol=1e-5)
    got.sum().backward()
    # Each input pixel's gradient is the total kernel weight that reaches it; for the interior
    # of a zero-padded blur, that is the kernel's sum (1).
    if boundary == "zero":
        g = xt.grad.numpy()
        np.testing.assert_allclose(g[:, :, 6:-6, 6:-6], 1.0, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch_cuda_status().ok, reason=f"torch CUDA path: {torch_cuda_status().reason}")
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_torch_cuda_matches(boundary):
    for shape in SHAPES:
        x, ks = _data(shape, np.float32)
        got = blur(torch.from_numpy(x).cuda(), torch.from_numpy(ks).cuda(), boundary)
        assert got.device.type == "cuda"
        np.testing.assert_allclose(got.cpu().numpy(), _oracle(x, ks, boundary), rtol=0, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_status().ok, reason=f"CuPy path: {cupy_status().reason}")
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_cupy_matches(boundary):
    import cupy

    for shape in SHAPES:
        x, ks = _data(shape, np.float32)
        got = blur(cupy.asarray(x), cupy.asarray(ks), boundary)
        assert isinstance(got, cupy.ndarray)
        np.testing.assert_allclose(cupy.asnumpy(got), _oracle(x, ks, boundary), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- bad input
def _bad(match, x, ks, **kw):
    with pytest.raises(KmsrInputError, match=match):
        blur(x, ks, **kw)


def test_bad_inputs_are_named():
    x, ks = _data((2, 3, 8, 8, 3), np.float32)
    _bad(r"images: expected shape \(B, C, H, W\)", x[0], ks)
    _bad(r"kernels: expected shape \(B, K, K\)", x, ks[:, :, :2])
    _bad(r"kernels: expected one kernel per image \(2\), found 1", x, ks[:1])
    _bad("images: the batch is empty", x[:0], ks[:0])
    nan = x.copy()
    nan[1, 2, 3, 4] = np.nan
    _bad("images: expected finite values", nan, ks)
    inf = ks.copy()
    inf[0, 0, 0] = np.inf
    _bad("kernels: expected finite values", x, inf)
    _bad(r"kernels\[1\]: expected a kernel that sums to 1", x, np.concatenate([ks[:1], ks[1:] * 2]))
    _bad("images: expected a floating-point array", (x * 255).astype(np.uint8), ks)
    _bad("boundary: expected one of reflect, replicate, zero", x, ks, boundary="wrap")
    _bad("method: expected one of", x, ks, method="magic")
    _bad("kernels: expected the same array type", x, torch.from_numpy(ks))


def test_check_sum_can_be_disabled_for_unnormalised_kernels():
    x, ks = _data((1, 1, 9, 9, 3), np.float64)
    got = blur(x, ks * 2, "zero", check_sum=False)
    np.testing.assert_allclose(got, 2 * _oracle(x, ks, "zero"), atol=1e-12)
