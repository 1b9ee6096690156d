"""The dark-channel estimator end to end: known kernels recovered from blurred CC0 photos
(scikit-image's), the output contract, the backends agreeing, and the plugin host path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
from scipy.signal import correlate2d, fftconvolve

from kmsr_ops import blind_kernel as bk
from kmsr_ops.backend import cupy_status
from kmsr_ops.errors import KmsrInputError
from kmsr_ops.kernel_similarity import kernel_similarity
from kmsr_ops.kernels import anisotropic_gaussian_kernel, gaussian_kernel

PATCH = 160  # blurred patch side: big enough to hold structure, small enough to stay fast
K = 19  # estimated kernel size; the true kernels below reach at most ~13 px across


def grey(name: str) -> np.ndarray:
    img = getattr(skimage.data, name)()
    img = img.astype(np.float64) / 255.0
    return img.mean(axis=2) if img.ndim == 3 else img


def blurred_patch(img: np.ndarray, kernel: np.ndarray, centre=(0.5, 0.5)) -> np.ndarray:
    """'valid' convolution of a crop, so no border is invented; quantised to 8 bits like a photo."""
    h = PATCH + kernel.shape[0] - 1
    y0 = int((img.shape[0] - h) * centre[0])
    x0 = int((img.shape[1] - h) * centre[1])
    b = fftconvolve(img[y0 : y0 + h, x0 : x0 + h], kernel, mode="valid")
    return np.round(np.clip(b, 0, 1) * 255) / 255


def check_kernel_contract(k: np.ndarray, size: int) -> None:
    assert k.shape == (size, size) and k.dtype == np.float64
    assert np.isfinite(k).all() and (k >= 0).all()
    assert k.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.fixture(scope="module")
def estimator():
    from kmsr_darkchannel import DarkChannelEstimator

    return DarkChannelEstimator(kernel_size=K)


@pytest.mark.slow
@pytest.mark.parametrize(
    "photo,kernel",
    [
        ("camera", gaussian_kernel(13, 1.6)),
        ("astronaut", anisotropic_gaussian_kernel(15, 2.5, 1.0, 0.6)),
    ],
    ids=["gaussian-camera", "anisotropic-astronaut"],
)
def test_recovers_gaussian_kernels(estimator, photo, kernel):
    est = estimator.estimate(blurred_patch(grey(photo), kernel))
    check_kernel_contract(est, K)
    assert kernel_similarity(est, kernel) >= 0.9


@pytest.mark.slow
def test_recovers_a_levin_kernel_in_convolution_orientation(estimator, shared_data):
    path = shared_data / "kernels" / "levin09" / "levin09_kernel3.npy"
    if not path.is_file():
        pytest.skip(f"Levin kernels not found at {path}")
    kernel = np.load(path)  # 15x15 camera shake, convolution orientation
    est = estimator.estimate(blurred_patch(grey("camera"), kernel, centre=(0.45, 0.5)))
    check_kernel_contract(est, K)
    assert kernel_similarity(est, kernel) >= 0.9
    # Orientation: the estimate matches the kernel itself better than its 180° turn.
    norm = np.linalg.norm(est) * np.linalg.norm(kernel)
    straight = correlate2d(est, kernel, mode="full").max() / norm
    turned = correlate2d(est, kernel[::-1, ::-1], mode="full").max() / norm
    assert straight > turned + 0.05


def test_backends_agree_and_batches_equal_single_patches():
    kernel = anisotropic_gaussian_kernel(9, 1.6, 0.8, 0.4)
    img = grey("camera")
    a = fftconvolve(img[100:208, 150:258], kernel, mode="valid")
    b = fftconvolve(img[300:408, 250:358], kernel, mode="valid")
    p = bk.make_params("fast", kernel_size=11)
    fast = bk.estimate_kernels(np.stack([a, b]), p, backend="numba")
    xp_batch = bk.estimate_kernels(np.stack([a, b]), p, backend="xp")  # the GPU code, run by NumPy
    for i, patch in enumerate((a, b)):
        xp_one = bk.estimate_kernels(patch[None], p, backend="xp")[0]
        np.testing.assert_array_equal(xp_batch[i], xp_one)  # per-image masks keep images apart
        assert kernel_similarity(fast[i], xp_batch[i]) > 0.99  # float32 round-off only
        assert kernel_similarity(fast[i], kernel) > 0.9
    ref = bk.estimate_kernels(a[None], p, backend="reference")[0]  # float64 NumPy/SciPy baseline
    assert kernel_similarity(ref, fast[0]) > 0.99


def test_pyramid_matches_the_reference_formula():
    assert bk.pyramid_kernel_sizes(25) == [25, 19, 13, 9, 7]
    assert bk.pyramid_kernel_sizes(31) == [31, 23, 17, 11, 9, 7]
    assert bk.pyramid_kernel_sizes(5) == [5]


def test_initial_kernel_and_upsampling():
    k0 = bk.initial_kernel(7)
    assert k0.sum() == 1.0 and np.count_nonzero(k0) == 2 and k0[2, 2] == k0[2, 3] == 0.5
    up = bk.upsample_kernel(gaussian_kernel(9, 1.2), np.sqrt(0.5), 13)
    check_kernel_contract(up, 13)
    assert kernel_similarity(up, gaussian_kernel(13, 1.2 * np.sqrt(2))) > 0.99


def test_downsampled_level_size_and_mean():
    img = grey("camera")[:200, :180]
    low = bk.downsample_level(img, 0.5)
    # sigma = 1 px; the taps kept are those whose cumulative mass from either end exceeds
    # 5 %: -2..2. 'Valid' filtering leaves n - 4 pixels, sampled every second: floor((n - 5) / 2) + 1.
    assert low.shape == (98, 88)
    assert low.mean() == pytest.approx(img[2:-2, 2:-2].mean(), abs=0.01)


def test_bad_input_is_reported(estimator):
    with pytest.raises(KmsrInputError, match="greyscale"):
        estimator.estimate(np.zeros((40, 40, 3)))
    with pytest.raises(KmsrInputError, match="at least 39x39"):
        estimator.estimate(np.zeros((30, 60)))
    with pytest.raises(KmsrInputError, match="kernel_size"):
        estimator.estimate(np.zeros((64, 64)), kernel_size=8)
    with pytest.raises(KmsrInputError, match="unknown estimator parameter"):
        bk.make_params(lamda_dark=1e-3)
    with pytest.raises(KmsrInputError, match="schedule"):
        bk.make_params("slow")


def test_flat_patch_gives_a_valid_kernel(estimator):
    est = estimator.estimate(np.full((64, 64), 0.5), kernel_size=9)
    check_kernel_contract(est, 9)


def test_registered_and_usable_through_the_plugin_host():
    import kmsr_darkchannel

    from kmsr_cli.plugin_host import get_host

    assert kmsr_darkchannel.BACKENDS == bk.BACKENDS
    host = get_host(reload=True)
    backend = host.get("estimators", "dark-channel")
    assert backend.availability() == (True, "")
    est = backend.create(kernel_size=9, schedule="fast")
    rng = np.random.default_rng(0)
    sharp = rng.random((90, 90))
    patch = fftconvolve(sharp, gaussian_kernel(5, 1.0), mode="valid")
    k = est.estimate(patch, rng=rng)
    check_kernel_contract(k, 9)
    ks = est.estimate_batch(np.stack([patch, patch]), kernel_size=7)
    assert ks.shape == (2, 7, 7)
    params = json.loads(json.dumps(est.params()))
    assert params["estimator"] == "dark-channel" and params["kernel_size"] == 9
    assert params["lambda_dark"] == 4e-3 and params["window"] == 35 and params["schedule"] == "fast"
    cuda = host.get("estimators", "dark-channel-cuda")
    ok, reason = cuda.availability()
    assert ok == cupy_status().ok
    if not ok:
        assert "CuPy" in reason


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_status().ok, reason=f"needs CuPy and a CUDA device: {cupy_status().reason}")
def test_gpu_batch_agrees_with_cpu():
    img = grey("camera")
    kernel = gaussian_kernel(9, 1.3)
    patches = np.stack([fftconvolve(img[y : y + 138, 150:288], kernel, mode="valid") for y in (80, 200, 320)])
    p = bk.make_params("reference", kernel_size=15)
    cpu = bk.estimate_kernels(patches, p, backend="xp")
    gpu = bk.estimate_kernels(patches, p, backend="xp", device="cuda")
    for c, g in zip(cpu, gpu):
        assert kernel_similarity(c, g) > 0.99
