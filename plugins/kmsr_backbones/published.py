"""Loaders for published SR weights: SRCNN, VDSR, CARN-M, IMDN (not shipped with kmsr: pass the file path).

- SRCNN 9-1-5 (Dong et al. 2014), one ``.npz`` per scale with keys ``conv{1,2,3}.{weight,bias}``
  (float32, PyTorch OIHW layout), e.g. ``srcnn_915_x3_oihw.npz``. A file whose ``conv2`` is 5x5
  loads as the 9-5-5 network.
- VDSR (Kim et al. 2016, the PyTorch re-training of twtygqyy/pytorch-vdsr), one ``.npz`` for all
  scales with keys ``input.weight``, ``residual_layer.{0..17}.conv.weight``, ``output.weight``.

- CARN-M (Ahn et al. 2018, nmhkahn/CARN-pytorch, MIT), one multi-scale ``.npz``
  (``carn_m_state_dict.npz``).
- IMDN (Hui et al. 2019, Zheng222/IMDN), one ``.npz`` per scale (``IMDN_x{2,3,4}_state_dict.npz``).
  No licence is stated, so they serve for comparison only: the weights are never redistributed
  and kmsr never initialises a shipped model from them.

SRCNN and VDSR take Y (BT.601 studio range, MATLAB ``rgb2ycbcr``) in [0, 1] of the
MATLAB-bicubic-upscaled image and return Y in [0, 1]; CARN-M and IMDN take the LR RGB image in
[0, 1]. Clip outputs to [0, 1] before measuring. A missing, corrupt or foreign file raises
:class:`KmsrInputError` naming the file and what was expected. Nothing is unpickled.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from kmsr_ops.errors import KmsrInputError

from .srcnn import SRCNN
from .vdsr import VDSR

_SCALE_IN_NAME = re.compile(r"(?:^|[_\-.])x([234])(?:[_\-.]|$)")


def read_npz(path: str | os.PathLike, what: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, without pickles; errors name the file."""
    p = Path(path)
    if not p.exists():
        raise KmsrInputError(f"{p}: no such file (expected {what})")
    if p.is_dir():
        raise KmsrInputError(f"{p}: is a folder, expected {what} (.npz)")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise KmsrInputError(f"{p}: not a readable .npz file ({type(exc).__name__}: {exc}); expected {what}") from None


def _check_arrays(path, arrays: dict[str, np.ndarray], expected: dict[str, tuple], what: str) -> None:
    missing = [k for k in expected if k not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)[:6]) + (" ..." if len(arrays) > 6 else "")
        raise KmsrInputError(f"{path}: not {what}: missing {', '.join(missing[:4])}"
                             f"{' ...' if len(missing) > 4 else ''} (found keys: {found or 'none'})")
    for k, shape in expected.items():
        a = arrays[k]
        if tuple(a.shape) != shape:
            raise KmsrInputError(f"{path}: {k} has shape {tuple(a.shape)}, expected {shape} for {what}")
        if a.dtype.kind != "f":
            raise KmsrInputError(f"{path}: {k} has dtype {a.dtype}, expected floating point")
        if not np.isfinite(a).all():
            raise KmsrInputError(f"{path}: {k} holds NaN or Inf values")


def scale_from_name(path: str | os.PathLike) -> int | None:
    """The scale a file name announces (``..._x3_...``), or None."""
    m = _SCALE_IN_NAME.search(Path(path).name)
    return int(m.group(1)) if m else None


