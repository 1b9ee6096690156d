"""kmsr_ops.noise: camera-noise sigma from photos.

The oracles are the sigmas of the Gaussian noise the tests add themselves (seeded), and, for
the photo test, a downscaled photo whose own noise is far below the added one.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from kmsr_ops.errors import KmsrInputError
from kmsr_ops.noise import MIN_BLOCKS, NoiseEstimate, estimate_noise, estimate_noise_many


def smooth_image(h: int = 258, w: int = 258, seed: int = 0) -> np.ndarray:
    """Noise-free (h, w, 3) image: low-frequency gradients and a few smooth blobs, in [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.empty((h, w, 3))
    for c in range(3):
        v = 0.3 + 0.25 * x * (c + 1) / 3 + 0.15 * np.sin(2.0 * y + c)
        for _ in range(4):
            cy, cx = rng.uniform(0.1, 0.9, size=2)
            s, a = rng.uniform(0.08, 0.2), rng.uniform(-0.15, 0.15)
            v = v + a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
        img[:, :, c] = v
    assert 0.1 <= img.min() and img.max() <= 0.9
    return img


@pytest.fixture(scope="module")
def astronaut_small() -> np.ndarray:
    """skimage's astronaut, area-averaged 4x down to 128x128: nearly noise-free, with texture."""
    data = pytest.importorskip("skimage.data")
    transform = pytest.importorskip("skimage.transform")
    return transform.downscale_local_mean(data.astronaut().astype(np.float64) / 255.0, (4, 4, 1))


def rel_err(est: NoiseEstimate, true) -> np.ndarray:
    return np.asarray(est.sigma) / np.broadcast_to(np.asarray(true, dtype=float), (len(est.sigma),)) - 1.0


# ---------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("sigma", [0.005, 0.01, 0.02, 0.04])
def test_smooth_image_known_sigma(sigma):
    base = smooth_image()
    noisy = base + np.random.default_rng(int(sigma * 1e4)).normal(0.0, sigma, base.shape)
    est = estimate_noise(noisy)
    assert len(est.sigma) == 3
    err = rel_err(est, sigma)
    assert np.all(np.abs(err) < 0.15), (sigma, est.sigma, err)
    # 16 x 16 tiles of the 256 x 256 valid region, 10 % of 256 kept.
    assert est.blocks_used == 26
    assert all(0.1 <= m <= 0.9 for m in est.mean_level)


def test_per_channel_sigmas():
    base = smooth_image(seed=1)
    true = np.array([0.01, 0.02, 0.03])
    noisy = base + np.random.default_rng(7).normal(0.0, 1.0, base.shape) * true
    est = estimate_noise(noisy)
    err = rel_err(est, true)
    assert np.all(np.abs(err) < 0.15), (est.sigma, err)
    assert est.sigma[0] < est.sigma[1] < est.sigma[2]


def test_flat_block_selection_does_not_bias_pure_noise():
    # On a constant image every tile is equally flat: keeping the flattest 10 % must not
    # favour tiles whose noise happened to be low (as ranking on the residual itself would).
    x = 0.5 + np.random.default_rng(3).normal(0.0, 0.02, (258, 258, 3))
    sel = estimate_noise(x, fraction=0.1)
    full = estimate_noise(x, fraction=1.0)
    assert full.blocks_used == 256
    assert np.all(np.abs(rel_err(full, 0.02)) < 0.02)
    assert np.all(np.abs(rel_err(sel, 0.02)) < 0.06), sel.sigma


def test_greyscale_and_float32():
    base = smooth_image()[:, :, 1].astype(np.float32)
    noisy = (base + np.random.default_rng(5).normal(0.0, 0.02, base.shape)).astype(np.float32)
    est = estimate_noise(noisy)
    assert len(est.sigma) == 1 and len(est.mean_level) == 1
    assert abs(est.sigma[0] / 0.02 - 1.0) < 0.15


def test_photo_with_texture(astronaut_small):
    clean = astronaut_small
    assert clean.shape == (128, 128, 3)
    # The clean photo's own residual is far below the noise added next.
    assert max(estimate_noise(clean).sigma) < 0.008
    errs = []
    for seed in range(5):
        noisy = np.clip(clean + np.random.default_rng(seed).normal(0.0, 0.02, clean.shape), 0.0, 1.0)
        est = estimate_noise(noisy)
        errs.append(rel_err(est, 0.02))
        assert np.all(np.abs(errs[-1]) < 0.20), (seed, est.sigma)
        assert est.blocks_used >= MIN_BLOCKS
    assert abs(np.mean(errs)) < 0.08
    # Without the flat-tile selection texture inflates the estimate (why the selection exists).
    everything = estimate_noise(noisy, fraction=1.0)
    assert everything.sigma_mean > 1.1 * 0.02


# ---------------------------------------------------------------------------- clipping


def test_mostly_saturated_image_uses_only_unclipped_blocks():
    rng = np.random.default_rng(11)
    img = np.ones((130, 130, 3))  # 8 x 8 tiles of 16 on the 128 x 128 valid region
    img[:, 97:] = np.clip(0.5 + rng.normal(0.0, 0.02, (130, 33, 3)), 0.0, 1.0)
    # Image columns 97.. hold the noise. The tile on valid columns 96..111 reads image
    # columns 96..113 (column 96 is saturated), so only the last tile column (valid 112..127,
    # image 112..129) is free of clipping: 8 tiles.
    est = estimate_noise(img)
    assert est.blocks_used == MIN_BLOCKS  # 8 unclipped tiles, 10 % of them < MIN_BLOCKS
    assert np.all(np.abs(rel_err(est, 0.02)) < 0.15), est.sigma  # saturated tiles would give 0
    assert all(abs(m - 0.5) < 0.01 for m in est.mean_level)
    assert estimate_noise(img, fraction=1.0).blocks_used == 8


def test_noise_clipped_near_white_is_excluded():
    # A bright half at 0.98 whose noise is clipped at 1 (so its spread is too small) beside
    # a mid-grey half: only mid-grey tiles may be used.
    rng = np.random.default_rng(12)
    img = np.full((130, 130, 3), 0.5)
    img[:, :65] = 0.98
    img = np.clip(img + rng.normal(0.0, 0.02, img.shape), 0.0, 1.0)
    est = estimate_noise(img, fraction=1.0)
    assert all(abs(m - 0.5) < 0.01 for m in est.mean_level)
    assert np.all(np.abs(rel_err(est, 0.02)) < 0.1)


def test_fully_clipped_image():
    with pytest.raises(KmsrInputError, match="clipped"):
        estimate_noise(np.ones((40, 40, 3)))
    with pytest.raises(KmsrInputError, match="clipped"):
        estimate_noise(np.zeros((40, 40)))


# ---------------------------------------------------------------------------- many photos


def test_many_median_and_sums():
    base = smooth_image(130, 130)
    rng = np.random.default_rng(21)
    sigmas = [0.01, 0.02, 0.04]
    imgs = [base + rng.normal(0.0, s, base.shape) for s in sigmas]
    singles = [estimate_noise(im) for im in imgs]
    est = estimate_noise_many(imgs)
    assert est.blocks_used == sum(s.blocks_used for s in singles)
    for c in range(3):
        assert est.sigma[c] == pytest.approx(np.median([s.sigma[c] for s in singles]))
    assert np.all(np.abs(rel_err(est, 0.02)) < 0.15)
    # A fully clipped photo is skipped, not counted.
    with_white = estimate_noise_many([*imgs, np.ones_like(base)])
    assert with_white.blocks_used == est.blocks_used
    # Keywords reach each photo.
    assert estimate_noise_many(imgs, fraction=1.0).blocks_used == 3 * 64


def test_many_errors():
    base = smooth_image(40, 40)
    with pytest.raises(KmsrInputError):
        estimate_noise_many([])
    with pytest.raises(KmsrInputError, match="channel"):
        estimate_noise_many([base, base[:, :, 0]])
    with pytest.raises(KmsrInputError, match=r"images\[1\]"):
        estimate_noise_many([base, (base * 255).astype(np.uint8)])
    with pytest.raises(KmsrInputError, match="clipped"):
        estimate_noise_many([np.ones((40, 40, 3))])
    with pytest.raises(KmsrInputError, match="fraction"):
        estimate_noise_many([base], fraction=0.0)
    with pytest.raises(TypeError):
        estimate_noise_many([base], blok=8)


# ---------------------------------------------------------------------------- result type


def test_result_type():
    est = estimate_noise(smooth_image(66, 66) + np.random.default_rng(0).normal(0, 0.01, (66, 66, 3)))
    assert est.sigma_mean == pytest.approx(sum(est.sigma) / 3)
    d = json.loads(json.dumps(est.to_dict()))
    assert d["sigma"] == list(est.sigma)
    assert d["blocks_used"] == est.blocks_used
    assert d["mean_level"] == list(est.mean_level)
    assert d["sigma_mean"] == pytest.approx(est.sigma_mean)
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.blocks_used = 3


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "image, match",
    [
        (np.full((40, 40, 3), 128, dtype=np.uint8), "dtype"),
        (np.full((40, 40, 3), True), "dtype"),
        (np.full(40, 0.5), "shape"),
        (np.full((2, 40, 40, 3), 0.5), "shape"),
        (np.full((40, 40, 0), 0.5), "shape"),
        (np.full((17, 40, 3), 0.5), "too small"),
        (np.full((40, 17), 0.5), "too small"),
        (np.full((40, 40, 3), 1.5), r"\[0, 1\]"),
        (np.full((40, 40, 3), -0.1), r"\[0, 1\]"),
        (np.full((40, 40, 3), np.nan), "NaN"),
    ],
)
def test_bad_image(image, match):
    with pytest.raises(KmsrInputError, match=match):
        estimate_noise(image)
    assert issubclass(KmsrInputError, ValueError)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan"), True, "0.1", None])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        estimate_noise(np.full((40, 40), 0.5), fraction=fraction)


@pytest.mark.parametrize("block", [2, 0, 8.0, True])
def test_bad_block(block):
    with pytest.raises(ValueError, match="block"):
        estimate_noise(np.full((40, 40), 0.5), block=block)


def test_smallest_image_and_fraction_one():
    x = 0.5 + np.random.default_rng(2).normal(0.0, 0.02, (18, 18))
    est = estimate_noise(x, fraction=1)
    assert est.blocks_used == 1
    assert abs(est.sigma[0] / 0.02 - 1.0) < 0.3
