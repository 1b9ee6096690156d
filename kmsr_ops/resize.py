"""MATLAB-compatible bicubic ``imresize`` and ``modcrop`` on NumPy arrays and torch tensors.

The weights are those of MATLAB's ``imresize(x, s, 'bicubic')``: Keys cubic (a = -0.5),
antialiasing when downscaling (the kernel is stretched by 1/s), symmetric boundary, output
size ``ceil(s * in)``. ``resize-right`` computes them (with ``pad_mode='symmetric'`` it matches
MATLAB's golden arrays to 1e-13); NumPy arrays go straight through it. Other backends (torch on
any device, CuPy) apply the same weights as two dense matrix products, built once per
(length, scale) by resizing an identity matrix with resize-right, so every backend shares one
set of weights.

Layouts: NumPy arrays are (H, W) or (H, W, C); torch tensors and CuPy arrays are (..., H, W).
Integer inputs are computed in float64 and rounded back to their dtype, as MATLAB does.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .backend import is_cupy_array, is_torch_tensor
from .errors import KmsrInputError


def _resize_right():
    from resize_right import interp_methods, resize  # noqa: PLC0415 - imports torch, keep it lazy

    return resize, interp_methods


def _check_scale(scale) -> float:
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise KmsrInputError(f"scale: expected a positive number, found {scale!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise KmsrInputError(f"scale: expected a positive finite number, found {scale!r}")
    return s


def output_size(n: int, scale: float) -> int:
    """MATLAB's output length for an input length and a scale: ceil(n * s)."""
    # round() guards against 255 * (1/3) = 85.00000000000001 rounding up to 86.
    return int(math.ceil(round(n * scale, 9)))


@functools.lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int, scale: float, antialiasing: bool = True) -> np.ndarray:
    """(n_out, n_in) float64 matrix of MATLAB bicubic weights along one axis, boundary folded in."""
    resize, interp = _resize_right()
    eye = np.eye(n_in, dtype=np.float64)
    m = resize(
        eye,
        scale_factors=[scale, 1.0],
        out_shape=[n_out, n_in],
        interp_method=interp.cubic,
        antialiasing=antialiasing,
        pad_mode="symmetric",
    )
    m.setflags(write=False)
    return m


def _target(shape_hw, scale, out_shape) -> tuple[tuple[int, int], tuple[float, float]]:
    h, w = shape_hw
    if out_shape is not None:
        if len(out_shape) != 2 or min(out_shape) <= 0:
            raise KmsrInputError(f"out_shape: expected (height, width) > 0, found {out_shape!r}")
        oh, ow = int(out_shape[0]), int(out_shape[1])
        if scale is None:
            return (oh, ow), (oh / h, ow / w)
        s = _check_scale(scale)
        return (oh, ow), (s, s)
    if scale is None:
        raise KmsrInputError("imresize: give a scale or an out_shape")
    s = _check_scale(scale)
    oh, ow = output_size(h, s), output_size(w, s)
    if oh < 1 or ow < 1:
        raise KmsrInputError(f"scale: {s:g} turns a {h}x{w} image into nothing")
    return (oh, ow), (s, s)


def imresize(x, scale: float | None = None, *, out_shape=None, antialiasing: bool = True):
    """Bicubic resize as MATLAB's ``imresize`` (see the module docstring for layouts).

    :param x: NumPy (H, W) / (H, W, C), or torch tensor / CuPy array (..., H, W).
    :param scale: factor (> 1 upscales); with ``out_shape`` too, the factor used for the weights.
    :param out_shape: (height, width) of the result.
    :param antialiasing: MATLAB's default True (stretch the kernel when downscaling).
    """
    if is_torch_tensor(x) or is_cupy_array(x):
        if x.ndim < 2:
            raise KmsrInputError(f"x: expected (..., H, W), found shape {tuple(x.shape)}")
        (oh, ow), (sh, sw) = _target(tuple(x.shape[-2:]), scale, out_shape)
        return _imresize_matmul(x, oh, ow, sh, sw, antialiasing)

    x = np.asarray(x)
    if x.ndim not in (2, 3):
        raise KmsrInputError(f"x: expected a NumPy image (H, W) or (H, W, C), found shape {x.shape}")
    (oh, ow), (sh, sw) = _target(x.shape[:2], scale, out_shape)
    integer = x.dtype.kind in "ui"
    if x.dtype.kind not in "uif":
        raise KmsrInputError(f"x: expected a numeric image, found dtype {x.dtype}")
    data = x.astype(np.float64) if integer or x.dtype == np.float16 else x
    resize, interp = _resize_right()
    factors = [sh, sw] + [1.0] * (x.ndim - 2)
    shape = [oh, ow] + list(x.shape[2:])
    if (oh, ow) == x.shape[:2] and sh == 1 and sw == 1:
        out = data.copy()
    else:
        out = resize(
            data,
            scale_factors=factors,
            out_shape=shape,
            interp_method=interp.cubic,
            antialiasing=antialiasing,
            pad_mode="symmetric",
        )
    if integer:
        info = np.iinfo(x.dtype)
        return np.clip(np.round(out), info.min, info.max).astype(x.dtype)
    return out.astype(x.dtype, copy=False)


def _imresize_matmul(x, oh: int, ow: int, sh: float, sw: float, antialiasing: bool):
    h, w = x.shape[-2], x.shape[-1]
    mh = resize_matrix(h, oh, sh, antialiasing)
    mw = resize_matrix(w, ow, sw, antialiasing)
    if is_torch_tensor(x):
        import torch

        integer = not torch.is_floating_point(x)
        data = x.double() if integer else x
        th = torch.tensor(mh, dtype=data.dtype, device=x.device)
        tw = torch.tensor(mw, dtype=data.dtype, device=x.device)
        out = th @ data @ tw.T
        if integer:
            info = torch.iinfo(x.dtype)
            out = out.round().clamp(info.min, info.max).to(x.dtype)
        return out
    import cupy

    integer = x.dtype.kind in "ui"
    data = x.astype(cupy.float64) if integer else x
    out = cupy.asarray(mh, dtype=data.dtype) @ data @ cupy.asarray(mw, dtype=data.dtype).T
    if integer:
        info = np.iinfo(x.dtype)
        out = cupy.clip(cupy.round(out), info.min, info.max).astype(x.dtype)
    return out


def modcrop(x, scale: int):
    """Crop height and width down to multiples of ``scale`` (top-left kept, as MATLAB's modcrop)."""
    if int(scale) != scale or scale < 1:
        raise KmsrInputError(f"scale: expected a positive integer, found {scale!r}")
    s = int(scale)
    if is_torch_tensor(x) or is_cupy_array(x):
        h, w = x.shape[-2], x.shape[-1]
        return x[..., : h - h % s, : w - w % s]
    x = np.asarray(x)
    if x.ndim not in (2, 3):
        raise KmsrInputError(f"x: expected a NumPy image (H, W) or (H, W, C), found shape {x.shape}")
    h, w = x.shape[:2]
    if h < s or w < s:
        raise KmsrInputError(f"x: a {h}x{w} image is smaller than the scale {s}")
    return x[: h - h % s, : w - w % s]
