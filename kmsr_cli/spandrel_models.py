"""Published SR models through spandrel (chaiNNer's loader): ``--model spandrel:PATH``.

spandrel recognises a model's architecture and hyper-parameters from its weights alone and says
how it is fed: scale, input and output channels, size requirements (minimum side, multiple of,
square), whether tiling suits it and whether it runs in float16. kmsr takes the feeding
convention from that report, never from guesses:

- ``input`` is ``lr`` (every spandrel image model takes the LR image and upscales itself),
  ``channels`` ``rgb``; ``scale`` is spandrel's and must match ``--scale``/``--scales`` if given;
- 3 input channels: the RGB image as it is; 1 (grey models): each of R, G and B through the
  network on its own (a grey image is then exactly the model's grey result); 4 (RGBA models):
  RGB plus an opaque alpha, of which the RGB output is kept (kmsr upscales the image's own
  alpha bicubically, as for every model); other channel counts, or an output channel count that
  differs from the input's, are refused;
- ``size_multiple`` is spandrel's ``multiple_of`` (kmsr pads and keeps tiles on that grid);
  spandrel's ``minimum`` and ``square`` are met by spandrel's own call, which pads and crops back;
- a model whose tiling spandrel calls discouraged or internal is marked ``global_context``, so a
  tiled run warns that ``--tile 0`` gives the untiled result; the receptive field is not reported,
  so it is left unknown (the default 16-pixel tile margin).

Weights are read by kmsr, never unpickled as code: ``.pth``/``.pt``/``.ckpt`` with
``torch.load(weights_only=True)`` (a TorchScript ``.pt`` is refused, not run), ``.safetensors``
with safetensors; only then is the state dict handed to spandrel. A file spandrel does not
recognise, one ``weights_only`` refuses, a damaged one, or a masked (inpainting) model is a
:class:`KmsrError` naming the file and the reason.

A spandrel model is run eagerly (PyTorch, channels-last on the CPU fast path): several
architectures take Python branches on the input size (SwinIR's attention masks), which a traced
ONNX graph would freeze at the size it was traced on, so tracing is refused.

The extra is ``pip install 'kmsr[spandrel]'``; spandrel imports torchvision, which must be the
build made for the installed torch.
"""

from __future__ import annotations

from pathlib import Path

from kmsr_ops.errors import KmsrError

from .infer import SRModel
from .models import Convention

PREFIX = "spandrel:"
INSTALL_HINT = "pip install 'kmsr[spandrel]' (spandrel needs a torchvision built for your torch)"
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt")
SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")


def is_spandrel_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


def _import_spandrel():
    try:
        import spandrel
    except ImportError as exc:
        missing = exc.name or "spandrel"
        raise KmsrError(f"--model spandrel:... needs {missing}, which is not installed", hint=INSTALL_HINT) from None
    except RuntimeError as exc:
        # A torchvision built for another torch fails while registering its operators
        # ("operator torchvision::nms does not exist"): a RuntimeError, not an ImportError.
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KmsrError(f"spandrel cannot be imported here ({first}); its torchvision does not match this torch",
                       hint="install the torchvision release made for your torch, then " + INSTALL_HINT) from None
    return spandrel


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = text.splitlines()[0]
    return f"{type(exc).__name__}: {line if len(line) <= limit else line[: limit - 3] + '...'}"


