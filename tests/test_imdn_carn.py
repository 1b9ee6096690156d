"""IMDN and CARN-M: parameter counts, receptive fields by perturbation, the published weights
against their published Set5 figures, foreign files, and IMDN's comparison-only weights."""

from __future__ import annotations

import kmsr_backbones
import numpy as np
import pytest
import torch
from kmsr_backbones import published
from kmsr_backbones.carn import CARNM
from kmsr_backbones.imdn import IMDN
from test_backbones import measured_halo
from torch import nn

from kmsr_cli.errors import CliError
from kmsr_cli.plugin_host import PluginHost
from kmsr_ops.errors import KmsrInputError

COMPARISON_ONLY = "comparison only: the weights are never redistributed and kmsr never initialises a shipped model from them"
# Element counts of the published files (Zheng222/IMDN checkpoints; CARN-pytorch's carn_m.pth),
# the paper's "694K/703K/715K" and "412K" (CARN-M, x4 branch only; the file holds three).
IMDN_PARAMS = {2: 694_404, 3: 703_059, 4: 715_176}
CARN_M_PARAMS_MULTI_SCALE = 414_811
# Published Set5 Y-PSNR (IMDN: Hui et al. 2019, Table 3; CARN-M: Ahn et al. 2018, Table 4).
IMDN_SET5 = {2: 38.00, 3: 34.36, 4: 32.21}
CARN_M_SET5 = {2: 37.53, 3: 33.99, 4: 31.92}
SET5 = ("baby", "bird", "butterfly", "head", "woman")


@pytest.fixture(scope="module")
def host():
    h = PluginHost()
    h.pm.register(kmsr_backbones, name="backbones")
    h.check()
    h.collect()
    assert not h.errors, h.errors
    return h


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- sizes and registry


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imdn_parameter_count_is_the_published_one(scale):
    assert _n_params(IMDN(scale)) == IMDN_PARAMS[scale]


def test_carn_m_parameter_count_is_the_published_one():
    assert _n_params(CARNM(4, multi_scale=True)) == CARN_M_PARAMS_MULTI_SCALE


def test_the_published_files_hold_exactly_these_parameters(shared_data):
    for s in (2, 3, 4):
        path = shared_data / "weights" / "imdn" / f"IMDN_x{s}_state_dict.npz"
        if not path.exists():
            pytest.skip(f"published IMDN weights {path} are missing")
        with np.load(path) as z:
            assert sum(z[k].size for k in z.files) == IMDN_PARAMS[s]
        model = published.load_imdn_weights(path)
        assert model.scale == s and set(model.state_dict()) == set(np.load(path).files)
    carn = shared_data / "weights" / "carn" / "carn_m_state_dict.npz"
    if carn.exists():
        with np.load(carn) as z:
            assert sum(z[k].size for k in z.files) == CARN_M_PARAMS_MULTI_SCALE


def test_imdn_registration(host):
    bb = host.get("backbones", "imdn")
    info = bb.info
    assert (info["input"], info["channels"], info["scales"], info["size_multiple"]) == ("lr", "rgb", [2, 3, 4], 1)
    assert info["init_allowed"] is False and info["global_context"] is True
    assert "published_weights" in info
    rfs = []
    for s in info["scales"]:
        model = bb.create(scale=s)
        assert model.options == {k: v for k, v in info["options"].items() if k != "weights"}
        assert (model.input_kind, model.channels) == ("lr", "rgb")
        rfs.append(model.receptive_field)
    assert info["receptive_field"] == max(rfs) == 55
    # The licence caveat is said wherever the weights are offered.
    for text in (bb.description, info["weights_licence"], kmsr_backbones.imdn.__doc__,
                 published.load_imdn_weights.__doc__, published.__doc__):
        assert COMPARISON_ONLY in " ".join(text.split()), text[:80]


def test_imdn_options_are_checked():
    with pytest.raises(KmsrInputError, match="filters"):
        IMDN(2, filters=40)
    with pytest.raises(KmsrInputError, match="scale"):
        IMDN(5)
    small = IMDN(3, filters=16, modules=2)
    assert small(torch.rand(1, 3, 7, 9)).shape == (1, 3, 21, 27)


# --------------------------------------------------------------------------- receptive fields


