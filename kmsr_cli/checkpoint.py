"""Model checkpoints: safetensors weights with kmsr's JSON metadata in the same file.

One file per model. The tensors are the model's ``state_dict``; the safetensors header's
string metadata holds ``format`` (``kmsr-model``), ``format_version`` and ``kmsr``, a JSON
document (:class:`ModelMeta`)::

    {"backbone": "kmsr", "scale": 2, "options": {"variant": "edsr", "blocks": 16, ...},
     "extra": {"degradation": {...}, "pool_fingerprint": "...", "step": 1200},
     "kmsr_version": "0.1.0", "created_at": "2025-01-01T00:00:00+00:00"}

``options`` are the backbone's resolved constructor options, so the loader rebuilds exactly the
saved architecture through the plugin host, even if a default changes later. ``extra`` is free
JSON for the caller (training degradation, pool fingerprint, step, ...). Training state for
resuming (optimiser, scheduler, RNG) does not belong here.

Files are written to a temporary file in the same folder and moved into place. Nothing is
unpickled when loading. Every failure raises :class:`KmsrError` naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kmsr_ops.errors import KmsrError

from . import __version__
from .atomic import replace_atomically

FORMAT_NAME = "kmsr-model"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
_HINT = "kmsr plugins  (lists the installed backbones)"
_MISSING = object()


@dataclass
class ModelMeta:
    """What a checkpoint says about the model it holds."""

    backbone: str
    scale: int | None
    options: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    kmsr_version: str = __version__
    created_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: str | os.PathLike) -> ModelMeta:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KmsrError(f"{path}: the kmsr metadata is not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("backbone"), str):
            raise KmsrError(f"{path}: the kmsr metadata has no backbone name")
        scale = doc.get("scale")
        if scale is not None and (not isinstance(scale, int) or isinstance(scale, bool)):
            raise KmsrError(f"{path}: the kmsr metadata has scale {scale!r}, expected an integer or null")
        for key in ("options", "extra"):
            if not isinstance(doc.get(key, {}), dict):
                raise KmsrError(f"{path}: the kmsr metadata's {key!r} is not a JSON object")
        return cls(
            backbone=doc["backbone"],
            scale=scale,
            options=dict(doc.get("options", {})),
            extra=dict(doc.get("extra", {})),
            kmsr_version=str(doc.get("kmsr_version", "")),
            created_at=str(doc.get("created_at", "")),
        )


def _json_friendly(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise KmsrError(f"{what}: expected JSON-friendly values (numbers, strings, lists, dicts), found {exc}") from None


def save_model(
    path: str | os.PathLike,
    model,
    *,
    backbone: str,
    scale: int | None = None,
    options: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model``'s weights and metadata to ``path`` atomically; returns the path.

    :param backbone: the registry name the model was built with (``kmsr``, ``edsr``, ...).
    :param scale: default ``model.scale`` (the built-in backbones carry it).
    :param options: constructor options; default ``model.options`` (resolved by the built-ins).
        A third-party module without these attributes must pass both.
    :param extra: free JSON metadata (training degradation, pool fingerprint, step, ...).
    """
    from safetensors.torch import save_file

    if scale is None:
        scale = getattr(model, "scale", None)
    if options is None:
        options = getattr(model, "options", None)
        if options is None:
            raise KmsrError(f"save_model: {type(model).__name__} has no .options; pass options= (constructor arguments)")
    if scale is not None and (isinstance(scale, bool) or int(scale) != scale):
        raise KmsrError(f"save_model: scale must be an integer or None, found {scale!r}")
    meta = ModelMeta(
        backbone=str(backbone),
        scale=None if scale is None else int(scale),
        options=_json_friendly(dict(options), "options"),
        extra=_json_friendly(dict(extra or {}), "extra"),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    # Copies: safetensors refuses tensors that share storage (tied or sliced parameters).
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "kmsr": meta.to_json()}

    return replace_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=header), fsync=True)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise KmsrError(f"{path}: no such file (expected a kmsr model checkpoint, {SUFFIX})")
    if path.is_dir():
        raise KmsrError(f"{path}: is a folder, expected a kmsr model checkpoint ({SUFFIX})")