def read_state_dict(path: Path) -> dict:
    """The tensors of ``path`` without running any code stored in it; :class:`KmsrError` if refused."""
    import pickle
    import re

    import torch

    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise KmsrError(f"{path}: not a model file spandrel can load here (expected {', '.join(SUFFIXES)})")
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise KmsrError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    if _is_torchscript(path):
        raise KmsrError(f"{path}: a TorchScript archive (code, not weights); kmsr does not run it",
                       hint="save the network's state_dict() with torch.save, or as .safetensors")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise KmsrError(f"{path}: not a readable PyTorch weights file ({_first_line(exc)})") from None
        # weights_only's refusal: the file pickles objects other than tensors and plain containers.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        what = f"it pickles {found.group(1)}" if found else _first_line(exc)
        raise KmsrError(f"{path}: refused: torch.load(weights_only=True) will not unpickle it ({what}, not only "
                       "tensors); a whole pickled model rather than its weights?",
                       hint="save the network's state_dict() with torch.save, or as .safetensors") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        # A damaged zip ("PytorchStreamReader failed"), a truncated pickle, or bytes that are no pickle at all.
        raise KmsrError(f"{path}: not a readable PyTorch weights file ({_first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise KmsrError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    return obj


def _is_torchscript(path: Path) -> bool:
    # torch.save and torch.jit.save both write zip archives; only TorchScript ones hold code/.
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/")[1:2] == ["code"] for n in z.namelist())


def _tensors_only(sd: dict, path: Path, spandrel) -> dict:
    import torch

    sd = spandrel.canonicalize_state_dict(sd)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise KmsrError(f"{path}: entry {bad[0]!r} is a {type(sd[bad[0]]).__name__}, not a tensor; "
                       "expected a state dict (or one wrapped under state_dict/params_ema/...)")
    if not sd:
        raise KmsrError(f"{path}: holds no tensors")
    return sd


def spandrel_convention(desc) -> Convention:
    """How kmsr feeds the spandrel model ``desc`` (see the module docstring)."""
    import spandrel

    tiling = desc.tiling
    return Convention(input="lr", channels="rgb", scale=int(desc.scale), receptive_field=0,
                      size_multiple=int(desc.size_requirements.multiple_of),
                      global_context=tiling in (spandrel.ModelTiling.DISCOURAGED, spandrel.ModelTiling.INTERNAL))


def _net_class():
    import torch

    class SpandrelNet(torch.nn.Module):
        """An RGB (N, 3, h, w) → (N, 3, sh, sw) module around a spandrel image model."""

        input_kind = "lr"
        channels = "rgb"

        def __init__(self, desc, name: str):
            super().__init__()
            self.net = desc.model  # registered, so .to(), state_dict() and deepcopy reach the weights
            self.desc = desc  # spandrel's call: the architecture's own call function, padding, clamp
            self.scale = int(desc.scale)
            self.size_multiple = int(desc.size_requirements.multiple_of)
            self.in_channels = int(desc.input_channels)
            self.name = name

        def forward(self, x):
            if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
                raise KmsrError(f"{self.name}: spandrel models run in PyTorch only; a traced graph would freeze "
                               "the size-dependent steps some architectures take")
            if x.dtype == torch.float16 and not self.desc.supports_half:
                raise KmsrError(f"{self.name}: spandrel says this {self.desc.architecture.name} model does not run in "
                               "float16", hint="drop --half")
            n, c, h, w = x.shape
            if c != 3:
                raise KmsrError(f"{self.name}: expected an RGB input, found {c} channels")
            if self.in_channels == 1:
                y = self.desc(x.reshape(n * 3, 1, h, w))
                return y.reshape(n, 3, y.shape[-2], y.shape[-1])
            if self.in_channels == 4:
                return self.desc(torch.cat([x, torch.ones_like(x[:, :1])], dim=1))[:, :3]
            return self.desc(x)

    return SpandrelNet


def load_spandrel(spec: str, *, scale: int | None) -> SRModel:
    """The model of ``spandrel:PATH``, fed by what spandrel reports; ``scale``, if given, must be its."""
    path = Path(spec[len(PREFIX):]) if is_spandrel_spec(spec) else Path(spec)
    if not str(path) or str(path) == ".":
        raise KmsrError(f"{spec!r}: expected spandrel:PATH to a model file ({', '.join(SUFFIXES)})")
    if not path.is_file():
        raise KmsrError(f"{path}: no such model file" + ("" if not path.exists() else " (a folder?)"))
    spandrel = _import_spandrel()
    sd = _tensors_only(read_state_dict(path), path, spandrel)
    try:
        desc = spandrel.ModelLoader(device="cpu").load_from_state_dict(sd)
    except spandrel.UnsupportedModelError:
        keys = ", ".join(list(sd)[:3])
        raise KmsrError(f"{path}: spandrel {spandrel.__version__} does not recognise this architecture "
                       f"({len(sd)} tensors, first keys: {keys})",
                       hint="check the file is an SR model spandrel lists, or give a kmsr checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - an architecture's detection/loading failed on these tensors: one line
        raise KmsrError(f"{path}: spandrel could not build a model from its tensors ({_first_line(exc)})") from None
    arch = desc.architecture.name
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise KmsrError(f"{path}: a {arch} {desc.purpose} model (it needs a mask as well as the image); "
                       "kmsr runs image-to-image models only")
    if desc.input_channels not in (1, 3, 4) or desc.output_channels != desc.input_channels:
        raise KmsrError(f"{path}: a {arch} model with {desc.input_channels} input and {desc.output_channels} output "
                       "channels; kmsr feeds models of 1 (grey), 3 (RGB) or 4 (RGBA) channels in and out")
    conv = spandrel_convention(desc)
    if scale is not None and conv.scale != scale:
        raise KmsrError(f"model {str(path)!r} is a x{conv.scale} {arch} model (spandrel says), not x{scale}")
    module = _net_class()(desc, str(path)).eval()
    req = desc.size_requirements
    meta = {"spandrel": {"architecture": desc.architecture.id, "purpose": desc.purpose, "tags": list(desc.tags),
                         "input_channels": desc.input_channels, "output_channels": desc.output_channels,
                         "size_minimum": req.minimum, "size_multiple_of": req.multiple_of, "size_square": req.square,
                         "tiling": desc.tiling.name.lower(), "supports_half": desc.supports_half}}
    return SRModel(module, scale=conv.scale, input=conv.input, channels=conv.channels,
                   receptive_field=conv.receptive_field, size_multiple=conv.size_multiple,
                   global_context=conv.global_context, name=str(path), meta=meta)
