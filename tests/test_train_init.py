"""`kmsr train --init`: start from a kmsr checkpoint or published weights; mismatches name a tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kmsr_cli.checkpoint import read_model_meta, save_model
from kmsr_cli.errors import CliError
from kmsr_cli.plugin_host import get_host
from kmsr_cli.train import TrainConfig, initialise_from, run_training


def _cfg(out, **kw):
    base = dict(backbone="kmsr", degradation="bicubic", scale=2, out=str(out),
                backbone_options={"blocks": 1, "filters": 8}, patch=32, batch=2, epochs=1, iters_per_epoch=2,
                lr=1e-12, seed=3, val=[], data=[])
    base.update(kw)
    return TrainConfig(**base)


def _saved(tmp_path, name="init.safetensors", **opts):
    host = get_host()
    torch.manual_seed(7)
    model = host.get("backbones", "kmsr").create(scale=2, **({"blocks": 1, "filters": 8} | opts))
    return model, save_model(tmp_path / name, model, backbone="kmsr")


def test_init_from_checkpoint_starts_from_its_weights(tmp_path):
    src, path = _saved(tmp_path)
    # lr ~ 0: after two Adam steps the weights are still the init's, to float precision
    run_training(_cfg(tmp_path / "run", init=str(path)), get_host())
    out = load_file(str(tmp_path / "run" / "model.safetensors"))
    for k, v in src.state_dict().items():
        assert torch.allclose(out[k], v, atol=1e-6), k
    meta = read_model_meta(tmp_path / "run" / "model.safetensors")
    assert meta.extra["init"] == str(path)
    assert len(meta.extra["init_sha256"]) == 64


def test_without_init_the_weights_differ(tmp_path):
    src, _ = _saved(tmp_path)
    run_training(_cfg(tmp_path / "run"), get_host())
    out = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert not torch.allclose(out["head.weight"], src.state_dict()["head.weight"])


def test_init_of_other_options_names_the_tensor(tmp_path):
    _, path = _saved(tmp_path, filters=16)
    with pytest.raises(CliError, match=r"tensor 'head.weight' has shape \(16, 3, 3, 3\).*needs \(8, 3, 3, 3\)"):
        run_training(_cfg(tmp_path / "run", init=str(path)), get_host())
    assert not (tmp_path / "run").exists()


def test_init_with_fewer_blocks_names_the_missing_tensor(tmp_path):
    _, path = _saved(tmp_path, blocks=0)
    with pytest.raises(CliError, match=r"lack tensor 'body.0.conv1.weight'"):
        run_training(_cfg(tmp_path / "run", init=str(path)), get_host())


def test_init_of_another_backbone_or_scale(tmp_path):
    _, path = _saved(tmp_path)
    with pytest.raises(CliError, match=r"'kmsr' model, but --backbone is 'edsr'"):
        run_training(_cfg(tmp_path / "r1", backbone="edsr", init=str(path)), get_host())
    with pytest.raises(CliError, match=r"for x2, but --scale is 4"):
        run_training(_cfg(tmp_path / "r2", scale=4, init=str(path)), get_host())


def test_init_from_a_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(CliError, match="bad.safetensors"):
        run_training(_cfg(tmp_path / "run", init=str(bad)), get_host())
    with pytest.raises(CliError, match="expected a kmsr checkpoint"):
        run_training(_cfg(tmp_path / "run", init="no-such-thing"), get_host())


def test_init_from_published_carn_m(tmp_path, shared_data):
    npz = shared_data / "weights" / "carn" / "carn_m_state_dict.npz"
    model = get_host().get("backbones", "carn_m").create(scale=4)
    info = initialise_from(model, f"carn_m:{npz}", backbone="carn_m", scale=4, host=get_host())
    assert info["tensors"] == len(model.state_dict())
    with np.load(npz) as z:  # the x4 branch and the body come from the file, unchanged
        for k in ("entry.weight", "b2.b1.body.2.weight", "upsample.up4.body.3.weight", "exit.bias"):
            assert np.array_equal(model.state_dict()[k].numpy(), z[k]), k


def test_init_published_weights_of_another_backbone(tmp_path, shared_data):
    npz = shared_data / "weights" / "carn" / "carn_m_state_dict.npz"
    model = get_host().get("backbones", "kmsr_lr").create(scale=4, blocks=1, filters=8)
    with pytest.raises(CliError, match=r"weights for backbone 'carn_m', but --backbone is 'kmsr_lr'"):
        initialise_from(model, f"carn_m:{npz}", backbone="kmsr_lr", scale=4, host=get_host())
    srcnn = shared_data / "weights" / "srcnn" / "srcnn_915_x4_oihw.npz"
    carn = get_host().get("backbones", "carn_m").create(scale=4)
    with pytest.raises(Exception, match="srcnn_915_x4_oihw.npz"):
        initialise_from(carn, f"carn_m:{srcnn}", backbone="carn_m", scale=4, host=get_host())


def test_init_through_the_cli(run_kmsr, tmp_path):
    _, path = _saved(tmp_path)
    r = run_kmsr("train", "--backbone", "kmsr", "--option", "blocks=1", "--option", "filters=8",
                 "--degradation", "bicubic", "--scale", "2", "--patch", "32", "--batch", "2", "--epochs", "1",
                 "--iters-per-epoch", "1", "--device", "cpu", "--init", str(path), "-o", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert "initialised from" in r.stderr
    r = run_kmsr("train", "--backbone", "kmsr", "--option", "blocks=2", "--option", "filters=8",
                 "--degradation", "bicubic", "--scale", "2", "--patch", "32", "--batch", "2", "--epochs", "1",
                 "--iters-per-epoch", "1", "--device", "cpu", "--init", str(path), "-o", str(tmp_path / "run2"))
    assert r.returncode == 1
    assert "body.1.conv1.weight" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run2").exists()


def test_kmsr_lr_costs_scale_squared_less():
    """The LR-input body: same blocks, output scale x larger, MACs per output pixel 1/s^2 (conv layers)."""
    host = get_host()
    up = host.get("backbones", "kmsr").create(scale=4, blocks=2, filters=16)
    lr = host.get("backbones", "kmsr_lr").create(scale=4, blocks=2, filters=16)
    assert host.get("backbones", "kmsr_lr").info["input"] == "lr"
    x = torch.rand(1, 3, 12, 12)
    assert lr(x).shape == (1, 3, 48, 48)

    def body_macs(model, h, w):
        macs = []

        def hook(mod, inp, out):
            macs.append(out.shape[-1] * out.shape[-2] * mod.weight.numel())

        hs = [m.register_forward_hook(hook) for m in model.body.modules() if isinstance(m, torch.nn.Conv2d)]
        model(torch.rand(1, 3, h, w))
        for hk in hs:
            hk.remove()
        return sum(macs[: 2 * 2])  # the residual blocks' convs

    assert body_macs(up, 48, 48) == 16 * body_macs(lr, 12, 12)


def test_init_with_another_variant_is_refused(tmp_path):
    """'edsr' and 'release' have the same tensors but different forward passes: shapes alone would pass."""
    _, path = _saved(tmp_path, variant="release")
    with pytest.raises(CliError, match=r"built with variant='release', this run has variant='edsr'"):
        run_training(_cfg(tmp_path / "run", init=str(path)), get_host())


def test_init_with_nan_weights_is_refused(tmp_path):
    model, _ = _saved(tmp_path)
    with torch.no_grad():
        model.head.weight[0, 0, 0, 0] = float("nan")
    path = save_model(tmp_path / "nan.safetensors", model, backbone="kmsr")
    with pytest.raises(CliError, match="nan.safetensors"):
        run_training(_cfg(tmp_path / "run", init=str(path)), get_host())


def test_resume_keeps_the_original_init(tmp_path):
    _, path = _saved(tmp_path)
    run_training(_cfg(tmp_path / "run", init=str(path), epochs=2, max_steps=2), get_host())
    run_training(_cfg(tmp_path / "run", epochs=2), get_host(), resume=True)
    assert read_model_meta(tmp_path / "run" / "model.safetensors").extra["init"] == str(path)
    with pytest.raises(CliError, match="started with --init"):
        run_training(_cfg(tmp_path / "run", epochs=3, init=str(tmp_path / "other.safetensors")), get_host(), resume=True)