def read_model_meta(path: str | os.PathLike) -> ModelMeta:
    """The metadata of a checkpoint, without loading its tensors."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise KmsrError(f"{path}: not a readable safetensors file ({exc}); expected a kmsr model checkpoint") from None
    fmt = header.get("format")
    if fmt != FORMAT_NAME or "kmsr" not in header:
        raise KmsrError(
            f"{path}: a safetensors file without kmsr metadata (format={fmt!r}, expected {FORMAT_NAME!r}); "
            "published weights load through the backbone's weights= option"
        )
    try:
        version = int(header.get("format_version", "0"))
    except ValueError:
        version = -1
    if not 1 <= version <= FORMAT_VERSION:
        raise KmsrError(f"{path}: checkpoint format version {header.get('format_version')!r}; this kmsr reads 1..{FORMAT_VERSION}")
    return ModelMeta.from_json(header["kmsr"], path)


def check_meta(meta: ModelMeta, path, *, backbone: str | None = None, options: dict | None = None,
               scale: int | None = None) -> None:
    """Raise KmsrError when the checkpoint is not for the expected backbone, options or scale.

    Only what is given is checked; ``options`` are compared key by key (a key the checkpoint
    lacks counts as a mismatch).
    """
    if backbone is not None and meta.backbone != backbone:
        raise KmsrError(
            f"{path}: checkpoint is for backbone {meta.backbone!r} ({_fmt(meta.options)}), expected {backbone!r}",
            hint=f"use --backbone {meta.backbone}, or another checkpoint",
        )
    if scale is not None and meta.scale is not None and meta.scale != scale:
        raise KmsrError(f"{path}: checkpoint is for scale x{meta.scale}, expected x{scale}")
    if options:
        wrong = {k: v for k, v in options.items() if meta.options.get(k, _MISSING) != v}
        if wrong:
            found = {k: meta.options.get(k, "<absent>") for k in wrong}
            raise KmsrError(f"{path}: checkpoint {meta.backbone!r} was built with {_fmt(found)}, expected {_fmt(wrong)}")


def _fmt(options: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(options.items())) or "no options"


def _check_finite(state: dict, path: Path) -> None:
    """Refuse weights holding NaN or inf: such a model writes black images and exits 0."""
    import torch

    bad = [(k, int((~torch.isfinite(t)).sum())) for k, t in state.items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        k, n = bad[0]
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise KmsrError(f"{path}: the weights are damaged: tensor {k!r} holds {n} NaN or infinite values{more}",
                       hint="use an earlier checkpoint (e.g. best.safetensors), or train again with a lower --lr")


def _check_model_size(host, meta: ModelMeta, path: Path) -> None:
    """Before building the model the metadata describes, build it on torch's ``meta`` device
    (no memory) and weigh it: metadata claiming ``"filters": 1000000000`` is refused with one
    line instead of an allocator failure. A backbone that cannot be built there is not probed."""
    import torch

    from .limits import check_memory, human_bytes

    try:
        with torch.device("meta"):
            probe = host.get("backbones", meta.backbone).create(scale=meta.scale, **meta.options)
        need = sum(t.numel() * t.element_size() for t in probe.state_dict().values())
    except (TypeError, ValueError) as exc:
        raise KmsrError(f"{path}: backbone {meta.backbone!r} rejects the saved options {_fmt(meta.options)}: {exc}") from None
    except RuntimeError as exc:
        if "overflow" not in str(exc):
            return  # not buildable on the meta device (say, .item() in __init__): the real build decides
        raise KmsrError(f"{path}: the metadata describes a {meta.backbone!r} model ({_fmt(meta.options)}) too large "
                       f"to exist (its tensor sizes overflow), but the file holds {human_bytes(path.stat().st_size)}: "
                       "the file is damaged or its metadata is wrong") from None
    except Exception:  # noqa: BLE001 - not buildable on the meta device: the real build decides
        return
    held = path.stat().st_size
    # Weights saved in half (or 8-bit) precision take 2 (4) times less than the float32 model.
    if need > 4 * held + (1 << 20):
        raise KmsrError(f"{path}: the metadata describes a {meta.backbone!r} model ({_fmt(meta.options)}) of "
                       f"{human_bytes(need)} of weights, but the file holds {human_bytes(held)}: the file is damaged "
                       "or its metadata is wrong")
    check_memory(need, f"{path}: the {meta.backbone!r} model ({_fmt(meta.options)})")


def load_model(
    path: str | os.PathLike,
    *,
    backbone: str | None = None,
    options: dict | None = None,
    scale: int | None = None,
    device="cpu",
    host=None,
):
    """Rebuild a checkpoint's model through the plugin host and load its weights.

    ``backbone``/``options``/``scale``, when given, must match the checkpoint (see
    :func:`check_meta`). Returns ``(model, meta)``; the model is in evaluation mode on ``device``.

    :param host: a :class:`~kmsr_cli.plugin_host.PluginHost`; default the process-wide one.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .plugin_host import get_host

    path = Path(path)
    meta = read_model_meta(path)
    check_meta(meta, path, backbone=backbone, options=options, scale=scale)
    host = host or get_host()
    if meta.backbone not in host.names("backbones"):
        known = ", ".join(host.names("backbones")) or "none installed"
        raise KmsrError(f"{path}: checkpoint is for backbone {meta.backbone!r}, which is not installed (installed: {known})",
                       hint=_HINT)
    _check_model_size(host, meta, path)
    try:
        model = host.get("backbones", meta.backbone).create(scale=meta.scale, **meta.options)
    except (TypeError, ValueError) as exc:
        raise KmsrError(f"{path}: backbone {meta.backbone!r} rejects the saved options {_fmt(meta.options)}: {exc}") from None
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise KmsrError(f"{path}: the weights cannot be read ({exc}); the file is damaged") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with other shapes (e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})")
        raise KmsrError(f"{path}: weights do not fit backbone {meta.backbone!r} ({_fmt(meta.options)}): " + "; ".join(parts))
    _check_finite(state, path)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ModelMeta", "check_meta", "load_model", "read_model_meta", "save_model"]