class _NoAttention(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imdn_receptive_field_matches_a_one_pixel_perturbation(scale):
    torch.manual_seed(0)
    model = IMDN(scale, filters=16, modules=2)
    # The convolutions alone: the channel attention's global statistics are taken out.
    for i in range(1, 3):
        getattr(model, f"IMDB{i}").cca = _NoAttention()
    assert model.receptive_field == 2 * (1 + 4 * 2 + 2) + 1
    assert measured_halo(model, model.receptive_field + 8) == model.halo


def test_imdn_attention_is_global():
    """With its channel attention, a one-pixel change reaches every output pixel (hence global_context)."""
    torch.manual_seed(0)
    model = IMDN(2, filters=16, modules=1).double().eval()
    x = torch.rand(1, 3, 40, 40, dtype=torch.float64)
    x2 = x.clone()
    x2[..., 0, 0] += 0.5
    with torch.no_grad():
        d = (model(x2) - model(x)).abs().amax(dim=1)[0]
    assert (d > 0).all() and model.global_context


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_carn_m_receptive_field_matches_a_one_pixel_perturbation(scale, monkeypatch):
    torch.manual_seed(0)
    model = CARNM(scale, filters=8, groups=2)
    # In a network this small, ReLUs that are off for every channel at the fringe stop the
    # perturbation short of the field (16-20 of 21 at x2, by seed); the field is the reach of
    # the convolutions, so measure it with the ReLUs made the identity.
    assert measured_halo(model, model.receptive_field + 8) <= model.halo
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            for i, layer in enumerate(seq):
                if isinstance(layer, nn.ReLU):
                    seq[i] = nn.Identity()
    monkeypatch.setattr(torch, "relu", lambda x: x)  # the residual units' relu(body(x) + x)
    assert measured_halo(model, model.receptive_field + 8) == model.halo


# --------------------------------------------------------------------------- published figures


def _set5_psnr(shared_data, spec: str, scale: int, *, round_lr: bool = True) -> float:
    """Mean Y-PSNR on Set5 as published evaluations do it: MATLAB-bicubic LR, 8-bit unless
    ``round_lr`` is False, the whole image at once, ``scale`` pixels shaved."""
    from kmsr_cli.infer import super_resolve
    from kmsr_cli.models import resolve_model
    from kmsr_ops.image_io import read_image_array
    from kmsr_ops.metrics import psnr
    from kmsr_ops.resize import imresize, modcrop

    model = resolve_model(spec, scale=scale)
    assert model.input == "lr" and model.channels == "rgb"
    vals = []
    for name in SET5:
        png = shared_data / "sr" / "Set5" / f"{name}.png"
        if not png.exists():
            pytest.skip(f"Set5 image {png} is missing")
        hr = modcrop(read_image_array(png), scale)
        lr = np.clip(imresize(hr, 1.0 / scale), 0, 1)
        if round_lr:
            lr = np.rint(lr * 255) / 255
        out = super_resolve(model, lr, tile=0, fast=False)
        vals.append(psnr(hr * 255, out.astype(np.float64), crop_border=scale, test_y_channel=True))
    return float(np.mean(vals))


@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_published_imdn_on_set5(shared_data, scale):
    path = shared_data / "weights" / "imdn" / f"IMDN_x{scale}_state_dict.npz"
    if not path.exists():
        pytest.skip(f"published IMDN weights {path} are missing")
    # Measured: 38.01 / 34.36 / 32.20 with 8-bit LR (float LR: 38.04 / 34.38 / 32.22).
    assert abs(_set5_psnr(shared_data, f"imdn:{path}", scale) - IMDN_SET5[scale]) <= 0.15


@pytest.mark.slow
def test_published_carn_m_on_set5(shared_data):
    path = shared_data / "weights" / "carn" / "carn_m_state_dict.npz"
    if not path.exists():
        pytest.skip(f"published CARN-M weights {path} are missing")
    # x4: 31.88 dB (8-bit LR; 31.89 float). At x2 this protocol gives 37.69 (37.72 float), 0.16-0.19 dB
    # above the published 37.53, so only x4 is held to the 0.15 dB tolerance; x3 gives 34.07 (33.99).
    assert abs(_set5_psnr(shared_data, f"carn_m:{path}", 4) - CARN_M_SET5[4]) <= 0.15


# --------------------------------------------------------------------------- foreign files


def _srcnn_like_npz(path):
    rng = np.random.default_rng(0)
    shapes = {"conv1.weight": (64, 1, 9, 9), "conv1.bias": (64,), "conv2.weight": (32, 64, 1, 1),
              "conv2.bias": (32,), "conv3.weight": (1, 32, 5, 5), "conv3.bias": (1,)}
    np.savez(path, **{k: rng.normal(0, 0.1, v).astype(np.float32) for k, v in shapes.items()})
    return path


def test_foreign_files_are_refused_naming_the_file(tmp_path, host):
    srcnn = _srcnn_like_npz(tmp_path / "srcnn_915_x2_oihw.npz")
    with pytest.raises(KmsrInputError, match=r"srcnn_915_x2_oihw.npz: not IMDN weights"):
        published.load_imdn_weights(srcnn)
    with pytest.raises(KmsrInputError, match=r"srcnn_915_x2_oihw.npz: not CARN-M weights"):
        published.load_carn_m_weights(srcnn)
    with pytest.raises(KmsrInputError, match=r"srcnn_915_x2_oihw.npz"):
        host.get("backbones", "imdn").create(scale=2, weights=str(srcnn))
    with pytest.raises(KmsrInputError, match="nope.npz: no such file"):
        published.load_imdn_weights(tmp_path / "nope.npz")


def test_imdn_file_of_another_scale_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    model = IMDN(2)
    np.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})
    assert published.load_imdn_weights(path).scale == 2  # the upsampler's shape says x2
    with pytest.raises(KmsrInputError, match=r"weights.npz: the upsampler is for x2.*not x4"):
        published.load_imdn_weights(path, scale=4)
    np.savez(tmp_path / "extra.npz", **{k: v.numpy() for k, v in model.state_dict().items()}, stray=np.zeros(2))
    with pytest.raises(KmsrInputError, match=r"extra.npz: unexpected array 'stray'"):
        published.load_imdn_weights(tmp_path / "extra.npz")


