"""Training degradations: pool blur against SciPy, bicubic against MATLAB's golden arrays,
decimation alignment, shapes, ranges, randomness and errors."""

from __future__ import annotations

import io

import kmsr_degradations
import numpy as np
import pytest
import scipy.io as sio
import torch
from kmsr_degradations.gaussian import gaussian_kernels
from PIL import Image
from scipy import ndimage
from scipy.signal import convolve2d

from kmsr_cli.plugin_host import PluginHost
from kmsr_ops.blur import blur
from kmsr_ops.colour import rgb2y
from kmsr_ops.errors import KmsrInputError
from kmsr_ops.kernels import anisotropic_gaussian_kernel, gaussian_kernel
from kmsr_ops.resize import imresize

BUILTINS = {"pool", "bicubic", "gaussian", "realistic"}
NEEDS_POOL = {"pool", "realistic"}


@pytest.fixture(scope="module")
def host():
    h = PluginHost()
    h.pm.register(kmsr_degradations, name="degradations")
    h.check()
    h.collect()
    assert not h.errors, h.errors
    return h


@pytest.fixture
def pool(random_kernels) -> np.ndarray:
    return random_kernels(7, 9, seed=3)  # asymmetric: a flipped or transposed kernel is caught


def gen(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_image(size: int, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """(3, size, size) float64 texture in [0, 1] with detail at every scale the tests look at."""
    rng = np.random.default_rng(seed)
    img = np.stack([ndimage.gaussian_filter(rng.random((size, size)), sigma, mode="wrap") for _ in range(3)])
    img -= img.min()
    return img / img.max()


def make(host, name, scale, input="upsampled", channels="rgb", pool=None, **opts):  # noqa: A002
    if name in NEEDS_POOL:
        opts.setdefault("kernels", pool)
    return host.get("degradations", name).create(scale=scale, input=input, channels=channels, **opts)


def scipy_blur(img: np.ndarray, k: np.ndarray, boundary: str) -> np.ndarray:
    """convolve2d(mode='same') of one channel, with NumPy's padding for the boundary."""
    if boundary == "zero":
        return convolve2d(img, k, mode="same")
    kk = k.shape[0]
    pad = (kk // 2, (kk - 1) // 2)
    return convolve2d(np.pad(img, (pad, pad), mode={"reflect": "reflect", "replicate": "edge"}[boundary]), k, mode="valid")


# --------------------------------------------------------------------------- registry


def test_registered_through_the_entry_point(monkeypatch):
    monkeypatch.setenv("KMSR_PLUGINS", "degradations")
    h = PluginHost()
    h.load_entry_points()
    h.collect()
    assert not h.errors, h.errors
    assert set(h.names("degradations")) == BUILTINS
    for name in BUILTINS:
        info = h.get("degradations", name).info
        assert info["needs_kernels"] == (name in NEEDS_POOL)
        assert set(info["inputs"]) == {"upsampled", "lr"} and set(info["channels"]) == {"rgb", "y"}


# --------------------------------------------------------------------------- pool


@pytest.mark.parametrize("boundary", ["reflect", "zero", "replicate"])
def test_pool_blur_matches_convolve2d(host, pool, boundary):
    hr = torch.from_numpy(np.stack([smooth_image(20, s, 1.0)[:, :, :17] for s in range(4)]))  # float64, odd width
    deg = make(host, "pool", 2, pool=pool, boundary=boundary)
    params = deg.sample(hr.shape, gen(5))
    x, y = deg.apply(hr, params)
    assert torch.equal(y, hr)
    idx = params["index"].tolist()
    assert len(set(idx)) > 1  # the batch really mixes kernels
    for b in range(hr.shape[0]):
        for c in range(3):
            ref = scipy_blur(hr[b, c].numpy(), pool[idx[b]].astype(np.float64), boundary)
            np.testing.assert_allclose(x[b, c].numpy(), ref, rtol=0, atol=1e-6)  # kernels are float32


def test_pool_per_channel_draws(host, pool):
    hr = torch.from_numpy(smooth_image(16)[None].repeat(2, 0))
    deg = make(host, "pool", 3, pool=pool, per_channel=True)
    params = deg.sample(hr.shape, gen(1))
    x, _ = deg.apply(hr, params)
    idx = params["index"].view(2, 3).tolist()
    assert any(len(set(row)) > 1 for row in idx)
    for b in range(2):
        for c in range(3):
            ref = scipy_blur(hr[b, c].numpy(), pool[idx[b][c]].astype(np.float64), "reflect")
            np.testing.assert_allclose(x[b, c].numpy(), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pool_for_lr_backbones_decimates_with_matlab_phase(host, pool, scale):
    hr = torch.from_numpy(smooth_image(24, 2)[None])
    deg = make(host, "pool", scale, input="lr", pool=pool)
    params = deg.sample(hr.shape, gen(2))
    x, y = deg.apply(hr, params)
    assert x.shape == (1, 3, 24 // scale, 24 // scale) and y.shape == hr.shape
    k = pool[int(params["index"][0])].astype(np.float64)
    if scale % 2 == 0:
        # Even scales: the kernel centred between pixels (2x2 box), as kmsr_ops/degrade.py explains.
        k = convolve2d(k, np.full((2, 2), 0.25))
    first = scale // 2
    for c in range(3):
        ref = scipy_blur(hr[0, c].numpy(), k, "reflect")[first::scale, first::scale]
        np.testing.assert_allclose(x[0, c].numpy(), ref, rtol=0, atol=1e-6)


def test_pool_draws_are_uniform_new_each_call_and_reproducible(host, pool):
    deg = make(host, "pool", 2, pool=pool)
    g = gen(11)
    idx = torch.cat([deg.sample((50, 3, 8, 8), g)["index"] for _ in range(40)])
    counts = np.bincount(idx.numpy(), minlength=len(pool))
    expected = len(idx) / len(pool)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 22.5  # chi-square, 6 degrees of freedom: p = 0.001
    hr = torch.rand(6, 3, 10, 10, dtype=torch.float64, generator=gen(0))
    a1, _ = deg(hr, gen(4))
    a2, _ = deg(hr, gen(4))
    assert torch.equal(a1, a2)
    g = gen(4)
    b1, _ = deg(hr, g)
    b2, _ = deg(hr, g)
    assert not torch.equal(b1, b2)


def test_pool_kernels_from_a_loader_are_read_once_and_lazily(host, pool):
    calls = []

    def loader():
        calls.append(1)
        return pool

    deg = make(host, "pool", 2, kernels=loader)
    assert calls == []
    for _ in range(3):
        deg(torch.rand(2, 3, 8, 8), gen())
    assert calls == [1]
    assert deg.config()["kernel_count"] == len(pool)


@pytest.mark.parametrize("input_kind", ["upsampled", "lr"])
def test_pool_bicubic_fraction_mixes_in_matlab_bicubic_pairs(host, pool, input_kind):
    hr = torch.from_numpy(np.stack([smooth_image(24, s, 1.0) for s in range(8)]))
    bic, _ = make(host, "bicubic", 2, input=input_kind)(hr)  # checked against MATLAB's arrays below
    allb, _ = make(host, "pool", 2, input=input_kind, pool=pool, bicubic_fraction=1.0)(hr, gen(0))
    np.testing.assert_allclose(allb.numpy(), bic.numpy(), rtol=0, atol=1e-12)

    deg = make(host, "pool", 2, input=input_kind, pool=pool, bicubic_fraction=0.5)
    assert deg.config()["bicubic_fraction"] == 0.5
    params = deg.sample(hr.shape, gen(3))
    mask = params["bicubic"].tolist()
    assert 0 < sum(mask) < len(mask)  # this seed mixes both kinds in one batch
    x, y = deg.apply(hr, params)
    assert torch.equal(y, hr)
    plain = make(host, "pool", 2, input=input_kind, pool=pool).apply(hr, {"index": params["index"]})[0]
    for b, is_bicubic in enumerate(mask):
        np.testing.assert_allclose(x[b].numpy(), (bic if is_bicubic else plain)[b].numpy(), rtol=0, atol=1e-12)


def test_realistic_bicubic_fraction_gives_bicubic_lr_before_noise(host, pool):
    # realistic quantises its LR to 8 bits (as a photo is), so the oracle is rounded too
    hr = torch.from_numpy(np.stack([smooth_image(24, s, 1.0) for s in range(3)]))
    bic, _ = make(host, "bicubic", 4, input="lr")(hr)
    x, _ = make(host, "realistic", 4, input="lr", pool=pool, bicubic_fraction=1.0, noise_max=0.0, jpeg_prob=0.0)(hr, gen(1))
    np.testing.assert_allclose(x.numpy(), (bic.clamp(0, 1) * 255).round().numpy() / 255, rtol=0, atol=1e-12)


def test_pool_bicubic_fraction_draws_and_checks(host, pool):
    deg = make(host, "pool", 2, pool=pool, bicubic_fraction=0.2)
    g = gen(7)
    frac = torch.cat([deg.sample((100, 3, 8, 8), g)["bicubic"] for _ in range(20)]).double().mean().item()
    assert abs(frac - 0.2) < 4 * (0.2 * 0.8 / 2000) ** 0.5  # binomial, 4 standard deviations
    assert "bicubic" not in make(host, "pool", 2, pool=pool).sample((4, 3, 8, 8), gen())
    with pytest.raises(KmsrInputError, match="bicubic_fraction"):
        make(host, "pool", 2, pool=pool, bicubic_fraction=1.5)
    with pytest.raises(KmsrInputError, match="multiples of 3"):  # bicubic samples are downscaled
        deg3 = make(host, "pool", 3, pool=pool, bicubic_fraction=0.5)
        deg3(torch.rand(1, 3, 10, 9))


def test_pool_errors(host, pool):
    with pytest.raises(KmsrInputError, match="kernels"):
        make(host, "pool", 2, kernels=None)
    even = np.full((2, 4, 4), 1 / 16)
    with pytest.raises(KmsrInputError, match="odd-sized"):
        make(host, "pool", 2, kernels=even)(torch.rand(1, 3, 8, 8))
    with pytest.raises(KmsrInputError, match="sum"):
        make(host, "pool", 2, kernels=pool * 2)(torch.rand(1, 3, 8, 8))
    with pytest.raises(KmsrInputError, match="pool_scale"):
        make(host, "pool", 2, pool=pool, pool_scale=4)
    with pytest.raises(KmsrInputError, match="multiples of 3"):
        make(host, "pool", 3, input="lr", pool=pool)(torch.rand(1, 3, 10, 9))
    with pytest.raises(KmsrInputError, match=r"\(B, 3, H, W\)"):
        make(host, "pool", 2, pool=pool)(torch.rand(1, 1, 8, 8))


# --------------------------------------------------------------------------- bicubic


GOLDEN = [("butterfly", 2), ("butterfly", 3), ("butterfly", 4), ("woman", 3)]


@pytest.mark.parametrize("name,scale", GOLDEN)
def test_bicubic_matches_matlab_golden_arrays(shared_data, host, name, scale):
    path = shared_data / "matlab" / f"{name}_GT_x{scale}.mat"
    if not path.exists():
        pytest.skip(f"golden MATLAB array {path} is missing")
    d = sio.loadmat(path)
    hr = torch.from_numpy(d["im_gt"].astype(np.float64) / 255).permute(2, 0, 1)[None]
    # LR RGB for LR-input backbones: MATLAB's imresize(im_gt, 1/s) (the .mat stores it clipped).
    x, y = make(host, "bicubic", scale, input="lr")(hr)
    np.testing.assert_allclose(np.clip(x[0].permute(1, 2, 0).numpy() * 255, 0, 255), d["im_l"], rtol=0, atol=1e-9)
    assert torch.equal(y, hr)
    # Upscaled back, RGB: the .mat's im_b is the same, clipped to [0, 255].
    x, _ = make(host, "bicubic", scale)(hr)
    np.testing.assert_allclose(np.clip(x[0].permute(1, 2, 0).numpy() * 255, 0, 255), d["im_b"], rtol=0, atol=1e-9)
    # Y for SRCNN/VDSR: input im_b_y, target im_gt_y.
    x, y = make(host, "bicubic", scale, channels="y")(hr)
    assert x.shape == y.shape == (1, 1, *d["im_gt_y"].shape)
    np.testing.assert_allclose(x[0, 0].numpy() * 255, d["im_b_y"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(y[0, 0].numpy() * 255, d["im_gt_y"], rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- gaussian


def test_gaussian_kernels_match_kmsr_ops():
    sx = torch.tensor([0.7, 1.3, 2.0, 1.1], dtype=torch.float64)
    sy = torch.tensor([0.7, 0.5, 1.2, 2.4], dtype=torch.float64)
    th = torch.tensor([0.0, 0.4, 2.0, 1.2], dtype=torch.float64)
    for size in (9, 10, 15):
        ks = gaussian_kernels(size, sx, sy, th)
        for i in range(4):
            ref = anisotropic_gaussian_kernel(size, float(sx[i]), float(sy[i]), float(th[i]))
            np.testing.assert_allclose(ks[i].numpy(), ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(ks[0].numpy(), gaussian_kernel(size, 0.7), rtol=0, atol=1e-12)


def test_gaussian_draws_follow_the_options(host):
    deg = make(host, "gaussian", 2, sigma_min=0.5, sigma_max=1.5, iso_prob=1.0)
    p = deg.sample((64, 3, 8, 8), gen(3))
    assert torch.equal(p["sigma_x"], p["sigma_y"]) and bool((p["theta"] == 0).all())
    assert 0.5 <= float(p["sigma_x"].min()) and float(p["sigma_x"].max()) < 1.5
    p = make(host, "gaussian", 2, iso_prob=0.0).sample((64, 3, 8, 8), gen(3))
    assert bool((p["sigma_x"] != p["sigma_y"]).all())
    # Fixed sigma (the paper's test sets): every kernel is the isotropic Gaussian of kmsr_ops.
    deg = make(host, "gaussian", 3, sigma_min=1.6, sigma_max=1.6, iso_prob=1.0)
    ks = deg.kernels(deg.sample((3, 3, 9, 9), gen(0)))
    for k in ks:
        np.testing.assert_allclose(k.numpy(), gaussian_kernel(deg.kernel_size, 1.6), rtol=0, atol=1e-12)


def subpixel_shift(a: np.ndarray, b: np.ndarray, r: int = 3, border: int = 10) -> tuple[tuple[int, int], tuple[float, float]]:
    """Integer argmax and parabolic sub-pixel peak of the normalised cross-correlation of b
    against a: c[dy, dx] correlates a(p) with b(p + d) over the interior, so a peak at d means
    b is a moved by +d."""
    h, w = a.shape
    ai = a[border:h - border, border:w - border]
    ai = (ai - ai.mean()) / ai.std()
    c = np.zeros((2 * r + 1, 2 * r + 1))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            bi = b[border + dy:h - border + dy, border + dx:w - border + dx]
            c[dy + r, dx + r] = float((ai * (bi - bi.mean()) / bi.std()).mean())
    iy, ix = np.unravel_index(np.argmax(c), c.shape)

    def vertex(m, z, p):
        return 0.5 * (m - p) / (m - 2 * z + p)

    sy = vertex(c[iy - 1, ix], c[iy, ix], c[iy + 1, ix]) if 0 < iy < 2 * r else 0.0
    sx = vertex(c[iy, ix - 1], c[iy, ix], c[iy, ix + 1]) if 0 < ix < 2 * r else 0.0
    return (int(iy) - r, int(ix) - r), (iy - r + sy, ix - r + sx)


@pytest.mark.parametrize("name", ["gaussian", "pool", "bicubic"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_decimated_lr_is_aligned_with_the_hr_grid(host, name, scale):
    """Blur a texture with a narrow kernel, decimate, upscale with MATLAB bicubic: the result must
    sit on the HR image, without the sub-pixel shift a wrong decimation phase gives."""
    hr_np = smooth_image(96, 7, sigma=2.5)
    hr = torch.from_numpy(hr_np[None])
    narrow = gaussian_kernel(7, 0.6)[None]
    opts = {"pool": {"kernels": narrow}, "gaussian": {"sigma_min": 0.6, "sigma_max": 0.6, "iso_prob": 1.0}}
    deg = make(host, name, scale, input="lr", **opts.get(name, {}))
    lr, _ = deg(hr, gen())
    up = imresize(lr, scale)
    whole, sub = subpixel_shift(hr_np[1], up[0, 1].numpy())
    assert whole == (0, 0)
    assert max(abs(sub[0]), abs(sub[1])) < 0.1, sub
    # The check sees misalignment: an odd kernel and every s-th pixel from pixel 0 (a common
    # shortcut) move the upscaled image by (s - 1)/2 HR pixels away from the origin.
    naive = imresize(blur(hr, torch.from_numpy(narrow))[..., ::scale, ::scale], scale)
    _, sub = subpixel_shift(hr_np[1], naive[0, 1].numpy())
    np.testing.assert_allclose(sub, [(scale - 1) / 2] * 2, atol=0.1)


def test_gaussian_lr_is_the_decimated_blur(host):
    hr = torch.from_numpy(smooth_image(30, 1)[None].repeat(2, 0))
    deg = make(host, "gaussian", 3, input="lr")
    params = deg.sample(hr.shape, gen(8))
    x, _ = deg.apply(hr, params)
    ks = deg.kernels(params).numpy()
    for b in range(2):
        for c in range(3):
            ref = scipy_blur(hr[b, c].numpy(), ks[b], "reflect")[1::3, 1::3]  # MATLAB's LR centres
            np.testing.assert_allclose(x[b, c].numpy(), ref, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- realistic


def test_realistic_noise_level_and_jpeg(host, pool):
    hr = torch.from_numpy(smooth_image(64, 4)[None].repeat(4, 0)).float()
    # Noise only: the residual against the clean pool LR has the requested sigma (plus 8-bit rounding).
    noisy = make(host, "realistic", 2, input="lr", pool=pool, noise_min=0.05, noise_max=0.05, jpeg_prob=0.0)
    clean = make(host, "pool", 2, input="lr", pool=pool)
    params = noisy.sample(hr.shape, gen(6))
    x, _ = noisy.apply(hr, params)
    ref, _ = clean.apply(hr, {"index": params["index"]})
    resid = (x - ref).double()
    inside = (ref > 0.15) & (ref < 0.85)  # away from clipping
    assert abs(float(resid[inside].std()) - np.hypot(0.05, 1 / 255 / np.sqrt(12))) < 0.003
    assert bool(((x * 255 - (x * 255).round()).abs() < 1e-4).all())  # 8-bit values
    # JPEG only: Pillow's own round trip of the clean 8-bit LR at the drawn quality.
    jpg = make(host, "realistic", 2, input="lr", pool=pool, noise_max=0.0, jpeg_prob=1.0, jpeg_min=30, jpeg_max=30)
    params = jpg.sample(hr.shape, gen(6))
    x, _ = jpg.apply(hr, params)
    assert params["jpeg_quality"].tolist() == [30] * 4
    ref, _ = clean.apply(hr, {"index": params["index"]})
    for b in range(4):
        u8 = (ref[b].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(u8).save(buf, format="JPEG", quality=30)
        expected = np.asarray(Image.open(buf).convert("RGB")).astype(np.float32) / 255
        np.testing.assert_allclose(x[b].permute(1, 2, 0).numpy(), expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- every degradation


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_shapes_dtypes_and_ranges(host, pool, name):
    hr = torch.rand(3, 3, 24, 24, generator=gen(0))
    for scale in (2, 3, 4):
        for inp in ("upsampled", "lr"):
            for ch in ("rgb", "y"):
                deg = make(host, name, scale, inp, ch, pool=pool)
                x, y = deg(hr, gen(1))
                c = 3 if ch == "rgb" else 1
                side = 24 if inp == "upsampled" else 24 // scale
                assert x.shape == (3, c, side, side) and y.shape == (3, c, 24, 24), (name, scale, inp, ch)
                assert x.dtype == y.dtype == torch.float32 and bool(torch.isfinite(x).all())
                if ch == "y":
                    torch.testing.assert_close(y, rgb2y(hr).unsqueeze(1))
                else:
                    assert torch.equal(y, hr)
                # Convex blurs stay in range; bicubic interpolation may overshoot a little.
                lo, hi = (16 / 255, 235 / 255) if ch == "y" else (0.0, 1.0)
                slack = 0.15 if (inp == "upsampled" and name != "pool") or name == "bicubic" else 1e-6
                assert float(x.min()) >= lo - slack and float(x.max()) <= hi + slack
                cfg = deg.config()
                assert (cfg["degradation"], cfg["scale"], cfg["input"], cfg["channels"]) == (name, scale, inp, ch)


def test_bad_options_are_named(host, pool):
    with pytest.raises(KmsrInputError, match="input"):
        make(host, "bicubic", 2, input="hr")
    with pytest.raises(KmsrInputError, match="channels"):
        make(host, "bicubic", 2, channels="rgba")
    with pytest.raises(KmsrInputError, match="sigma"):
        make(host, "gaussian", 2, sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(KmsrInputError, match="kernel_size"):
        make(host, "gaussian", 2, kernel_size=8)
    with pytest.raises(KmsrInputError, match="jpeg_min"):
        make(host, "realistic", 2, pool=pool, jpeg_min=0)
    with pytest.raises(KmsrInputError, match="boundary"):
        make(host, "pool", 2, pool=pool, boundary="wrap")
    with pytest.raises(KmsrInputError, match="multiples of 4"):
        make(host, "bicubic", 4)(torch.rand(1, 3, 10, 12))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for torch")
@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_cuda_matches_cpu(host, pool, name):
    hr = torch.rand(4, 3, 48, 48, generator=gen(0))
    for inp in ("upsampled", "lr"):
        deg = make(host, name, 2, inp, pool=pool)
        params = deg.sample(hr.shape, gen(2))
        x_cpu, _ = deg.apply(hr, params)
        x_gpu, y_gpu = deg.apply(hr.cuda(), {k: v.cuda() for k, v in params.items()})
        assert x_gpu.device.type == "cuda" and y_gpu.device.type == "cuda"
        # JPEG decisions can flip a rounding step between devices; everything else agrees closely.
        tol = 2 / 255 if name == "realistic" else 1e-5
        torch.testing.assert_close(x_gpu.cpu(), x_cpu, rtol=0, atol=tol)