def load_srcnn_weights(path: str | os.PathLike, *, scale: int | None = None, padding: str = "replicate") -> SRCNN:
    """SRCNN with the published weights in ``path`` (evaluation mode, float32, on the CPU).

    :param scale: recorded on the model; default: read from the file name (``_x3_``), else None.
    :param padding: ``replicate`` (the convention the published figures are measured with) or ``zero``.
    """
    what = "SRCNN weights (conv{1,2,3}.{weight,bias})"
    arrays = read_npz(path, what)
    k2 = arrays["conv2.weight"].shape[-1] if "conv2.weight" in arrays and arrays["conv2.weight"].ndim == 4 else 1
    variant = {1: "915", 5: "955"}.get(k2)
    if variant is None:
        raise KmsrInputError(f"{path}: conv2 is {k2}x{k2}; expected 1x1 (SRCNN 9-1-5) or 5x5 (9-5-5)")
    expected = {
        "conv1.weight": (64, 1, 9, 9), "conv1.bias": (64,),
        "conv2.weight": (32, 64, k2, k2), "conv2.bias": (32,),
        "conv3.weight": (1, 32, 5, 5), "conv3.bias": (1,),
    }
    _check_arrays(path, arrays, expected, what)
    model = SRCNN(scale if scale is not None else scale_from_name(path), variant=variant, padding=padding)
    model.load_state_dict({k: torch.from_numpy(arrays[k].astype(np.float32)) for k in expected})
    return model.eval()


def load_vdsr_weights(path: str | os.PathLike, *, scale: int | None = None) -> VDSR:
    """VDSR (20 layers, 64 channels) with the published weights in ``path`` (evaluation mode, CPU).

    :param scale: recorded on the model (the weights serve x2, x3 and x4); default None.
    """
    what = "VDSR weights (input.weight, residual_layer.{0..17}.conv.weight, output.weight)"
    arrays = read_npz(path, what)
    expected = {"input.weight": (64, 1, 3, 3)}
    expected.update({f"residual_layer.{i}.conv.weight": (64, 64, 3, 3) for i in range(18)})
    expected["output.weight"] = (1, 64, 3, 3)
    _check_arrays(path, arrays, expected, what)
    model = VDSR(scale, layers=20, filters=64)
    state = {"head.weight": arrays["input.weight"], "tail.weight": arrays["output.weight"]}
    state.update({f"body.{i}.weight": arrays[f"residual_layer.{i}.conv.weight"] for i in range(18)})
    model.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in state.items()})
    return model.eval()


def _carn_m_expected(filters: int = 64, groups: int = 4) -> dict[str, tuple]:
    f, g = filters, filters // groups
    exp: dict[str, tuple] = {}
    for side in ("sub_mean", "add_mean"):
        exp[f"{side}.shifter.weight"], exp[f"{side}.shifter.bias"] = (3, 3, 1, 1), (3,)
    exp["entry.weight"], exp["entry.bias"] = (f, 3, 3, 3), (f,)

    def fusions(prefix):
        for i, mult in ((1, 2), (2, 3), (3, 4)):
            exp[f"{prefix}c{i}.body.0.weight"], exp[f"{prefix}c{i}.body.0.bias"] = (f, mult * f, 1, 1), (f,)

    for b in ("b1", "b2", "b3"):
        for j, shape in ((0, (f, g, 3, 3)), (2, (f, g, 3, 3)), (4, (f, f, 1, 1))):
            exp[f"{b}.b1.body.{j}.weight"], exp[f"{b}.b1.body.{j}.bias"] = shape, (f,)
        fusions(f"{b}.")
    fusions("")
    for s, convs in ((2, (0,)), (3, (0,)), (4, (0, 3))):
        r = 9 if s == 3 else 4
        for j in convs:
            exp[f"upsample.up{s}.body.{j}.weight"], exp[f"upsample.up{s}.body.{j}.bias"] = (r * f, g, 3, 3), (r * f,)
    exp["exit.weight"], exp["exit.bias"] = (3, f, 3, 3), (3,)
    return exp


