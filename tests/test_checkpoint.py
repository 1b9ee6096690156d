"""Model checkpoints: safetensors + kmsr JSON metadata, rebuilt through the plugin host."""

from __future__ import annotations

import json

import kmsr_backbones
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from kmsr_cli.checkpoint import FORMAT_NAME, load_model, read_model_meta, save_model
from kmsr_cli.errors import CliError
from kmsr_cli.plugin_host import PluginHost


@pytest.fixture(scope="module")
def host():
    h = PluginHost()
    h.pm.register(kmsr_backbones, name="backbones")
    h.collect()
    return h


def _tiny(seed=0, **opts):
    torch.manual_seed(seed)
    return kmsr_backbones.make_kmsr(2, **{"blocks": 2, "filters": 8, **opts})


def test_round_trip_gives_the_same_outputs(tmp_path, host):
    model = _tiny(variant="release")
    path = save_model(tmp_path / "m.safetensors", model, backbone="kmsr", extra={"step": 12, "degradation": {"degradation": "pool"}})
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind
    loaded, meta = load_model(path, backbone="kmsr", scale=2, host=host)
    assert (meta.backbone, meta.scale, meta.extra["step"]) == ("kmsr", 2, 12)
    assert meta.options == {"variant": "release", "blocks": 2, "filters": 8, "res_scale": 1.0}
    assert type(loaded) is type(model) and not loaded.training
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # The metadata is plain JSON in the safetensors header, readable without kmsr.
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    assert header["format"] == FORMAT_NAME and json.loads(header["kmsr"])["backbone"] == "kmsr"
    assert read_model_meta(path) == meta


def test_lr_backbone_round_trip(tmp_path, host):
    torch.manual_seed(0)
    model = kmsr_backbones.make_dbpn(4, variant="small", filters=8, feat=8)
    path = save_model(tmp_path / "d.safetensors", model, backbone="dbpn")
    loaded, meta = load_model(path, host=host)
    assert meta.options == {"variant": "small", "stages": 3, "filters": 8, "feat": 8}
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_overwrite_keeps_a_valid_file(tmp_path, host):
    path = tmp_path / "m.safetensors"
    save_model(path, _tiny(seed=0), backbone="kmsr", extra={"step": 1})
    save_model(path, _tiny(seed=1), backbone="kmsr", extra={"step": 2})
    assert read_model_meta(path).extra["step"] == 2


def test_checkpoint_for_another_backbone_or_options(tmp_path, host):
    path = save_model(tmp_path / "k.safetensors", _tiny(), backbone="kmsr")
    with pytest.raises(CliError, match=r"k\.safetensors: checkpoint is for backbone 'kmsr'.*expected 'edsr'"):
        load_model(path, backbone="edsr", host=host)
    with pytest.raises(CliError, match=r"k\.safetensors: .*built with blocks=2.*expected blocks=16"):
        load_model(path, options={"blocks": 16}, host=host)
    with pytest.raises(CliError, match=r"k\.safetensors: checkpoint is for scale x2, expected x4"):
        load_model(path, scale=4, host=host)


def test_weights_that_do_not_fit_the_declared_architecture(tmp_path, host):
    # Metadata says 3 blocks, tensors hold 2: the file is refused, naming it and the mismatch.
    path = save_model(tmp_path / "lie.safetensors", _tiny(), backbone="kmsr",
                      options={"variant": "edsr", "blocks": 3, "filters": 8, "res_scale": 1.0})
    with pytest.raises(CliError, match=r"lie\.safetensors: weights do not fit backbone 'kmsr'.*missing"):
        load_model(path, host=host)


def test_corrupt_foreign_and_missing_files(tmp_path, host):
    good = save_model(tmp_path / "good.safetensors", _tiny(), backbone="kmsr")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CliError, match=r"truncated\.safetensors: "):
        load_model(truncated, host=host)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 7 + b"not a checkpoint")
    with pytest.raises(CliError, match=r"garbage\.safetensors: not a readable safetensors file"):
        read_model_meta(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CliError, match=r"foreign\.safetensors: a safetensors file without kmsr metadata"):
        load_model(foreign, host=host)
    with pytest.raises(CliError, match=r"absent\.safetensors: no such file"):
        load_model(tmp_path / "absent.safetensors", host=host)


def test_backbone_not_installed(tmp_path, fresh_host):
    path = save_model(tmp_path / "k.safetensors", _tiny(), backbone="kmsr")
    with pytest.raises(CliError, match=r"k\.safetensors: checkpoint is for backbone 'kmsr', which is not installed"):
        load_model(path, host=fresh_host)


def test_options_must_be_json(tmp_path):
    with pytest.raises(CliError, match="options"):
        save_model(tmp_path / "x.safetensors", _tiny(), backbone="kmsr", options={"f": object()})
    assert not list(tmp_path.iterdir())
