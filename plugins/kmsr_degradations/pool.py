"""``pool``: the paper's training degradation, ``x0 = y * k0`` with k0 drawn from a kernel pool.

Per sample, a kernel is drawn uniformly from the pool on every call and convolved with the HR
patch at HR size (``kmsr_ops.blur``: one batched call, no loop over samples). The same kernel
blurs the three RGB channels of a sample: blurring "per sample, per RGB channel" is read as the
2-D kernel being applied to each channel, which is what a physical blur does and what kernels
estimated on greyscale photos describe; ``per_channel=True`` draws an independent kernel for each
channel instead. Borders are reflected by default (the release zero-padded, darkening edges;
``boundary="zero"`` reproduces it).

For ``input="lr"`` backbones the blurred patch is decimated by the scale (see
:mod:`kmsr_ops.degrade` for the phase); for ``input="upsampled"`` it is the network
input as it is, as in the paper.

``bicubic_fraction`` (beyond the paper, default 0): that fraction of the samples, drawn per
sample, gets the bicubic degradation (MATLAB bicubic down, and up again for ``upsampled``
backbones) instead of a pool kernel. Pools estimated from real photos hold few kernels as narrow
as bicubic's, and a network that never sees sharp inputs over-sharpens them (the paper's model
loses on the bicubic set); mixing in bicubic pairs keeps that case in the training data.

The pool comes from the caller, because a plugin does not read kmsr's files: ``kernels`` is an
(N, K, K) array or tensor (K odd, each summing to 1), or a zero-argument callable returning one,
called once on first use (e.g. ``lambda: KernelSet(path).kernels()``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from kmsr_ops.blur import blur
from kmsr_ops.degrade import decimate, needs_even_kernel
from kmsr_ops.errors import KmsrInputError
from kmsr_ops.resize import imresize
from kmsr_ops.validate import check_choice, check_probability

from .base import BOUNDARIES, Degradation, randint, uniform

_SUM_ATOL = 1e-3


def half_pixel_kernels(kernels: torch.Tensor) -> torch.Tensor:
    """(N, K, K) -> (N, K + 1, K + 1): each kernel convolved with a 2x2 box (sums are kept), which
    centres an odd kernel between pixels for even scales (the batched ``kmsr_ops.degrade.match_parity``)."""
    box = torch.full((1, 1, 2, 2), 0.25, dtype=kernels.dtype, device=kernels.device)
    return torch.nn.functional.conv2d(kernels.unsqueeze(1), box, padding=1).squeeze(1)


def as_kernel_tensor(kernels, name: str = "kernels") -> torch.Tensor:
    """(N, K, K) float64 CPU tensor of valid pool kernels (odd K, finite, >= 0, sum 1)."""
    if isinstance(kernels, torch.Tensor):
        k = kernels.detach().to("cpu", torch.float64)
    else:
        try:
            k = torch.from_numpy(np.array(kernels, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise KmsrInputError(f"{name}: expected an (N, K, K) array of kernels, found {type(kernels).__name__} ({exc})") from None
    if k.ndim != 3 or k.shape[0] == 0 or k.shape[1] != k.shape[2]:
        raise KmsrInputError(f"{name}: expected a non-empty (N, K, K) stack of square kernels, found shape {tuple(k.shape)}")
    if k.shape[1] % 2 == 0:
        raise KmsrInputError(f"{name}: expected odd-sized kernels centred on a pixel, found size {k.shape[1]}")
    if not bool(torch.isfinite(k).all()):
        raise KmsrInputError(f"{name}: expected finite values, found NaN or Inf")
    if float(k.min()) < -1e-6:
        raise KmsrInputError(f"{name}: expected non-negative kernels, found a minimum of {float(k.min()):.3g}")
    sums = k.sum(dim=(1, 2))
    bad = int(torch.argmax((sums - 1).abs()))
    if abs(float(sums[bad]) - 1) > _SUM_ATOL:
        raise KmsrInputError(f"{name}[{bad}]: expected a kernel summing to 1, found sum {float(sums[bad]):.6g}")
    return k


class PoolDegradation(Degradation):
    name = "pool"
    needs_kernels = True
    decimates = False  # at HR size, except for LR-input backbones

    def __init__(self, scale: int, input: str = "upsampled", channels: str = "rgb", *,  # noqa: A002
                 kernels: np.ndarray | torch.Tensor | Callable | None = None, boundary: str = "reflect",
                 per_channel: bool = False, pool_scale: int | None = None, bicubic_fraction: float = 0.0):
        super().__init__(scale, input, channels)
        self.bicubic_fraction = check_probability("bicubic_fraction", bicubic_fraction)
        if kernels is None:
            raise KmsrInputError("kernels: the pool degradation needs the pool's kernels (an (N, K, K) array or a loader)")
        if pool_scale is not None and pool_scale != self.scale:
            raise KmsrInputError(f"pool_scale: the pool was made for x{pool_scale}, but the degradation is for x{self.scale}")
        self.boundary = check_choice("boundary", boundary, BOUNDARIES)
        self.per_channel = bool(per_channel)
        self._source = kernels
        self._kernels: torch.Tensor | None = None  # CPU float64, validated
        self._cache: dict = {}

    @property
    def kernels(self) -> torch.Tensor:
        """The pool, (N, K, K) float64 on the CPU (loaded on first use)."""
        if self._kernels is None:
            src = self._source() if callable(self._source) else self._source
            self._kernels = as_kernel_tensor(src)
            self._source = None
        return self._kernels

    @property
    def hr_multiple(self) -> int:
        # bicubic samples are downscaled, so their HR sides must divide by the scale
        return self.scale if self.bicubic_fraction > 0 else super().hr_multiple

    def options(self) -> dict:
        k = self.kernels
        return {"boundary": self.boundary, "per_channel": self.per_channel, "bicubic_fraction": self.bicubic_fraction,
                "kernel_count": int(k.shape[0]), "kernel_size": int(k.shape[1])}

    def _kernels_on(self, device, dtype) -> torch.Tensor:
        """The pool as used for blurring: on ``device`` in ``dtype``, half-pixel shifted for even LR scales."""
        key = (str(device), dtype)
        if key not in self._cache:
            k = self.kernels
            if (self.decimates or self.input == "lr") and needs_even_kernel(self.scale):
                k = half_pixel_kernels(k)
            self._cache[key] = k.to(device=device, dtype=dtype)
        return self._cache[key]

    def sample(self, shape, generator=None, device=None) -> dict:
        b = shape[0]
        n = self.kernels.shape[0]
        params = {"index": randint(b * 3 if self.per_channel else b, n, generator, device or "cpu")}
        if self.bicubic_fraction > 0:  # drawn only when used, so fraction 0 keeps the random stream as before
            params["bicubic"] = uniform(b, 0.0, 1.0, generator, device or "cpu") < self.bicubic_fraction
        return params

    def mix_bicubic(self, x: torch.Tensor, hr: torch.Tensor, params: dict) -> torch.Tensor:
        """Replace the samples drawn for ``bicubic`` in ``x`` (at LR or HR size) by bicubic ones."""
        mask = params.get("bicubic")
        if mask is None or not bool(mask.any()):
            return x
        mask = mask.to(x.device)
        lr = imresize(hr[mask], 1.0 / self.scale)
        if x.shape[-2:] != lr.shape[-2:]:
            lr = imresize(lr, out_shape=tuple(x.shape[-2:]), scale=self.scale)
        x = x.clone()
        x[mask] = lr.to(x.dtype)
        return x

    def blur(self, hr: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``hr`` blurred with pool kernels ``index`` (one per sample, or per sample and channel)."""
        pool = self._kernels_on(hr.device, hr.dtype)
        if hr.device.type == "cpu" and hr.dtype in (torch.float32, torch.float64):
            # gathered in NumPy: kmsr_ops.blur runs there on the CPU, and a torch index right after
            # a training step waits on torch's busy thread pool (benchmarks/results/train_step.md)
            ks = torch.from_numpy(pool.numpy()[index.cpu().numpy()])
        else:
            ks = pool[index.to(hr.device)]
        if self.per_channel:
            b, c, h, w = hr.shape
            return blur(hr.reshape(b * c, 1, h, w), ks, self.boundary, check_sum=False).reshape(b, c, h, w)
        return blur(hr, ks, self.boundary, check_sum=False)  # the pool was checked when loaded

    def apply(self, hr, params):
        x = self.blur(hr, params["index"])
        if self.decimates or self.input == "lr":
            x = decimate(x, self.scale, channels_first=True)
        return self.finish(self.mix_bicubic(x, hr, params), hr)
