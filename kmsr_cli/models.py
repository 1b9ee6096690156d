"""Turning a model name or file into an :class:`~kmsr_cli.infer.SRModel`.

A model is given as

- ``bicubic``: plain MATLAB bicubic upscaling (an identity network on the upscaled image);
- ``PATH.safetensors``: a kmsr checkpoint (``kmsr train`` writes them);
- ``spandrel:PATH``: a published model of any architecture spandrel recognises (``.pth``,
  ``.safetensors``, ``.ckpt``), fed by what spandrel reports (:mod:`kmsr_cli.spandrel_models`);
- ``NAME:PATH``: a backbone with published weights, e.g. ``srcnn:srcnn_915_x3_oihw.npz`` or
  ``vdsr:vdsr_model_epoch_50_state_dict.npz``;
- ``NAME`` alone: the model kmsr ships under that name for the scale, ``models/NAME_xS.safetensors``;
  ``kmsr`` is the default (today a CARN-M fine-tuned on the KMSR pool: the file's metadata says
  which backbone it holds).

How a model is fed comes from its backbone's registration (:func:`backbone_convention`), the
one thing every plugin must declare: ``input`` and ``channels`` are taken from it, never guessed.
The built module may refine the numbers for its own options (``receptive_field``,
``size_multiple``, ``scale``) but a module that names another input or channel convention than
its registration is refused.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path

from kmsr_ops.errors import KmsrError

from .infer import SRModel

SHIPPED_DIR = Path(__file__).resolve().parent / "models"


class _Identity:
    """Bicubic upscaling as a model: the network does nothing to the upscaled image."""

    def __new__(cls):
        import torch

        return torch.nn.Identity()


def shipped_model_path(name: str, scale: int) -> Path:
    return SHIPPED_DIR / f"{name}_x{scale}.safetensors"


_KINDS = {"input": ("upsampled", "lr"), "channels": ("rgb", "y")}
_MODULE_ATTR = {"input": "input_kind", "channels": "channels"}


@dataclass(frozen=True)
class Convention:
    """How a backbone is fed: from its registration, refined by its built module."""

    input: str  # "upsampled" | "lr"
    channels: str  # "rgb" | "y"
    scale: int | None
    receptive_field: int  # network-input pixels; 0 = not declared
    size_multiple: int  # network-input sides must be multiples of it
    global_context: bool  # the network pools over its whole input (tiles are close, not exact)


def _int_attr(obj, name: str) -> int | None:
    v = getattr(obj, name, None)
    return int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else None


def backbone_convention(backend, module=None, *, scale: int | None = None) -> Convention:
    """The feeding convention of ``backend`` (a registered backbone), for ``module`` built from it.

    ``input`` and ``channels`` come from the registration ``info`` and must be there (the
    hookspec requires them); a module attribute ``input_kind`` or ``channels`` holding a string
    must agree with them. ``receptive_field`` and ``size_multiple`` are the module's when it
    carries them as integers (the built-ins do, exact for their options), else the registration's.
    ``scale`` is the one asked for, else the module's; it must be among the declared ``scales``.
    Every failure is a :class:`KmsrError` that names the backbone and its plugin.
    """
    info = backend.info
    who = f"backbone {backend.name!r} (plugin {backend.plugin!r})"
    kinds = {}
    for key, allowed in _KINDS.items():
        declared = info.get(key)
        if declared not in allowed:
            found = "does not declare it" if declared is None else f"declares {declared!r}"
            raise KmsrError(f"{who}: its registration must say {key}= one of {', '.join(map(repr, allowed))}, "
                           f"but {found}; the plugin needs fixing")
        attr = getattr(module, _MODULE_ATTR[key], None) if module is not None else None
        if isinstance(attr, str) and attr != declared:
            raise KmsrError(f"{who}: the module it built says {_MODULE_ATTR[key]}={attr!r}, but the backbone is "
                           f"registered with {key}={declared!r}; the plugin needs fixing")
        kinds[key] = declared

    def number(key: str, minimum: int, default: int) -> int:
        v = _int_attr(module, key) if module is not None else None
        if v is None:
            v = info.get(key, default)
            if v is None:
                v = default
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise KmsrError(f"{who}: registered {key}={v!r}, expected an integer")
        if v < minimum:
            raise KmsrError(f"{who}: {key} is {v}, expected at least {minimum}")
        return int(v)

    rf = number("receptive_field", 0, 0)
    multiple = number("size_multiple", 1, 1)
    s = scale if scale is not None else (_int_attr(module, "scale") if module is not None else None)
    scales = info.get("scales")
    if s is not None and scales and s not in scales:
        raise KmsrError(f"{who} supports scales {', '.join(map(str, scales))}, not x{s}")
    glob = bool(info.get("global_context", False) or getattr(module, "global_context", False) is True)
    return Convention(kinds["input"], kinds["channels"], None if s is None else int(s), rf, multiple, glob)


def _from_module(module, name: str, scale: int | None, backend, meta: dict | None = None) -> SRModel:
    ms = _int_attr(module, "scale")
    if scale is not None and ms is not None and ms != scale:
        raise KmsrError(f"model {name!r} is for x{ms}, not x{scale}")
    conv = backbone_convention(backend, module, scale=scale if scale is not None else ms)
    if conv.scale is None:
        raise KmsrError(f"model {name!r} does not say its scale; pass --scale")
    return SRModel(module, scale=conv.scale, input=conv.input, channels=conv.channels,
                   receptive_field=conv.receptive_field, size_multiple=conv.size_multiple,
                   global_context=conv.global_context, name=name, meta=meta or {})


def resolve_model(spec: str, *, scale: int | None, host=None) -> SRModel:
    """Load the model ``spec`` names (see the module docstring) for ``scale``."""
    from .checkpoint import load_model
    from .plugin_host import get_host

    host = host or get_host()
    if spec == "bicubic":
        if scale is None:
            raise KmsrError("bicubic upscaling needs --scale")
        return SRModel(_Identity(), scale=scale, name="bicubic")
    if spec.startswith("spandrel:"):  # before the .safetensors test: spandrel:x.safetensors is not a kmsr checkpoint
        from .spandrel_models import load_spandrel

        return load_spandrel(spec, scale=scale)
    path = Path(spec)
    if spec.endswith(".safetensors") or path.is_file():
        if not path.exists():
            raise KmsrError(f"{path}: no such model file")
        module, meta = load_model(path, scale=scale if scale else None, host=host)
        return _from_module(module, str(path), scale or meta.scale, host.get("backbones", meta.backbone),
                            meta={"backbone": meta.backbone, **meta.extra})
    if ":" in spec:
        name, weights = spec.split(":", 1)
        backend = host.get("backbones", name)
        if backend.info.get("published_weights") is None:
            with_loader = [n for n in host.names("backbones") if host.get("backbones", n).info.get("published_weights")]
            raise KmsrError(f"backbone {name!r} has no loader for published weights, so {spec!r} cannot be loaded; "
                           f"backbones with one: {', '.join(with_loader) or 'none'}",
                           hint="give a kmsr checkpoint instead: --model RUN_DIR/model.safetensors")
        if not Path(weights).exists():
            raise KmsrError(f"{weights}: no such weights file (for backbone {name!r})")
        if scale is not None:
            backbone_convention(backend, scale=scale)  # an unsupported scale, before loading anything
        module = backend.create(scale=scale, weights=weights)
        return _from_module(module, name, scale, backend)
    if spec in host.names("backbones"):
        if scale is None:
            raise KmsrError(f"the shipped {spec!r} model needs --scale")
        shipped = shipped_model_path(spec, scale)
        if not shipped.exists():
            raise KmsrError(f"kmsr ships no {spec!r} model for x{scale} (looked for {shipped})",
                           hint="train one with `kmsr train` and pass it with --model RUN_DIR/model.safetensors")
        module, meta = load_model(shipped, scale=scale, host=host)
        return _from_module(module, spec, scale, host.get("backbones", meta.backbone),
                            meta={"backbone": meta.backbone, **meta.extra})
    known = ", ".join(["bicubic", *host.names("backbones")])
    raise KmsrError(f"unknown model {spec!r}: expected a .safetensors file, NAME:WEIGHTS, spandrel:PATH, or one of {known}")
