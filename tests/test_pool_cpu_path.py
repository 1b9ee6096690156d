"""The pool degradation's NumPy route on the CPU (taken for float batches without gradients)
gives SciPy's convolution, and the torch route (batches that need gradients) agrees with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kmsr_degradations.pool import PoolDegradation
from scipy.signal import convolve2d


def scipy_reflect_blur(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    p = k.shape[0] // 2
    return convolve2d(np.pad(img, p, mode="reflect"), k, mode="valid")


@pytest.fixture
def pool(random_kernels) -> np.ndarray:
    return random_kernels(6, 11, seed=5)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_route_matches_scipy(pool, per_channel, dtype):
    deg = PoolDegradation(2, "upsampled", "rgb", kernels=pool, per_channel=per_channel)
    # a non-contiguous batch (a transposed view), as flips and turns can produce
    hr = torch.rand(3, 3, 24, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64).transpose(-1, -2).to(dtype)
    params = deg.sample(tuple(hr.shape), torch.Generator().manual_seed(2))
    x, y = deg.apply(hr, params)
    assert x.dtype == dtype and x.shape == hr.shape and torch.equal(y, hr)
    idx = params["index"].numpy().reshape(3, -1)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for b in range(3):
        for c in range(3):
            k = pool[idx[b, c if per_channel else 0]]
            want = scipy_reflect_blur(hr[b, c].double().numpy(), k.astype(np.float64))
            assert np.abs(x[b, c].double().numpy() - want).max() < tol


def test_gradient_route_agrees_and_differentiates(pool):
    deg = PoolDegradation(3, "lr", "rgb", kernels=pool)
    hr = torch.rand(2, 3, 27, 27, generator=torch.Generator().manual_seed(3))
    params = deg.sample(tuple(hr.shape), torch.Generator().manual_seed(4))
    x_np, _ = deg.apply(hr, params)
    hr_g = hr.clone().requires_grad_(True)
    x_t, _ = deg.apply(hr_g, params)  # torch FFT route
    assert torch.allclose(x_t.detach(), x_np, atol=1e-5)
    x_t.sum().backward()
    # every blur kernel sums to 1, so the gradient of the total is a count of uses per pixel:
    # it sums to the number of kept LR pixels
    assert abs(float(hr_g.grad.sum()) - x_t.numel()) < 1e-3