def load_carn_m_weights(path: str | os.PathLike, *, scale: int | None = None, multi_scale: bool = False):
    """CARN-M with the published multi-scale weights (``carn_m_state_dict.npz``, CARN-pytorch).

    The file holds one body and three upsampling branches; the model keeps the branch for
    ``scale`` (default: the file name's ``_xN_``, else 4), or all three with ``multi_scale``.
    """
    from .carn import CARNM

    what = "CARN-M weights (entry, b1..b3, c1..c3, upsample.up{2,3,4}, exit, sub_mean/add_mean)"
    arrays = read_npz(path, what)
    expected = _carn_m_expected()
    _check_arrays(path, arrays, expected, what)
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise KmsrInputError(f"{path}: unexpected array {extra[0]!r} ({len(extra)} such) in {what}")
    scale = scale if scale is not None else (scale_from_name(path) or 4)
    model = CARNM(scale, multi_scale=multi_scale)
    keys = model.state_dict().keys()
    model.load_state_dict({k: torch.from_numpy(arrays[k].astype(np.float32)) for k in keys})
    return model.eval()


def _imdn_expected(scale: int, filters: int = 64, modules: int = 6) -> dict[str, tuple]:
    f, d = filters, filters // 4
    r = f - d
    exp: dict[str, tuple] = {"fea_conv.weight": (f, 3, 3, 3), "fea_conv.bias": (f,)}
    for i in range(1, modules + 1):
        p = f"IMDB{i}."
        for name, cin, cout, k in (("c1", f, f, 3), ("c2", r, f, 3), ("c3", r, f, 3), ("c4", r, d, 3), ("c5", 4 * d, f, 1)):
            exp[f"{p}{name}.weight"], exp[f"{p}{name}.bias"] = (cout, cin, k, k), (cout,)
        red = 4 * d // 16
        exp[f"{p}cca.conv_du.0.weight"], exp[f"{p}cca.conv_du.0.bias"] = (red, 4 * d, 1, 1), (red,)
        exp[f"{p}cca.conv_du.2.weight"], exp[f"{p}cca.conv_du.2.bias"] = (4 * d, red, 1, 1), (4 * d,)
    exp["c.0.weight"], exp["c.0.bias"] = (f, modules * f, 1, 1), (f,)
    exp["LR_conv.weight"], exp["LR_conv.bias"] = (f, f, 3, 3), (f,)
    exp["upsampler.0.weight"], exp["upsampler.0.bias"] = (3 * scale * scale, f, 3, 3), (3 * scale * scale,)
    return exp


def load_imdn_weights(path: str | os.PathLike, *, scale: int | None = None):
    """IMDN with the published weights of one scale (``IMDN_x{2,3,4}_state_dict.npz``, Zheng222/IMDN).

    The weights state no licence, so they serve for comparison only: the weights are never
    redistributed and kmsr never initialises a shipped model from them.

    :param scale: the file's scale; default the file name's ``_xN_``, else what the upsampler's
        shape says. A file for another scale than ``scale`` is refused, naming both.
    """
    from .imdn import IMDN, SCALES

    what = "IMDN weights (fea_conv, IMDB1..6, c.0, LR_conv, upsampler.0)"
    arrays = read_npz(path, what)
    up = arrays.get("upsampler.0.weight")
    file_scale = None
    if up is not None and up.ndim == 4:
        file_scale = next((s for s in SCALES if 3 * s * s == up.shape[0]), None)
    if scale is None:
        scale = scale_from_name(path) or file_scale
    if scale is None:
        raise KmsrInputError(f"{path}: cannot tell the scale of these {what}; pass scale=")
    if scale not in SCALES:
        raise KmsrInputError(f"scale: expected one of {', '.join(map(str, SCALES))}, found {scale!r}")
    if file_scale is not None and file_scale != scale:
        raise KmsrInputError(f"{path}: the upsampler is for x{file_scale} (upsampler.0.weight {tuple(up.shape)}), "
                             f"not x{scale}; IMDN has one weights file per scale")
    expected = _imdn_expected(scale)
    _check_arrays(path, arrays, expected, what)
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise KmsrInputError(f"{path}: unexpected array {extra[0]!r} ({len(extra)} such) in {what}")
    model = IMDN(scale)
    model.load_state_dict({k: torch.from_numpy(arrays[k].astype(np.float32)) for k in expected})
    return model.eval()
