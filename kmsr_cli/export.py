"""``kmsr export``: a model as an ONNX graph for deployment, with how to feed it in its metadata.

The graph takes ``x`` (N, C, H, W) float32 in [0, 1] and returns ``y`` (N, C, sH, sW); N, H and W
are free. What the graph does not say by itself is stored as ONNX metadata (``metadata_props``),
so a deployment needs nothing else from kmsr:

- ``kmsr.input``: ``upsampled`` (feed the MATLAB-bicubic-upscaled image; the output has its size)
  or ``lr`` (feed the LR image);
- ``kmsr.channels``: ``rgb`` (C = 3) or ``y`` (C = 1, the BT.601 Y channel; chroma upscaled
  bicubically);
- ``kmsr.scale``, ``kmsr.size_multiple`` (H and W must be multiples of it),
  ``kmsr.receptive_field`` (input pixels, or ``unknown``; half of it is the tile margin that makes
  tiling exact),
  ``kmsr.global_context``, ``kmsr.source`` and ``kmsr.source_sha256``, ``kmsr.version``.

The export is checked with ONNX Runtime against PyTorch eager on a random input of two sizes
before the file is written; a graph that differs by more than ``ATOL`` is refused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from kmsr_ops.errors import KmsrError

from .atomic import replace_atomically

ATOL = 1e-4


def _need(module: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise KmsrError(f"kmsr export needs {module}, which is not installed", hint="pip install 'kmsr[fast]'") from None


def _source_sha256(spec: str, scale: int) -> str:
    """SHA-256 of the file the weights came from: the checkpoint, the NAME:WEIGHTS file or the shipped model."""
    from .models import shipped_model_path

    path = Path(spec)
    if not path.is_file() and ":" in spec:
        path = Path(spec.split(":", 1)[1])
    if not path.is_file():
        path = shipped_model_path(spec, scale)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def export_model(spec: str, out: Path, *, scale: int | None = None, host=None, check_sides=(40, 57)) -> dict:
    """Export the model ``spec`` names (as ``kmsr sr --model`` reads it) to ``out``; returns a summary."""
    _need("onnx")
    _need("onnxruntime")
    import onnx
    import onnxruntime as ort
    import torch

    from . import __version__
    from .infer import export_onnx_bytes
    from .models import resolve_model

    model = resolve_model(spec, scale=scale, host=host)
    if model.name == "bicubic":
        raise KmsrError("bicubic is not a network; there is nothing to export")
    module = model.module
    module.eval()
    cin = 1 if model.channels == "y" else 3
    m = int(model.size_multiple)
    sides = [-(-s // m) * m for s in check_sides]
    try:
        graph = onnx.load_from_string(export_onnx_bytes(module, cin, sides[0]))
    except Exception as exc:  # noqa: BLE001 - an operator the exporter cannot write, ...: one line, nothing written
        raise KmsrError(f"{spec}: the network cannot be exported to ONNX ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}); nothing written") from None
    sha = _source_sha256(spec, model.scale)
    props = {"kmsr.input": model.input, "kmsr.channels": model.channels, "kmsr.scale": str(model.scale),
             "kmsr.size_multiple": str(m), "kmsr.receptive_field": str(model.receptive_field) if model.receptive_field else "unknown",
             "kmsr.global_context": str(bool(model.global_context)).lower(), "kmsr.source": str(spec),
             "kmsr.source_sha256": sha, "kmsr.version": __version__}
    for k, v in props.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = k, v
    data = graph.SerializeToString()
    rng = np.random.default_rng(0)
    worst = 0.0
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime refuses the graph: one line, nothing written
        raise KmsrError(f"ONNX Runtime cannot load the exported graph ({type(exc).__name__}); nothing written") from None
    for h, w in ((sides[0], sides[1]), (sides[1], sides[0])):
        x = rng.random((1, cin, h, w), dtype=np.float32)
        with torch.inference_mode():
            want = module(torch.from_numpy(x)).float().numpy()
        try:
            got = session.run(None, {"x": x})[0]
        except Exception as exc:  # noqa: BLE001 - e.g. a size baked into the graph: one line, nothing written
            raise KmsrError(f"the exported graph fails on a {h}x{w} input ({type(exc).__name__}); "
                           "its size is not free; nothing written") from None
        if got.shape != want.shape:
            raise KmsrError(f"the exported graph gives shape {got.shape} on a {h}x{w} input, PyTorch {want.shape}; nothing written")
        worst = max(worst, float(np.abs(got - want).max()))
    if not worst <= ATOL:
        raise KmsrError(f"the exported graph differs from PyTorch by {worst:.3g} (more than {ATOL:g}); nothing written")
    replace_atomically(out, lambda tmp: Path(tmp).write_bytes(data), fsync=True)
    return {"path": str(out), "bytes": len(data), "max_abs_diff": worst, "metadata": props}
