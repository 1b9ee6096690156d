"""``kmsr export``: ONNX graphs that ONNX Runtime runs like PyTorch eager, with the feeding convention.

Oracle: the PyTorch module itself, run eagerly on the same inputs (other sizes and a batch than
the export was traced and checked on).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import cli_in_process

ort = pytest.importorskip("onnxruntime", reason="kmsr export needs onnxruntime (pip install 'kmsr[fast]')")
onnx = pytest.importorskip("onnx", reason="kmsr export needs onnx (pip install 'kmsr[fast]')")


def props(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def check_against_eager(onnx_path, module, cin: int, shapes) -> float:
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    worst = 0.0
    for shape in shapes:
        x = rng.random((shape[0], cin, shape[1], shape[2]), dtype=np.float32)
        with torch.inference_mode():
            want = module(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"x": x})[0]
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def test_tiny_kmsr_checkpoint(capsys, tmp_path):
    from kmsr_cli.checkpoint import save_model
    from kmsr_cli.plugin_host import get_host

    torch.manual_seed(0)
    model = get_host().get("backbones", "kmsr").create(scale=2, blocks=2, filters=8).eval()
    ckpt = save_model(tmp_path / "tiny.safetensors", model, backbone="kmsr", scale=2)
    out = tmp_path / "tiny.onnx"
    code, stdout, stderr = cli_in_process(capsys, "export", str(ckpt), "-o", str(out), "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    md = props(out)
    assert md["kmsr.input"] == "upsampled" and md["kmsr.channels"] == "rgb" and md["kmsr.scale"] == "2"
    assert len(md["kmsr.source_sha256"]) == 64 and doc["max_abs_diff"] <= 1e-4
    assert check_against_eager(out, model, 3, [(1, 33, 70), (2, 64, 48)]) < 1e-4


def test_shipped_lr_input_model(capsys, tmp_path):
    from kmsr_cli.models import resolve_model

    out = tmp_path / "k2.onnx"
    code, stdout, stderr = cli_in_process(capsys, "export", "kmsr", "--scale", "2", "-o", str(out))
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    md = props(out)
    assert md["kmsr.input"] == "lr" and md["kmsr.scale"] == "2"
    import hashlib

    from kmsr_cli.models import shipped_model_path

    assert md["kmsr.source_sha256"] == hashlib.sha256(shipped_model_path("kmsr", 2).read_bytes()).hexdigest()
    module = resolve_model("kmsr", scale=2).module.eval()
    assert check_against_eager(out, module, 3, [(1, 31, 45), (2, 24, 24)]) < 1e-4


def test_y_channel_published_weights(capsys, tmp_path, shared_data):
    from kmsr_cli.models import resolve_model

    spec = f"srcnn:{shared_data / 'weights' / 'srcnn' / 'srcnn_915_x2_oihw.npz'}"
    out = tmp_path / "srcnn.onnx"
    code, _, stderr = cli_in_process(capsys, "export", spec, "--scale", "2", "-o", str(out))
    assert code == 0, stderr
    assert props(out)["kmsr.channels"] == "y"
    module = resolve_model(spec, scale=2).module.eval()
    assert check_against_eager(out, module, 1, [(1, 40, 52)]) < 1e-4


@pytest.mark.parametrize("args, code_wanted, match", [
    (("nope.safetensors", "-o", "m.onnx"), 1, "no such model file"),
    (("bicubic", "--scale", "2", "-o", "m.onnx"), 1, "not a network"),
    (("kmsr", "--scale", "2", "-o", "m.pt"), 2, "expected a .onnx path"),
])
def test_bad_input(capsys, tmp_path, monkeypatch, args, code_wanted, match):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = cli_in_process(capsys, "export", *args)
    assert code == code_wanted and match in stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_extra_names_the_install(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    code, _, stderr = cli_in_process(capsys, "export", "kmsr", "--scale", "2", "-o", str(tmp_path / "m.onnx"))
    assert code == 1 and "needs onnxruntime" in stderr and "kmsr[fast]" in stderr
    assert not (tmp_path / "m.onnx").exists()
