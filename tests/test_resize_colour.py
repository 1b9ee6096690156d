"""MATLAB-compatible imresize/modcrop and rgb2ycbcr against MATLAB's own golden arrays."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io as sio
import torch

from kmsr_ops.colour import rgb2y, rgb2ycbcr, ycbcr2rgb
from kmsr_ops.errors import KmsrInputError
from kmsr_ops.resize import imresize, modcrop, output_size

GOLDEN = [("butterfly", 2), ("butterfly", 3), ("butterfly", 4), ("woman", 3)]


def _golden(shared_data, name, scale):
    path = shared_data / "matlab" / f"{name}_GT_x{scale}.mat"
    if not path.exists():
        pytest.skip(f"golden MATLAB array {path} is missing")
    return sio.loadmat(path)


def _clip(lr):
    # The golden LR arrays were clipped to [0, 255] after imresize: woman's blue channel has
    # 19 pixels where bicubic overshoots below 0 and the .mat holds exactly 0.
    return np.clip(lr, 0, 255)


@pytest.mark.parametrize("name,scale", GOLDEN)
def test_numpy_downscale_matches_matlab(shared_data, name, scale):
    d = _golden(shared_data, name, scale)
    lr = imresize(d["im_gt"].astype(np.float64), 1 / scale)
    assert lr.shape == d["im_l"].shape
    np.testing.assert_allclose(_clip(lr), d["im_l"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name,scale", GOLDEN)
def test_torch_downscale_matches_matlab(shared_data, name, scale):
    d = _golden(shared_data, name, scale)
    t = torch.from_numpy(d["im_gt"].astype(np.float64)).permute(2, 0, 1)[None]  # (1, 3, H, W)
    lr = imresize(t, 1 / scale)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(_clip(lr), d["im_l"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name,scale", GOLDEN)
def test_bicubic_upscale_matches_matlab(shared_data, name, scale):
    d = _golden(shared_data, name, scale)
    y_lr = d["im_l_ycbcr"][..., 0]
    up = imresize(y_lr, scale) * 255
    assert up.shape == d["im_b_y"].shape
    np.testing.assert_allclose(up, d["im_b_y"], rtol=0, atol=1e-10)
    up_t = imresize(torch.from_numpy(y_lr), scale).numpy() * 255
    np.testing.assert_allclose(up_t, d["im_b_y"], rtol=0, atol=1e-10)


def test_output_size_is_matlab_ceil():
    assert output_size(255, 1 / 3) == 85
    assert output_size(256, 1 / 3) == 86
    assert imresize(np.zeros((256, 100)), 1 / 3).shape == (86, 34)
    assert imresize(np.zeros((5, 7, 3)), 2).shape == (10, 14, 3)


def test_integer_input_is_rounded_like_matlab():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    got = imresize(img, 0.5)
    assert got.dtype == np.uint8
    want = np.clip(np.round(imresize(img.astype(np.float64), 0.5)), 0, 255)
    np.testing.assert_array_equal(got, want)


def test_constant_image_stays_constant():
    # Bicubic weights sum to one: a flat image is a fixed point at any scale.
    for s in (0.25, 1 / 3, 0.5, 2, 3, 4):
        out = imresize(np.full((17, 23), 0.37), s)
        np.testing.assert_allclose(out, 0.37, atol=1e-12)


def test_out_shape_and_bad_arguments():
    assert imresize(np.zeros((10, 10)), out_shape=(5, 20)).shape == (5, 20)
    with pytest.raises(KmsrInputError, match="scale: expected a positive"):
        imresize(np.zeros((4, 4)), -2)
    with pytest.raises(KmsrInputError, match="give a scale or an out_shape"):
        imresize(np.zeros((4, 4)))
    with pytest.raises(KmsrInputError, match=r"x: expected a NumPy image \(H, W\)"):
        imresize(np.zeros((2, 4, 4, 3)), 2)


def test_modcrop():
    x = np.arange(7 * 11 * 3).reshape(7, 11, 3)
    np.testing.assert_array_equal(modcrop(x, 3), x[:6, :9])
    t = torch.zeros(2, 3, 7, 11)
    assert modcrop(t, 4).shape == (2, 3, 4, 8)
    with pytest.raises(KmsrInputError, match="scale: expected a positive integer"):
        modcrop(x, 2.5)
    with pytest.raises(KmsrInputError, match="smaller than the scale"):
        modcrop(np.zeros((2, 2)), 3)


@pytest.mark.parametrize("name,scale", GOLDEN)
def test_rgb2ycbcr_matches_matlab(shared_data, name, scale):
    d = _golden(shared_data, name, scale)
    y = rgb2y(d["im_gt"].astype(np.float64) / 255) * 255
    np.testing.assert_allclose(y, d["im_gt_y"], rtol=0, atol=1e-10)
    t = torch.from_numpy(d["im_gt"].astype(np.float64) / 255).permute(2, 0, 1)
    np.testing.assert_allclose(rgb2y(t).numpy() * 255, d["im_gt_y"], rtol=0, atol=1e-10)
    # im_l_ycbcr is MATLAB's rgb2ycbcr(imresize(im_gt/255, 1/s)), before any clipping.
    lr = imresize(d["im_gt"].astype(np.float64) / 255, 1 / scale)
    np.testing.assert_allclose(rgb2ycbcr(lr), d["im_l_ycbcr"], rtol=0, atol=1e-10)


def test_ycbcr_round_trip_and_known_values():
    # BT.601 studio range: black -> (16, 128, 128), white -> (235, 128, 128), pure red's Cr = 240.
    rgb = np.array([[[0, 0, 0], [1, 1, 1], [1, 0, 0]]], dtype=np.float64)
    ycc = rgb2ycbcr(rgb) * 255
    np.testing.assert_allclose(ycc[0, 0], [16, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[0, 1], [235, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[0, 2, 2], 240, atol=1e-9)
    rng = np.random.default_rng(0)
    x = rng.random((9, 7, 3))
    np.testing.assert_allclose(ycbcr2rgb(rgb2ycbcr(x)), x, atol=1e-12)
    assert rgb2ycbcr((x * 255).astype(np.uint8)).dtype == np.uint8
    with pytest.raises(KmsrInputError, match=r"expected an array \(\.\.\., 3\)"):
        rgb2ycbcr(np.zeros((4, 4, 4)))
