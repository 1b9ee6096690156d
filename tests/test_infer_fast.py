"""The fast CPU inference paths reproduce PyTorch eager, and fall back cleanly when they cannot."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d
from torch import nn

from kmsr_cli import infer
from kmsr_cli.infer import FAST_BACKENDS, SRModel, inference_backend, super_resolve
from kmsr_cli.plugin_host import get_host

HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
BACKENDS = [
    pytest.param("onnxruntime", marks=pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime/onnx not installed (extra 'fast')")),
    "channels_last",
]


@pytest.fixture
def records():
    """Log records of kmsr.infer (its own handler: the kmsr logger may not propagate to root)."""
    got: list[logging.LogRecord] = []

    class _H(logging.Handler):
        def emit(self, record):
            got.append(record)

    lg = logging.getLogger("kmsr.infer")
    h, old = _H(level=logging.DEBUG), lg.level
    lg.addHandler(h)
    lg.setLevel(logging.DEBUG)
    yield got
    lg.removeHandler(h)
    lg.setLevel(old)


def _kmsr(blocks=2, filters=16, seed=0):
    torch.manual_seed(seed)
    net = get_host().get("backbones", "kmsr").create(scale=2, blocks=blocks, filters=filters)
    return SRModel(net, scale=2, input=net.input_kind, channels=net.channels,
                   receptive_field=net.receptive_field, name="kmsr-test")


def _image(h, w, c=3, seed=0):
    return np.random.default_rng(seed).random((h, w, c)).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_equals_eager_on_kmsr(backend):
    model = _kmsr()
    x = np.random.default_rng(1).random((1, 3, 37, 53), dtype=np.float32)  # another shape than the probe
    with torch.inference_mode():
        want = model.module.eval()(torch.from_numpy(x)).numpy()
    got = FAST_BACKENDS[backend](model.module, 3)(x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_single_conv_matches_scipy(backend):
    # An independent oracle: one 3x3 convolution (torch correlates) against SciPy.
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    k = np.arange(9, dtype=np.float32).reshape(3, 3) / 36
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(k)[None, None])
    x = np.random.default_rng(2).random((1, 1, 21, 30), dtype=np.float32)
    got = FAST_BACKENDS[backend](conv.eval(), 1)(x)
    want = correlate2d(x[0, 0].astype(np.float64), k.astype(np.float64), mode="same", boundary="fill")
    assert np.abs(got[0, 0] - want).max() < 1e-5


def test_super_resolve_fast_equals_eager_and_tiles():
    model = _kmsr(seed=3)
    img = _image(30, 26, seed=4)
    fast = super_resolve(model, img, tile=24, overlap=12, bit_depth=16, fast=True)
    eager = super_resolve(model, img, tile=24, overlap=12, bit_depth=16, fast=False)
    assert inference_backend(model, fast=True) in FAST_BACKENDS
    # 1e-4 in [0, 1] is 6.6 levels of 16 bits
    assert np.abs(fast.astype(int) - eager.astype(int)).max() <= 7


@pytest.mark.parametrize("input_kind,channels", [("lr", "rgb"), ("upsampled", "y")])
def test_other_conventions_through_the_fast_path(input_kind, channels):
    torch.manual_seed(5)
    cin = 1 if channels == "y" else 3
    up = 2 if input_kind == "lr" else 1
    net = nn.Sequential(nn.Conv2d(cin, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, cin * up * up, 3, padding=1),
                        *( [nn.PixelShuffle(2)] if up > 1 else []))
    model = SRModel(net, scale=2, input=input_kind, channels=channels, receptive_field=5)
    img = _image(17, 22, seed=6)
    fast = super_resolve(model, img, tile=0, bit_depth=16, fast=True)
    eager = super_resolve(model, img, tile=0, bit_depth=16, fast=False)
    assert inference_backend(model) in FAST_BACKENDS
    assert np.abs(fast.astype(int) - eager.astype(int)).max() <= 7


def test_fast_off_by_flag_and_environment(monkeypatch):
    model = _kmsr()
    assert inference_backend(model, fast=False) == "eager"
    monkeypatch.setenv(infer.FAST_ENV, "0")
    assert inference_backend(model) == "eager"
    monkeypatch.setenv(infer.FAST_ENV, "1")
    assert inference_backend(model) in FAST_BACKENDS


def test_missing_runtime_falls_back_with_a_log_line(monkeypatch, records):
    def not_installed(module, channels, *rest, **kw):
        raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")

    monkeypatch.setitem(FAST_BACKENDS, "onnxruntime", not_installed)
    model = _kmsr()
    assert inference_backend(model) == "channels_last"
    msgs = [r.getMessage() for r in records]
    assert any("onnxruntime is not installed" in m and "channels_last" in m for m in msgs), msgs


def test_wrong_fast_path_is_rejected_and_eager_runs(monkeypatch, records):
    class Off:
        def __init__(self, module, channels, *rest, **kw):
            pass

        def __call__(self, x):
            return np.zeros_like(x)  # wrong output

    def broken(module, channels, *rest, **kw):
        raise RuntimeError("export failed")

    monkeypatch.setattr(infer, "FAST_BACKENDS", {"onnxruntime": broken, "channels_last": Off})
    model = _kmsr()
    img = _image(12, 12, seed=7)
    assert inference_backend(model) == "eager"
    msgs = " ".join(r.getMessage() for r in records)
    assert "export failed" in msgs and "differs from eager" in msgs and "PyTorch eager" in msgs
    eager = super_resolve(model, img, tile=0, bit_depth=16, fast=False)
    assert np.array_equal(super_resolve(model, img, tile=0, bit_depth=16), eager)


def test_cached_runner_follows_changed_weights():
    model = _kmsr(seed=8)
    img = _image(14, 16, seed=9)
    super_resolve(model, img, tile=0, bit_depth=16)  # builds and caches the fast runner
    with torch.no_grad():
        model.module.tail.weight.mul_(3.0)
        model.module.tail.bias.add_(0.05)
    fast = super_resolve(model, img, tile=0, bit_depth=16)
    eager = super_resolve(model, img, tile=0, bit_depth=16, fast=False)
    assert np.abs(fast.astype(int) - eager.astype(int)).max() <= 7


def test_onnx_graph_cached_by_network(tmp_path, monkeypatch):
    """The exported graph is reused by a later process (here: a fresh SRModel) for the same
    network, never for another one; a damaged cache file is replaced."""
    pytest.importorskip("onnxruntime", reason="the ONNX Runtime path needs onnxruntime (pip install 'kmsr[fast]')")
    import kmsr_cli.infer as infer

    monkeypatch.setenv("KMSR_CACHE_DIR", str(tmp_path))
    img = _image(24, 20, seed=5)
    eager = super_resolve(_kmsr(seed=6), img, fast=False)
    assert inference_backend(_kmsr(seed=6), fast=True) == "onnxruntime"
    files = list((tmp_path / "onnx").glob("*.onnx"))
    assert len(files) == 1
    real_export = infer.export_onnx_bytes
    calls = []

    def counting(*a, **k):
        calls.append(1)
        return real_export(*a, **k)

    monkeypatch.setattr(infer, "export_onnx_bytes", counting)
    model = _kmsr(seed=6)
    assert inference_backend(model, fast=True) == "onnxruntime" and not calls  # read back, not exported
    got = super_resolve(model, img, fast=True)
    assert np.abs(got.astype(np.int32) - eager.astype(np.int32)).max() <= 1  # 8-bit rounding of ~1e-6 differences
    assert inference_backend(_kmsr(seed=7), fast=True) == "onnxruntime" and len(calls) == 1  # other weights
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2
    files[0].write_bytes(b"not an onnx graph")
    assert inference_backend(_kmsr(seed=6), fast=True) == "onnxruntime" and len(calls) == 2
    assert files[0].read_bytes() != b"not an onnx graph"
