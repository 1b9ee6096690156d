"""What every built-in backbone module says about itself, and the check of the ``scale`` option
(the other option checks are :mod:`kmsr_ops.validate`).

A backbone is an ``nn.Module`` mapping a float (N, C, H, W) tensor in [0, 1] to its output:
same size for ``input == "upsampled"`` (the bicubic-upscaled image), ``scale`` times larger for
``input == "lr"``. Besides the registry ``info``, each built-in module carries the same facts for
its own configuration (a smaller ``blocks`` means a smaller receptive field), so tiling and
checkpoint code can read them from the model it holds.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from kmsr_ops.errors import KmsrInputError

INPUT_KINDS = ("upsampled", "lr")
CHANNEL_KINDS = ("rgb", "y")


class SRBackbone(nn.Module):
    """Base class of the built-in networks.

    Attributes:

    - ``scale``: the SR factor the model is for (``None`` allowed for upsampled-input models
      loaded from scale-agnostic weights, such as VDSR's);
    - ``options``: the resolved constructor options (every default filled in, JSON-friendly,
      without ``scale``): passing them back to the factory rebuilds the same architecture;
    - ``input_kind`` (``"upsampled"`` or ``"lr"``), ``channels`` (``"rgb"`` or ``"y"``),
      ``in_channels`` (3 or 1);
    - ``receptive_field``: width in input pixels of the input window that can change one
      output pixel (LR pixels for LR-input models); tiles overlapping by ``halo`` =
      ``receptive_field // 2`` input pixels give the untiled result;
    - ``size_multiple``: input height and width must be multiples of it (1: any size).
    """

    input_kind: str = "upsampled"
    channels: str = "rgb"
    size_multiple: int = 1

    def __init__(self, scale: int | None, options: dict, receptive_field: int):
        super().__init__()
        self.scale = scale
        self.options = dict(options)
        self.receptive_field = int(receptive_field)

    @property
    def in_channels(self) -> int:
        return 3 if self.channels == "rgb" else 1

    @property
    def halo(self) -> int:
        """Input pixels a tile must borrow from each neighbour for an exact result."""
        return self.receptive_field // 2

    def describe(self) -> dict:
        """The facts above as a JSON-friendly dict."""
        return {
            "scale": self.scale,
            "options": dict(self.options),
            "input": self.input_kind,
            "channels": self.channels,
            "receptive_field": self.receptive_field,
            "size_multiple": self.size_multiple,
        }

    def check_input(self, x: torch.Tensor) -> None:
        """Raise KmsrInputError unless ``x`` is a float (N, C, H, W) tensor this model accepts."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise KmsrInputError(f"input: expected a tensor (N, {self.in_channels}, H, W), found {shape}")
        if x.shape[1] != self.in_channels:
            raise KmsrInputError(
                f"input: {type(self).__name__} takes {self.channels.upper()} input with {self.in_channels} "
                f"channel(s), found {x.shape[1]}"
            )
        m = self.size_multiple
        if m > 1 and (x.shape[-2] % m or x.shape[-1] % m):
            raise KmsrInputError(f"input: height and width must be multiples of {m}, found {tuple(x.shape[-2:])}")


# --------------------------------------------------------------------------- option checks


def check_scale(scale, scales, *, optional: bool = False) -> int | None:
    """``scale`` as an int from ``scales`` (or None when ``optional``)."""
    if scale is None and optional:
        return None
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or int(scale) not in scales:
        raise KmsrInputError(f"scale: expected one of {', '.join(map(str, scales))}, found {scale!r}")
    return int(scale)
