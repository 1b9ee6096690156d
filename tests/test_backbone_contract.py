"""The backbone contract end to end: every command feeds a backbone as its registration says.

A third-party backbone whose module is a plain torch module (no ``scale``, ``options``,
``input_kind`` or ``channels``) is trained and used through the CLI; module attributes may
refine the registration's numbers but not contradict its kinds.
"""

from __future__ import annotations

import importlib.util
import types

import numpy as np
import pytest
import torch
from conftest import EXAMPLE_BACKBONE_SRC
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from kmsr_cli.checkpoint import read_model_meta
from kmsr_cli.errors import CliError
from kmsr_cli.hookspecs import hookimpl
from kmsr_cli.models import backbone_convention, resolve_model


def _host_with(fresh_host, **backbones):
    """``fresh_host`` with backbones registered as NAME=(factory, info)."""

    def reg(register):
        for name, (factory, info) in backbones.items():
            register(name, factory, **info)

    plugin = types.ModuleType("thirdparty")
    plugin.kmsr_register_backbones = hookimpl(reg)
    fresh_host.register_plugin(plugin, name="thirdparty")
    fresh_host.collect()
    assert not fresh_host.errors, fresh_host.errors
    return fresh_host


LR_RGB = {"input": "lr", "channels": "rgb", "scales": [2, 4], "receptive_field": 5}


class _Tagged(nn.Module):
    """A module carrying whatever attributes it is given."""

    def __init__(self, **attrs):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.__dict__.update(attrs)

    def forward(self, x):
        return nn.functional.pixel_shuffle(self.conv(x), 2)


def test_convention_comes_from_the_registration(fresh_host):
    host = _host_with(fresh_host, plain=(lambda scale=2: nn.Conv2d(3, 3, 1), LR_RGB))
    bb = host.get("backbones", "plain")
    conv = backbone_convention(bb, bb.create(scale=2), scale=2)
    assert (conv.input, conv.channels, conv.scale, conv.receptive_field, conv.size_multiple) == ("lr", "rgb", 2, 5, 1)


def test_module_attributes_refine_the_numbers(fresh_host):
    host = _host_with(fresh_host, tagged=(lambda scale=2: _Tagged(scale=2, receptive_field=3, size_multiple=2,
                                                                  channels=64), LR_RGB))
    bb = host.get("backbones", "tagged")
    conv = backbone_convention(bb, bb.create(), scale=None)
    # channels=64 is a width, not a convention: ignored. The numbers are the module's.
    assert (conv.channels, conv.scale, conv.receptive_field, conv.size_multiple) == ("rgb", 2, 3, 2)


def test_a_module_contradicting_its_registration_is_refused(fresh_host):
    host = _host_with(fresh_host, liar=(lambda scale=2: _Tagged(input_kind="upsampled"), LR_RGB),
                      grey=(lambda scale=2: _Tagged(channels="y"), LR_RGB))
    with pytest.raises(CliError, match=r"backbone 'liar' \(plugin 'thirdparty'\).*input_kind='upsampled'.*input='lr'"):
        backbone_convention(host.get("backbones", "liar"), host.get("backbones", "liar").create(), scale=2)
    with pytest.raises(CliError, match=r"channels='y'.*channels='rgb'"):
        backbone_convention(host.get("backbones", "grey"), host.get("backbones", "grey").create(), scale=2)


def test_a_registration_without_the_convention_is_refused(fresh_host):
    host = _host_with(fresh_host, vague=(lambda scale=2: nn.Identity(), {"scales": [2]}),
                      odd=(lambda scale=2: nn.Identity(), {**LR_RGB, "channels": "bgr"}))
    with pytest.raises(CliError, match=r"'vague'.*must say input=.*does not declare it"):
        backbone_convention(host.get("backbones", "vague"), scale=2)
    with pytest.raises(CliError, match=r"'odd'.*channels=.*declares 'bgr'"):
        backbone_convention(host.get("backbones", "odd"), scale=2)
    with pytest.raises(CliError, match=r"supports scales 2, 4, not x3"):
        backbone_convention(_host_with(type(fresh_host)(), p=(lambda scale=2: nn.Identity(), LR_RGB)).get("backbones", "p"),
                            scale=3)


def test_published_weights_of_a_backbone_without_a_loader(run_kmsr, tmp_path):
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "w.npz").write_bytes(b"")
    r = run_kmsr("sr", "a.png", "-o", "b.png", "--model", "edsr:w.npz", "--scale", "2")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "TypeError" not in r.stderr
    first = r.stderr.strip().splitlines()[0]
    assert "backbone 'edsr' has no loader for published weights" in first and "srcnn" in first


