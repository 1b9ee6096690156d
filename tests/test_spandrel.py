"""``--model spandrel:PATH``: published models of any architecture spandrel recognises.

Tiny random-initialised models of three spandrel architectures (ESRGAN's RRDB net, SwinIR,
Real-ESRGAN's Compact net, one of them grey), saved as .pth, .ckpt and .safetensors, go through
``kmsr sr``, ``kmsr bench quality`` and ``kmsr bench real``; every expected image is a direct
forward pass of the network the test built, never kmsr's code. Bad files (an architecture
spandrel does not know, pickles ``weights_only`` refuses, TorchScript, damage) fail with one line,
exit 1, nothing written.

spandrel imports torchvision, which must be built for the installed torch. The project's main
venv (torch 2.13.0 CPU, no torchvision that imports beside it) skips the spandrel tests with the
reason; CI runs this file a second time in a venv with torch 2.14.1 + torchvision 0.29.1 +
spandrel (``.ci/run``). The tests of the missing-extra messages run everywhere.
"""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest
from conftest import cli_in_process
from PIL import Image

from kmsr_cli.errors import CliError
from kmsr_cli.models import resolve_model


def _spandrel_or_reason():
    try:
        import spandrel
    except Exception as exc:  # noqa: BLE001 - ImportError, or torchvision's RuntimeError for another torch: the skip reason
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return spandrel, ""


spandrel, _WHY = _spandrel_or_reason()
needs_spandrel = pytest.mark.skipif(
    spandrel is None,
    reason=f"spandrel (or the torchvision it imports) is not importable here ({_WHY}); "
           "pip install 'kmsr[spandrel]' with a torchvision built for this torch; .ci/run runs this file in such a venv")


