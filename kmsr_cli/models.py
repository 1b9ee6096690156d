"""Turning a model name or file into an :class:`~kmsr_cli.infer.SRModel`.

A model is given as

- ``bicubic``: plain MATLAB bicubic upscaling (an identity network on the upscaled image);
- ``PATH.safetensors``: a kmsr checkpoint (``kmsr train`` writes them);
- ``NAME:PATH``: a backbone with published weights, e.g. ``srcnn:srcnn_915_x3_oihw.npz`` or
  ``vdsr:vdsr_model_epoch_50_state_dict.npz``;
- ``NAME`` alone: the model shipped with kmsr for that backbone and scale (``kmsr``).
"""

from __future__ import annotations

from pathlib import Path

from .errors import CliError
from .infer import SRModel

SHIPPED_DIR = Path(__file__).resolve().parent / "models"


class _Identity:
    """Bicubic upscaling as a model: the network does nothing to the upscaled image."""

    def __new__(cls):
        import torch

        return torch.nn.Identity()


def shipped_model_path(name: str, scale: int) -> Path:
    return SHIPPED_DIR / f"{name}_x{scale}.safetensors"


def _from_module(module, name: str, scale: int | None, meta: dict | None = None) -> SRModel:
    s = getattr(module, "scale", None) or scale
    if s is None:
        raise CliError(f"model {name!r} does not say its scale; pass --scale")
    if scale is not None and s != scale:
        raise CliError(f"model {name!r} is for x{s}, not x{scale}")
    return SRModel(module, scale=int(s), input=getattr(module, "input_kind", "upsampled"),
                   channels=getattr(module, "channels", "rgb"),
                   receptive_field=int(getattr(module, "receptive_field", 0)), name=name, meta=meta or {})


def resolve_model(spec: str, *, scale: int | None, host=None) -> SRModel:
    """Load the model ``spec`` names (see the module docstring) for ``scale``."""
    from .checkpoint import load_model
    from .plugin_host import get_host

    host = host or get_host()
    if spec == "bicubic":
        if scale is None:
            raise CliError("bicubic upscaling needs --scale")
        return SRModel(_Identity(), scale=scale, name="bicubic")
    path = Path(spec)
    if spec.endswith(".safetensors") or path.is_file():
        if not path.exists():
            raise CliError(f"{path}: no such model file")
        module, meta = load_model(path, scale=scale if scale else None, host=host)
        return _from_module(module, str(path), scale or meta.scale, meta={"backbone": meta.backbone, **meta.extra})
    if ":" in spec:
        name, weights = spec.split(":", 1)
        if not Path(weights).exists():
            raise CliError(f"{weights}: no such weights file (for backbone {name!r})")
        module = host.get("backbones", name).create(scale=scale, weights=weights)
        return _from_module(module, name, scale)
    if spec in host.names("backbones"):
        if scale is None:
            raise CliError(f"the shipped {spec!r} model needs --scale")
        shipped = shipped_model_path(spec, scale)
        if not shipped.exists():
            raise CliError(f"kmsr ships no {spec!r} model for x{scale} (looked for {shipped})",
                           hint="train one with `kmsr train` and pass it with --model RUN_DIR/model.safetensors")
        module, meta = load_model(shipped, scale=scale, host=host)
        return _from_module(module, spec, scale, meta={"backbone": meta.backbone, **meta.extra})
    known = ", ".join(["bicubic", *host.names("backbones")])
    raise CliError(f"unknown model {spec!r}: expected a .safetensors file, NAME:WEIGHTS, or one of {known}")
