"""Tiled inference equals untiled inference; models are fed by their declared convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kmsr_cli.infer import SRModel, plan_tiles, super_resolve
from kmsr_ops.colour import rgb2ycbcr, ycbcr2rgb
from kmsr_ops.errors import KmsrInputError
from kmsr_ops.resize import imresize


def _convnet(cin, cout, layers=3, upscale=1, seed=0):
    """A small random CNN: each 3x3 conv adds 1 pixel of receptive-field radius."""
    torch.manual_seed(seed)
    mods = []
    c = cin
    for i in range(layers):
        last = i == layers - 1
        co = cout * upscale * upscale if last else 8
        mods.append(nn.Conv2d(c, co, 3, padding=1))
        if not last:
            mods.append(nn.ReLU())
        c = co
    if upscale > 1:
        mods.append(nn.PixelShuffle(upscale))
    net = nn.Sequential(*mods)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    return net


def _image(h, w, c, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.random((h // 4 + 1, w // 4 + 1, c))
    return np.clip(imresize(base, out_shape=(h, w)) + rng.normal(0, 0.05, (h, w, c)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("input_kind,channels", [("upsampled", "rgb"), ("upsampled", "y"), ("lr", "rgb"), ("lr", "y")])
def test_tiled_equals_untiled(input_kind, channels):
    s = 2
    cin = 3 if channels == "rgb" else 1
    net = _convnet(cin, cin, layers=3, upscale=s if input_kind == "lr" else 1)
    model = SRModel(net, scale=s, input=input_kind, channels=channels, receptive_field=7)
    img = _image(37, 45, 3)
    whole = super_resolve(model, img, tile=0, bit_depth=16)
    tiled = super_resolve(model, img, tile=24, overlap=8, bit_depth=16)
    assert whole.shape == (74, 90, 3) and whole.dtype == np.uint16
    # 16-bit quantisation of identical floats: equal, at most one level off from float noise
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_too_little_overlap_differs():
    # The margin must cover the receptive field; with none, tile edges see zero padding.
    model = SRModel(_convnet(3, 3, layers=4), scale=2, input="upsampled", channels="rgb")
    img = _image(30, 30, 3, seed=2)
    whole = super_resolve(model, img, tile=0, bit_depth=16).astype(int)
    bad = super_resolve(model, img, tile=20, overlap=0, bit_depth=16).astype(int)
    assert np.abs(whole - bad).max() > 10


def test_identity_model_gives_matlab_bicubic():
    # An identity network on an upsampled-input model: the output is imresize(LR, s), quantised.
    model = SRModel(nn.Identity(), scale=3, input="upsampled", channels="rgb")
    img = _image(20, 17, 3, seed=3)
    out = super_resolve(model, img, tile=16, overlap=0, bit_depth=16)
    want = np.rint(np.clip(imresize(img.astype(np.float64), 3), 0, 1) * 65535)
    # the network runs in float32: at most one 16-bit level from the float64 reference
    assert np.abs(out.astype(int) - want.astype(int)).max() <= 1


def test_y_model_only_touches_luma():
    # A Y network that adds 0.1 to Y: chroma equals bicubic chroma, Y is bicubic Y + 0.1.
    class AddY(nn.Module):
        def forward(self, x):
            return x + 0.1

    model = SRModel(AddY(), scale=2, input="upsampled", channels="y")
    img = _image(16, 16, 3, seed=4) * 0.6 + 0.2
    out = super_resolve(model, img, tile=0, bit_depth=16).astype(np.float64) / 65535
    ycc = rgb2ycbcr(imresize(img.astype(np.float64), 2))
    ycc[..., 0] += 0.1
    np.testing.assert_allclose(out, np.clip(ycbcr2rgb(ycc), 0, 1), atol=2e-5)


def test_grey_and_rgba_inputs():
    model = SRModel(nn.Identity(), scale=2, input="upsampled", channels="rgb")
    grey = _image(10, 12, 1, seed=5)
    out = super_resolve(model, grey, tile=0)
    assert out.shape == (20, 24, 1)
    rgba = np.concatenate([_image(20, 12, 3, seed=6), np.linspace(0, 1, 240).reshape(20, 12, 1)], axis=2).astype(np.float32)
    out = super_resolve(model, rgba, tile=16, overlap=4)
    assert out.shape == (40, 24, 4)
    want_alpha = np.rint(np.clip(imresize(rgba[..., 3].astype(np.float64), 2), 0, 1) * 255)
    np.testing.assert_array_equal(out[..., 3], want_alpha)


def test_progress_reports_every_tile():
    """``progress`` gets one sr.tile event per tile (74 x 90 output in 24-px tiles: 4 x 4), and the
    older ``on_tile`` keyword the same counts."""
    model = SRModel(_convnet(3, 3, layers=2), scale=2, input="upsampled", channels="rgb", receptive_field=5)
    events, old = [], []
    super_resolve(model, _image(37, 45, 3), tile=24, overlap=4, progress=events.append,
                  on_tile=lambda k, n: old.append((k, n)))
    assert [(e.stage, e.done, e.total) for e in events] == [("sr.tile", k, 16) for k in range(1, 17)]
    assert old == [(k, 16) for k in range(1, 17)]


def test_plan_tiles_cover_exactly_once():
    cover = np.zeros((70, 53), int)
    for t in plan_tiles(70, 53, 16):
        cover[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert (cover == 1).all()


def test_bad_arguments():
    model = SRModel(nn.Identity(), scale=2)
    with pytest.raises(KmsrInputError, match="--half runs on CUDA only"):
        super_resolve(model, _image(8, 8, 3), half=True)
    with pytest.raises(KmsrInputError, match="tile: expected 0 or at least 16"):
        super_resolve(model, _image(8, 8, 3), tile=4)
    with pytest.raises(KmsrInputError, match="model input"):
        SRModel(nn.Identity(), scale=2, input="hr")


def _dihedral_mean(net, x: torch.Tensor) -> torch.Tensor:
    """The x8 self-ensemble written out with torch ops: net on each flip/turn of x, mapped back."""
    outs = []
    for k in range(4):
        for flip in (False, True):
            t = torch.rot90(x, k, dims=(-2, -1))
            t = torch.flip(t, dims=(-1,)) if flip else t
            with torch.no_grad():
                y = net(t)
            y = torch.flip(y, dims=(-1,)) if flip else y
            outs.append(torch.rot90(y, -k, dims=(-2, -1)))
    return torch.stack(outs).mean(0)


@pytest.mark.parametrize("input_kind", ["upsampled", "lr"])
def test_ensemble_is_the_mean_over_flips_and_turns(input_kind):
    # A random CNN is not flip-equivariant, so the ensemble differs from one pass, and it must
    # equal the mean over the dihedral group computed directly (flips instead of transposes:
    # the same eight transforms), tiled or not.
    s = 2
    net = _convnet(3, 3, layers=3, upscale=s if input_kind == "lr" else 1, seed=3)
    model = SRModel(net, scale=s, input=input_kind, channels="rgb", receptive_field=7)
    img = _image(20, 28, 3, seed=4)
    x = img if input_kind == "lr" else imresize(img.astype(np.float64), s).astype(np.float32)
    want = _dihedral_mean(net, torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None])[0]
    want = np.rint(np.clip(want.numpy().transpose(1, 2, 0), 0, 1) * 65535)
    one = super_resolve(model, img, tile=0, bit_depth=16, fast=False)
    ens = super_resolve(model, img, tile=0, bit_depth=16, fast=False, ensemble=True)
    tiled = super_resolve(model, img, tile=16, overlap=8, bit_depth=16, fast=False, ensemble=True)
    assert np.abs(ens.astype(int) - want).max() <= 1
    assert np.abs(tiled.astype(int) - want).max() <= 1
    assert np.abs(one.astype(int) - want).max() > 100


def test_ensemble_of_bicubic_is_bicubic():
    model = SRModel(nn.Identity(), scale=3, name="bicubic")
    img = _image(17, 23, 3, seed=5)
    assert np.array_equal(super_resolve(model, img, tile=0, ensemble=True), super_resolve(model, img, tile=0))
