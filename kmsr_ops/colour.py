"""RGB <-> YCbCr in MATLAB's convention (ITU-R BT.601, studio range).

For floating-point input in [0, 1], ``rgb2ycbcr`` returns Y in [16/255, 235/255] and Cb, Cr
in [16/255, 240/255], exactly as MATLAB's ``rgb2ycbcr`` on doubles; uint8 input gives uint8,
rounded as MATLAB does. The SR literature's "Y-PSNR" is computed on this Y (times 255).

Channel axis: the last one for NumPy arrays (H, W, 3); dimension -3 for torch tensors
(..., 3, H, W).
"""

from __future__ import annotations

import numpy as np

from .backend import is_torch_tensor
from .errors import KmsrInputError

# Rows: Y, Cb, Cr; columns: R, G, B; for RGB in [0, 1] giving YCbCr in [0, 255].
_M = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=np.float64,
)
_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)
_M_INV = np.linalg.inv(_M)


def _apply(x, matrix: np.ndarray, offset_before: np.ndarray, offset_after: np.ndarray, name: str):
    """out = matrix @ (x - offset_before) + offset_after over the channel axis."""
    if is_torch_tensor(x):
        import torch

        if x.ndim < 3 or x.shape[-3] != 3:
            raise KmsrInputError(f"{name}: expected a tensor (..., 3, H, W), found shape {tuple(x.shape)}")
        integer = not torch.is_floating_point(x)
        data = x.double() / 255.0 if integer else x
        m = torch.tensor(matrix, dtype=data.dtype, device=x.device)
        ob = torch.tensor(offset_before, dtype=data.dtype, device=x.device).view(3, 1, 1)
        oa = torch.tensor(offset_after, dtype=data.dtype, device=x.device).view(3, 1, 1)
        out = torch.einsum("ij,...jhw->...ihw", m, data - ob) + oa
        if integer:
            out = (out * 255.0).round().clamp(0, 255).to(x.dtype)
        return out
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[-1] != 3:
        raise KmsrInputError(f"{name}: expected an array (..., 3) with RGB/YCbCr last, found shape {x.shape}")
    integer = x.dtype.kind in "ui"
    if x.dtype.kind not in "uif":
        raise KmsrInputError(f"{name}: expected a numeric image, found dtype {x.dtype}")
    data = x.astype(np.float64) / 255.0 if integer else x
    out = (data - offset_before.astype(data.dtype)) @ matrix.T.astype(data.dtype) + offset_after.astype(data.dtype)
    if integer:
        return np.clip(np.round(out * 255.0), 0, 255).astype(x.dtype)
    return out


def rgb2ycbcr(rgb):
    """MATLAB ``rgb2ycbcr``: RGB in [0, 1] (float) or uint8 to YCbCr in the same range convention."""
    return _apply(rgb, _M / 255.0, np.zeros(3), _OFFSET / 255.0, "rgb")


def ycbcr2rgb(ycbcr):
    """MATLAB ``ycbcr2rgb``: the exact inverse of :func:`rgb2ycbcr` (no clipping for floats)."""
    return _apply(ycbcr, _M_INV * 255.0, _OFFSET / 255.0, np.zeros(3), "ycbcr")


def rgb2y(rgb):
    """Only the Y channel of :func:`rgb2ycbcr`, shape without the channel axis."""
    ycc = rgb2ycbcr(rgb)
    return ycc[..., 0, :, :] if is_torch_tensor(ycc) else ycc[..., 0]