def test_resolve_model_in_process(fresh_host):
    host = _host_with(fresh_host, plain=(lambda scale=2: nn.Conv2d(3, 3, 1), LR_RGB))
    with pytest.raises(CliError, match="no loader for published weights"):
        resolve_model("plain:x.npz", scale=2, host=host)


# --------------------------------------------------------------------------- the installed example plugin


def _example_factory():
    """The fixture's factory, loaded from its source file without putting it on sys.path."""
    spec = importlib.util.spec_from_file_location("_example_backbone_direct",
                                                  EXAMPLE_BACKBONE_SRC / "kmsr_example_backbone" / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_shuffle_net


def test_the_example_module_is_plain():
    net = _example_factory()(scale=2)
    for attr in ("scale", "options", "input_kind", "channels", "receptive_field"):
        assert not hasattr(net, attr), attr


@pytest.mark.slow
def test_third_party_lr_backbone_trains_and_super_resolves(run_kmsr, example_backbone_site, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "hr.png")
    lr_img = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(lr_img).save(tmp_path / "lr.png")

    r = run_kmsr("plugins", "--json", plugin_site=example_backbone_site)
    assert r.returncode == 0 and '"shuffle_net"' in r.stdout, r.stderr

    r = run_kmsr("train", "--backbone", "shuffle_net", "--degradation", "bicubic", "--scale", "2", "--data", "hr.png",
                 "--patch", "16", "--batch", "2", "--epochs", "1", "--iters-per-epoch", "2", "--lr", "1e-2",
                 "--device", "cpu", "-o", "run", plugin_site=example_backbone_site, timeout=300)
    assert r.returncode == 0, r.stderr
    ckpt = tmp_path / "run" / "model.safetensors"
    meta = read_model_meta(ckpt)
    # The module has no .options: the checkpoint records the options it was built with.
    assert (meta.backbone, meta.scale, meta.options, meta.extra["step"]) == ("shuffle_net", 2, {"filters": 8}, 2)

    r = run_kmsr("sr", "lr.png", "-o", "sr.png", "--model", str(ckpt), "--no-fast",
                 plugin_site=example_backbone_site)
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(tmp_path / "sr.png")).astype(np.int64)
    assert out.shape == (26, 34, 3)  # scale x the input

    net = _example_factory()(scale=2)
    state = load_file(str(ckpt))
    net.load_state_dict(state)
    assert not torch.equal(state["0.weight"], _example_factory()(scale=2).state_dict()["0.weight"])  # trained weights
    x = torch.from_numpy(lr_img.transpose(2, 0, 1)[None] / 255.0).float()
    with torch.no_grad():
        direct = net.eval()(x)[0].numpy().transpose(1, 2, 0)
    want = np.rint(np.clip(direct, 0, 1) * 255).astype(np.int64)
    # Fed the LR image itself (not the bicubic upscaling): equal to the module run directly.
    assert np.abs(out - want).max() <= 1 and (out == want).mean() > 0.99


class _NeedsMultiple(nn.Module):
    """1x1 conv and a pixel shuffle that refuses input sides that are not multiples of 4."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 1)

    def forward(self, x):
        if x.shape[-2] % 4 or x.shape[-1] % 4:
            raise ValueError(f"sides must be multiples of 4, got {tuple(x.shape[-2:])}")
        return nn.functional.pixel_shuffle(self.conv(x), 2)


@pytest.mark.parametrize("tile", [0, 16])
def test_size_multiple_is_honoured_by_sr(fresh_host, tile):
    from kmsr_cli.infer import super_resolve

    torch.manual_seed(0)
    net = _NeedsMultiple()
    host = _host_with(fresh_host, mult=(lambda scale=2: net, {**LR_RGB, "receptive_field": 1, "size_multiple": 4}))
    bb = host.get("backbones", "mult")
    conv = backbone_convention(bb, bb.create(), scale=2)
    assert conv.size_multiple == 4
    from kmsr_cli.infer import SRModel

    srm = SRModel(net, scale=2, input=conv.input, channels=conv.channels, receptive_field=1, size_multiple=4)
    img = np.random.default_rng(1).random((13, 18, 3))
    out = super_resolve(srm, img, tile=tile, overlap=1, fast=False)
    assert out.shape == (26, 36, 3)
    padded = np.pad(img, ((0, 3), (0, 2), (0, 0)), mode="edge").transpose(2, 0, 1)[None]
    with torch.no_grad():
        direct = net(torch.from_numpy(padded).float())[0].numpy().transpose(1, 2, 0)[:26, :36]
    np.testing.assert_array_equal(out, np.rint(np.clip(direct, 0, 1) * 255).astype(np.uint8))