def short_reason(text: str, limit: int = 120) -> str:
    line = " ".join(text.strip().splitlines()[:1]).strip()
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def load_training_state(path: str | os.PathLike, *, hint: str | None = None) -> Any:
    """The tensors-only training state (``state.pt``) at ``path``, read with ``weights_only=True``.

    Nothing is unpickled beyond tensors and plain containers. A file that cannot be read as one
    (empty, truncated, a pickle of other objects, another format) raises :class:`KmsrError`: one
    line naming the file and saying that the state is damaged, whatever torch raised.
    """
    import pickle
    import warnings

    import torch

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise KmsrError(f"{path}: the training state cannot be read ({exc.strerror or exc})", hint=hint) from None
    if size == 0:
        raise KmsrError(f"{path}: the training state is damaged (the file is empty)", hint=hint)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says enough
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - weights_only runs no code; any failure means a bad file
        text = str(exc)
        if isinstance(exc, pickle.UnpicklingError):
            reason = "it holds pickled objects other than tensors, which kmsr never loads"
        elif isinstance(exc, KeyError) or "zip archive" in text or "central directory" in text:
            reason = "truncated, or not a torch file"
        else:
            reason = f"{type(exc).__name__}: {short_reason(text) or 'unexpected end of file'}"
        raise KmsrError(f"{path}: the training state is damaged or not a kmsr training state ({reason})",
                       hint=hint) from None