def _lr(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A textured uint8 RGB image: a smooth pattern plus noise, so every network sees detail."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 3.0 + c) * np.cos(yy / 4.0 - c) for c in range(3)], axis=2)
    return np.clip(127 + 80 * base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _forward(net, lr_u8: np.ndarray, grey_model: bool = False) -> np.ndarray:
    """The oracle: ``net`` on the uint8 image (H, W, 3) / 255, clipped and rounded to uint8 (sH, sW, 3).
    A grey model runs on each of R, G and B by itself."""
    import torch

    x = torch.from_numpy(lr_u8.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        if grey_model:
            y = torch.cat([net(x[:, c : c + 1]) for c in range(3)], dim=1)
        else:
            y = net(x)
    return np.rint(np.clip(y[0].permute(1, 2, 0).numpy(), 0, 1) * 255).astype(np.uint8)


def _png(path, arr):
    Image.fromarray(arr).save(path)
    return path


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and all(ln.startswith(("error:", "try:")) for ln in lines), err
    return errors[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (path, network, facts we built it with): the networks are spandrel's own classes."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SwinIR import SwinIR

    root = tmp_path_factory.mktemp("spandrel-models")
    torch.manual_seed(0)
    built = {}
    # ESRGAN (RRDB) x4 as a plain torch.save'd state dict.
    net = ESRGAN(num_filters=8, num_blocks=1, scale=4).eval()
    torch.save(net.state_dict(), root / "rrdb_4x.pth")
    built["rrdb"] = (root / "rrdb_4x.pth", net, {"scale": 4, "multiple": 1, "global": False, "grey": False})
    # Real-ESRGAN's x2 RRDB: pixel-unshuffle by 2 in front, so inputs must be multiples of 4 (spandrel
    # reports it); saved as a .ckpt with the state dict wrapped as training code writes it.
    net = ESRGAN(in_nc=12, out_nc=3, num_filters=8, num_blocks=1, scale=4, shuffle_factor=2).eval()
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, root / "rrdb_unshuffle_2x.ckpt")
    built["rrdb_unshuffle"] = (root / "rrdb_unshuffle_2x.ckpt", net, {"scale": 2, "multiple": 4, "global": False, "grey": False})
    # SwinIR x2 (tiling discouraged, minimum side 16) as .safetensors.
    net = SwinIR(upscale=2, img_size=16, window_size=4, embed_dim=12, depths=[1], num_heads=[2], mlp_ratio=2,
                 upsampler="pixelshuffledirect").eval()
    save_file({k: v.contiguous().clone() for k, v in net.state_dict().items()}, str(root / "swinir_2x.safetensors"))
    built["swinir"] = (root / "swinir_2x.safetensors", net, {"scale": 2, "multiple": 1, "global": True, "grey": False})
    # A grey (1-channel) Compact net x2, wrapped under params_ema as Real-ESRGAN's releases are.
    net = Compact(num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=2, upscale=2).eval()
    torch.save({"params_ema": net.state_dict()}, root / "compact_grey_2x.pth")
    built["compact_grey"] = (root / "compact_grey_2x.pth", net, {"scale": 2, "multiple": 1, "global": False, "grey": True})
    return built


# --------------------------------------------------------------------------- what spandrel reports feeds kmsr
@needs_spandrel
@pytest.mark.parametrize("name", ["rrdb", "rrdb_unshuffle", "swinir", "compact_grey"])
def test_untiled_output_is_the_networks_forward_pass(models, name):
    from kmsr_cli.infer import super_resolve

    path, net, facts = models[name]
    srm = resolve_model(f"spandrel:{path}", scale=None)
    assert (srm.scale, srm.size_multiple, srm.global_context) == (facts["scale"], facts["multiple"], facts["global"])
    assert (srm.input, srm.channels) == ("lr", "rgb")
    lr = _lr(20, 28, seed=1)  # sides multiples of 4, over SwinIR's minimum of 16: no padding anywhere
    got = super_resolve(srm, lr / 255.0, tile=0, fast=False)
    want = _forward(net, lr, grey_model=facts["grey"])
    assert got.shape == want.shape == (20 * facts["scale"], 28 * facts["scale"], 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # float32 both ways; same op order
    assert np.mean(got != want) < 1e-3


@needs_spandrel
def test_grey_image_through_a_grey_model_is_its_grey_result(models):
    import torch

    from kmsr_cli.infer import super_resolve

    path, net, _ = models["compact_grey"]
    srm = resolve_model(f"spandrel:{path}", scale=2)
    grey = _lr(18, 22, seed=2)[..., 0]
    got = super_resolve(srm, grey / 255.0, tile=0, fast=False)
    with torch.no_grad():
        y = net(torch.from_numpy(grey.astype(np.float32) / 255.0)[None, None])[0, 0].numpy()
    assert got.shape == (36, 44, 1)
    assert np.abs(got[..., 0].astype(int) - np.rint(np.clip(y, 0, 1) * 255).astype(int)).max() <= 1


@needs_spandrel
def test_sizes_spandrel_requires_are_met_by_padding(models):
    """An image off the multiple-of-4 grid of the unshuffle RRDB: the forward pass of the edge-padded
    image, cropped back. One under SwinIR's minimum side: spandrel's own padded call."""
    import torch
    from spandrel import ModelLoader

    from kmsr_cli.infer import super_resolve

    path, net, _ = models["rrdb_unshuffle"]
    lr = _lr(19, 22, seed=3)
    padded = np.pad(lr, ((0, 1), (0, 2), (0, 0)), mode="edge")  # to 20 x 24
    want = _forward(net, padded)[: 19 * 2, : 22 * 2].astype(int)
    got = super_resolve(resolve_model(f"spandrel:{path}", scale=None), lr / 255.0, tile=0, fast=False)
    assert got.shape == (38, 44, 3)
    assert np.abs(got.astype(int) - want).max() <= 1

    path, _, _ = models["swinir"]
    desc = ModelLoader().load_from_file(path)  # spandrel's loader and call, as its own users run it
    lr = _lr(11, 13, seed=4)
    with torch.no_grad():
        y = desc(torch.from_numpy(lr.astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous())
    want = np.rint(y[0].permute(1, 2, 0).numpy() * 255).astype(int)
    got = super_resolve(resolve_model(f"spandrel:{path}", scale=None), lr / 255.0, tile=0, fast=False)
    assert got.shape == want.shape == (22, 26, 3)
    assert np.abs(got.astype(int) - want).max() <= 1


@needs_spandrel
def test_kmsr_sr_cli_tiled_and_fast_matches_the_forward_pass(models, capsys, tmp_path):
    path, net, _ = models["rrdb"]
    lr = _lr(24, 30, seed=4)
    src = _png(tmp_path / "photo.png", lr)
    want = _forward(net, lr).astype(int)
    # No --scale: the x4 comes from the file. Tiles of 32 output pixels with a margin of 96 output
    # (24 LR) pixels cover the RRDB's receptive field, so tiling is exact; the fast CPU path is on.
    for out, extra in (("whole.png", ()), ("tiled.png", ("--tile", "32", "--tile-overlap", "96"))):
        code, _, err = cli_in_process(capsys, "sr", src, "-o", tmp_path / out, "--model", f"spandrel:{path}", *extra)
        assert code == 0, err
        got = np.asarray(Image.open(tmp_path / out)).astype(int)
        assert got.shape == (96, 120, 3)
        assert np.abs(got - want).max() <= 1, out


@needs_spandrel
def test_bench_quality_scores_the_networks_own_output(models, capsys, tmp_path):
    hr_dir = tmp_path / "hr"
    hr_dir.mkdir()
    for i in range(2):
        _png(hr_dir / f"im{i}.png", _lr(40, 48, seed=10 + i))
    imgs = tmp_path / "imgs"
    sw, cg = models["swinir"][0], models["compact_grey"][0]
    code, out, err = cli_in_process(capsys, "bench", "quality", "--hr", hr_dir, "--scales", "2", "--kernels", "bicubic",
                                    "--models", f"bicubic,spandrel:{sw},grey=spandrel:{cg}", "--round-lr",
                                    "--out-images", imgs, "--device", "cpu", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert {r["model"] for r in doc["results"]} == {"bicubic", "swinir_2x", "grey"}
    assert [(m["name"], m["input"]) for m in doc["models"]] == [("bicubic", "upsampled"), ("swinir_2x", "lr"), ("grey", "lr")]
    for label, key in (("swinir_2x", "swinir"), ("grey", "compact_grey")):
        _, net, facts = models[key]
        for i in range(2):
            lr = np.asarray(Image.open(imgs / "bicubic" / "x2" / "_lr" / f"im{i}.png"))  # the LR it was fed (--round-lr)
            got = np.asarray(Image.open(imgs / "bicubic" / "x2" / label / f"im{i}.png")).astype(int)
            assert np.abs(got - _forward(net, lr, grey_model=facts["grey"]).astype(int)).max() <= 1, (label, i)


@needs_spandrel
def test_bench_real_scores_the_networks_own_output(models, capsys, tmp_path):
    from kmsr_ops.metrics import psnr

    path, net, _ = models["rrdb"]
    pairs = tmp_path / "Cam"
    (pairs / "HR").mkdir(parents=True)
    (pairs / "LR").mkdir()
    hr = _lr(64, 80, seed=20)
    lr = _lr(16, 20, seed=21)
    _png(pairs / "HR" / "a.png", hr)
    _png(pairs / "LR" / "a.png", lr)
    code, out, err = cli_in_process(capsys, "bench", "real", "--pairs", pairs, "--scale", "4",
                                    "--models", f"net=spandrel:{path}", "--device", "cpu", "--json")
    assert code == 0, err
    (row,) = json.loads(out)["results"]
    want = psnr(hr.astype(np.float64), _forward(net, lr).astype(np.float64), crop_border=4, test_y_channel=True)
    assert row["model"] == "net"
    assert row["psnr"] == pytest.approx(want, abs=0.02)  # a 1-level rounding difference moves it by less


@needs_spandrel
def test_the_onnx_fast_path_is_refused_not_frozen(models):
    """Traced graphs freeze size-dependent steps (SwinIR's attention masks): spandrel models refuse tracing,
    so the CPU fast path falls back to PyTorch and `kmsr export` says why."""
    import torch

    srm = resolve_model(f"spandrel:{models['swinir'][0]}", scale=2)
    with pytest.raises(CliError, match="PyTorch only"):
        torch.jit.trace(srm.module, torch.rand(1, 3, 16, 16))


# --------------------------------------------------------------------------- bad files
@needs_spandrel
def test_wrong_scale_is_refused_before_anything_is_written(models, capsys, tmp_path):
    out = tmp_path / "o.png"
    _png(tmp_path / "in.png", _lr(16, 16))
    code, _, err = cli_in_process(capsys, "sr", tmp_path / "in.png", "-o", out, "--model", f"spandrel:{models['rrdb'][0]}",
                                  "--scale", "2")
    assert code == 1 and not out.exists()
    assert "x4 ESRGAN model (spandrel says), not x2" in _one_error_line(err)
    code, _, err = cli_in_process(capsys, "bench", "quality", "--hr", tmp_path / "in.png", "--scales", "2", "--kernels",
                                  "bicubic", "--models", f"spandrel:{models['rrdb'][0]}", "--out-images", tmp_path / "imgs")
    assert code == 1 and not (tmp_path / "imgs").exists()
    assert "x4" in _one_error_line(err)


@needs_spandrel
def test_an_inpainting_model_is_refused_with_one_line(capsys, tmp_path):
    """LaMa (spandrel's MaskedImageModelDescriptor: it needs a mask) is not an SR model."""
    import torch
    from spandrel.architectures.LaMa import LaMa

    torch.save(LaMa(in_nc=4, out_nc=3).state_dict(), tmp_path / "lama.pth")
    out = tmp_path / "o.png"
    code, _, err = cli_in_process(capsys, "sr", _png(tmp_path / "in.png", _lr(16, 16)), "-o", out,
                                  "--model", f"spandrel:{tmp_path / 'lama.pth'}", "--scale", "2")
    assert code == 1 and not out.exists()
    line = _one_error_line(err)
    assert "LaMa Inpainting model (it needs a mask as well as the image)" in line and "image-to-image models only" in line


@needs_spandrel
def test_float16_is_refused_where_spandrel_says_the_model_does_not_support_it(models):
    """SwinIR's descriptor says no float16 (spandrel's supports_half); the network is never run in it.
    (On the CPU, ``kmsr sr --half`` is refused before this: --half runs on CUDA only.)"""
    import torch

    swinir = resolve_model(f"spandrel:{models['swinir'][0]}", scale=2)
    assert swinir.meta["spandrel"]["supports_half"] is False
    with pytest.raises(CliError, match="does not run in float16") as info:
        swinir.module(torch.zeros(1, 3, 16, 16, dtype=torch.float16))
    assert info.value.hint == "drop --half"
    rrdb = resolve_model(f"spandrel:{models['rrdb'][0]}", scale=4)
    assert rrdb.meta["spandrel"]["supports_half"] is True


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: the code a malicious .pth would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bad_files(tmp_path):
    import torch

    files = {}
    torch.save({"encoder.stem.weight": torch.zeros(4, 3, 3, 3), "encoder.stem.bias": torch.zeros(4)},
               tmp_path / "unknown.pth")
    files["unknown.pth"] = "does not recognise this architecture"
    marker = tmp_path / "pwned"
    torch.save({"weight": torch.zeros(2), "extra": _Payload(marker)}, tmp_path / "payload.pth")
    files["payload.pth"] = "weights_only=True"
    torch.save(torch.nn.Conv2d(3, 3, 3), tmp_path / "whole_module.pth")
    files["whole_module.pth"] = "weights_only=True"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 3)), str(tmp_path / "scripted.pt"))
    files["scripted.pt"] = "TorchScript"
    (tmp_path / "damaged.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\": {\"dtype\"")
    files["damaged.safetensors"] = "not a readable safetensors file"
    (tmp_path / "truncated.pth").write_bytes(b"PK\x03\x04garbage")
    files["truncated.pth"] = "not a readable PyTorch weights file"
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    files["model.onnx"] = "expected .pth, .pt, .ckpt, .safetensors"
    torch.save([torch.zeros(2)], tmp_path / "a_list.pth")
    files["a_list.pth"] = "holds a list, not a state dict"
    return files, marker


@needs_spandrel
def test_bad_files_fail_with_one_line_and_write_nothing(capsys, tmp_path):
    files, marker = _bad_files(tmp_path)
    src = _png(tmp_path / "in.png", _lr(16, 16))
    for name, reason in files.items():
        out = tmp_path / f"out_{name}.png"
        code, stdout, err = cli_in_process(capsys, "sr", src, "-o", out, "--model", f"spandrel:{tmp_path / name}")
        assert code == 1, (name, err)
        line = _one_error_line(err)
        assert reason in line and name in line, (name, line)
        assert not out.exists() and stdout == ""
    assert not marker.exists()  # the payload never ran ...
    import torch

    with pytest.raises(pickle.UnpicklingError):  # ... because weights_only refused it,
        torch.load(tmp_path / "payload.pth", weights_only=True)
    torch.load(tmp_path / "payload.pth", weights_only=False)  # where a plain unpickler runs it
    assert marker.exists()


@needs_spandrel
def test_bench_real_refuses_an_unknown_architecture_before_writing(capsys, tmp_path):
    files, _ = _bad_files(tmp_path)
    pairs = tmp_path / "Cam"
    (pairs / "HR").mkdir(parents=True)
    (pairs / "LR").mkdir()
    _png(pairs / "HR" / "a.png", _lr(64, 64))
    _png(pairs / "LR" / "a.png", _lr(16, 16))
    save = tmp_path / "strips"
    code, _, err = cli_in_process(capsys, "bench", "real", "--pairs", pairs, "--scale", "4",
                                  "--models", f"bicubic,spandrel:{tmp_path / 'unknown.pth'}", "--save", save)
    assert code == 1 and not save.exists()
    assert "does not recognise this architecture" in _one_error_line(err)


# --------------------------------------------------------------------------- without the extra (runs everywhere)
def test_missing_spandrel_names_the_extra(monkeypatch, tmp_path):
    (tmp_path / "m.pth").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "spandrel", None)  # `import spandrel` now raises ImportError
    with pytest.raises(CliError) as info:
        resolve_model(f"spandrel:{tmp_path / 'm.pth'}", scale=None)
    assert "needs spandrel, which is not installed" in str(info.value)
    assert info.value.hint.startswith("pip install 'kmsr[spandrel]'")


def test_a_torchvision_for_another_torch_is_named(monkeypatch, tmp_path):
    """PyPI's torchvision beside another torch fails with a RuntimeError while importing, not an ImportError."""

    class _BrokenTorchvision:
        def find_spec(self, name, path=None, target=None):
            if name == "spandrel":
                raise RuntimeError("operator torchvision::nms does not exist")
            return None

    (tmp_path / "m.pth").write_bytes(b"not read")
    monkeypatch.delitem(sys.modules, "spandrel", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenTorchvision(), *sys.meta_path])
    with pytest.raises(CliError) as info:
        resolve_model(f"spandrel:{tmp_path / 'm.pth'}", scale=None)
    assert "operator torchvision::nms does not exist" in str(info.value)
    assert "torchvision does not match this torch" in str(info.value)


def test_a_missing_file_is_named_before_spandrel_is_needed(capsys, tmp_path):
    code, _, err = cli_in_process(capsys, "sr", _png(tmp_path / "in.png", _lr(8, 8)), "-o", tmp_path / "o.png",
                                  "--model", f"spandrel:{tmp_path / 'nope.pth'}")
    assert code == 1 and not (tmp_path / "o.png").exists()
    assert "nope.pth: no such model file" in _one_error_line(err)
