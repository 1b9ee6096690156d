"""``realistic``: pool blur, decimation, Gaussian noise and JPEG at random levels.

Beyond the paper (which has no noise and no compression): a step towards real photos, in the
spirit of later blind-SR training pipelines. Per sample: a pool kernel as in ``pool`` (HR size,
reflect borders), decimation with MATLAB's geometry, additive Gaussian noise with sigma ~
U[noise_min, noise_max] (in [0, 1] units), clipping to [0, 1], 8-bit quantisation, and, with
probability ``jpeg_prob``, JPEG compression at a quality ~ U{jpeg_min..jpeg_max} (Pillow,
4:2:0 chroma subsampling). ``input="upsampled"`` backbones get the result upscaled back with
MATLAB bicubic (not clipped again, as at inference). With ``bicubic_fraction`` (see ``pool``) that
fraction of the samples starts from a MATLAB-bicubic LR instead of pool blur and decimation; noise
and JPEG follow as for the others.

Everything runs batched on the device except the JPEG round trip: Pillow encodes on the CPU, one
sample at a time, the one per-sample loop of the training degradations.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from kmsr_ops.degrade import decimate
from kmsr_ops.errors import KmsrInputError
from kmsr_ops.validate import check_int, check_probability, check_range

from .base import randint, uniform
from .pool import PoolDegradation


def jpeg_round_trip(x: torch.Tensor, qualities) -> torch.Tensor:
    """Each (3, h, w) image of ``x`` (in [0, 1]) through JPEG at its quality; 0 means none (8-bit only)."""
    from PIL import Image

    u8 = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(u8)
    for i, q in enumerate(qualities):
        if q <= 0:
            out[i] = u8[i]
            continue
        buf = io.BytesIO()
        Image.fromarray(u8[i], "RGB").save(buf, format="JPEG", quality=int(q))
        out[i] = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2).to(x.dtype) / 255.0


class RealisticDegradation(PoolDegradation):
    name = "realistic"
    decimates = True

    def __init__(self, scale: int, input: str = "upsampled", channels: str = "rgb", *,  # noqa: A002
                 kernels=None, boundary: str = "reflect", per_channel: bool = False, pool_scale: int | None = None,
                 bicubic_fraction: float = 0.0, noise_min: float = 0.0, noise_max: float = 0.04, jpeg_prob: float = 0.7,
                 jpeg_min: int = 40, jpeg_max: int = 95):
        super().__init__(scale, input, channels, kernels=kernels, boundary=boundary, per_channel=per_channel,
                         pool_scale=pool_scale, bicubic_fraction=bicubic_fraction)
        self.noise_min, self.noise_max = check_range("noise_min/noise_max", noise_min, noise_max)
        self.jpeg_prob = check_probability("jpeg_prob", jpeg_prob)
        jpeg_min, jpeg_max = (check_int(name, v, 1, 100, expected="an integer JPEG quality in 1..100")
                              for name, v in (("jpeg_min", jpeg_min), ("jpeg_max", jpeg_max)))
        if jpeg_max < jpeg_min:
            raise KmsrInputError(f"jpeg_min/jpeg_max: expected jpeg_min <= jpeg_max, found ({jpeg_min}, {jpeg_max})")
        self.jpeg_min, self.jpeg_max = jpeg_min, jpeg_max

    def options(self) -> dict:
        return {**super().options(), "noise_min": self.noise_min, "noise_max": self.noise_max,
                "jpeg_prob": self.jpeg_prob, "jpeg_min": self.jpeg_min, "jpeg_max": self.jpeg_max}

    def sample(self, shape, generator=None, device=None) -> dict:
        b, c, h, w = shape
        device = device or "cpu"
        params = super().sample(shape, generator, device)
        gdev = generator.device if generator is not None else "cpu"
        params["noise_sigma"] = uniform(b, self.noise_min, self.noise_max, generator, device)
        noise = torch.randn((b, c, h // self.scale, w // self.scale), generator=generator, device=gdev)
        params["noise"] = noise.to(device)
        quality = randint(b, self.jpeg_max + 1, generator, device, low=self.jpeg_min)
        use = uniform(b, 0.0, 1.0, generator, device) < self.jpeg_prob
        params["jpeg_quality"] = torch.where(use, quality, torch.zeros_like(quality))
        return params

    def apply(self, hr, params):
        lr = self.mix_bicubic(decimate(self.blur(hr, params["index"]), self.scale, channels_first=True), hr, params)
        sigma = params["noise_sigma"].to(device=hr.device, dtype=hr.dtype).view(-1, 1, 1, 1)
        lr = (lr + sigma * params["noise"].to(device=hr.device, dtype=hr.dtype)).clamp(0, 1)
        lr = jpeg_round_trip(lr, params["jpeg_quality"].tolist())
        return self.finish(lr, hr)