def test_foreign_file_through_the_cli(run_kmsr, tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "a.png")
    srcnn = _srcnn_like_npz(tmp_path / "srcnn_915_x2_oihw.npz")
    for name in ("imdn", "carn_m"):
        r = run_kmsr("sr", "a.png", "-o", "b.png", "--model", f"{name}:{srcnn}", "--scale", "2")
        assert r.returncode == 1 and "srcnn_915_x2_oihw.npz" in r.stderr and "Traceback" not in r.stderr, r.stderr


# --------------------------------------------------------------------------- comparison only


def _imdn_npz(tmp_path, scale=2):
    path = tmp_path / f"IMDN_x{scale}_state_dict.npz"
    np.savez(path, **{k: v.numpy() for k, v in IMDN(scale).state_dict().items()})
    return path


def test_init_from_imdn_weights_is_refused(tmp_path):
    from kmsr_cli.train import initialise_from

    path = _imdn_npz(tmp_path)
    model = IMDN(2)
    h = PluginHost()
    h.pm.register(kmsr_backbones, name="backbones")
    h.collect()
    with pytest.raises(CliError, match="comparison only"):
        initialise_from(model, f"imdn:{path}", backbone="imdn", scale=2, host=h)
    with pytest.raises(CliError, match="comparison only"):  # even before the file is looked at
        initialise_from(model, "imdn:no-such.npz", backbone="imdn", scale=2, host=h)


@pytest.mark.parametrize("how", ["init", "option"])
def test_train_refuses_imdn_weights_through_the_cli(run_kmsr, tmp_path, how):
    path = _imdn_npz(tmp_path)
    args = ["--init", f"imdn:{path}"] if how == "init" else ["--option", f"weights={path}"]
    r = run_kmsr("train", "--backbone", "imdn", "--degradation", "bicubic", "--scale", "2", "--patch", "16",
                 "--batch", "1", "--epochs", "1", "--iters-per-epoch", "1", "--device", "cpu", *args,
                 "-o", str(tmp_path / "run"))
    assert r.returncode == 1, r.stderr
    assert "comparison only" in r.stderr and "never initialises a shipped model" in " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_imdn_weights_do_serve_for_comparison(tmp_path, host):
    """``sr``/``bench`` load them (NAME:WEIGHTS): comparison is what they are for."""
    from kmsr_cli.models import resolve_model

    srm = resolve_model(f"imdn:{_imdn_npz(tmp_path, 3)}", scale=3, host=host)
    assert (srm.input, srm.channels, srm.scale, srm.receptive_field, srm.global_context) == ("lr", "rgb", 3, 55, True)
