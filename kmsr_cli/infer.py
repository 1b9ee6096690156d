"""Super-resolution inference on images of any size, tile by tile.

A model is fed according to its declared convention: ``upsampled`` models restore the
MATLAB-bicubic-upscaled image (KMSR, SRCNN, VDSR), ``lr`` models take the LR image and upscale
themselves (EDSR, DBPN); ``rgb`` models see RGB, ``y`` models see the Y channel of BT.601
(MATLAB ``rgb2ycbcr``) while the chroma is upscaled bicubically.

Tiles cover the output; each is computed from its input region plus a margin of
``overlap`` network-input pixels on every side, and only its centre is kept. When the margin
covers the network's receptive-field radius, the result equals untiled inference (the margin
pixels are the only ones that see the tile edge instead of the image). The bicubic upscaling
is done per tile too, from an LR crop with a few extra pixels: MATLAB bicubic at an integer
scale maps output pixel i of a crop starting at LR row r to global output pixel i + r*s, so
the crop's interior is the global result. Nothing image-sized is ever held in float: the
output is quantised tile by tile into an integer buffer, which keeps a 4096x4096 input within
a few GB.

A network whose input sides must be multiples of ``size_multiple`` gets each crop padded at the
bottom and right by repeating the last row and column, and its output cropped back; crops start
on multiples of it. A network that pools over its whole input (``global_context``, IMDN's
channel attention) sees per-tile statistics when tiled, so ``tile=0`` is needed for the exact
untiled result; a warning says so.

On the CPU the network runs on the fastest path that reproduces PyTorch eager (to 1e-4 on a
probe input, checked once per model): ONNX Runtime when it is installed (``pip install
'kmsr[fast]'``), else PyTorch with channels-last tensors; ``fast=False`` or the environment
variable ``KMSR_SR_FAST=0`` keeps plain eager. ``benchmarks/infer.py`` measures the paths.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kmsr_ops.colour import rgb2ycbcr, ycbcr2rgb
from kmsr_ops.errors import KmsrError, KmsrInputError
from kmsr_ops.resize import imresize

from .progress import ProgressSink, emit


class UnusableImageError(KmsrInputError):
    """The image itself cannot be super-resolved (too small, odd channel count): a per-file
    failure, as opposed to a bad setting that would fail every image alike."""

# Extra LR pixels around a crop before bicubic upscaling: the cubic kernel reaches 2 LR
# pixels on each side; 3 leaves a safety pixel.
_BICUBIC_MARGIN = 3

log = logging.getLogger("kmsr.infer")

FAST_ENV = "KMSR_SR_FAST"  # "0" keeps PyTorch eager on the CPU
FAST_ATOL = 1e-4  # a fast path must match eager to this on the probe input
_PROBE_SIDE = 40


@dataclass
class SRModel:
    """A network and how to feed it."""

    module: object  # torch.nn.Module
    scale: int
    input: str = "upsampled"  # "upsampled" | "lr"
    channels: str = "rgb"  # "rgb" | "y"
    receptive_field: int = 0  # in network-input pixels (0 = unknown)
    size_multiple: int = 1  # network-input sides must be multiples of it (padded at the bottom/right)
    global_context: bool = False  # pools over the whole input: tiles are close to, not equal to, untiled
    name: str = "model"
    meta: dict = field(default_factory=dict)
    ensemble: bool = False  # x8 self-ensemble in super_resolve (see there)
    # The fast CPU runner, built once per model (export and check cost a second or two).
    _fast: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.input not in ("upsampled", "lr"):
            raise KmsrInputError(f"model input: expected 'upsampled' or 'lr', found {self.input!r}")
        if self.channels not in ("rgb", "y"):
            raise KmsrInputError(f"model channels: expected 'rgb' or 'y', found {self.channels!r}")
        if int(self.scale) != self.scale or self.scale < 1:
            raise KmsrInputError(f"model scale: expected a positive integer, found {self.scale!r}")
        if int(self.size_multiple) != self.size_multiple or self.size_multiple < 1:
            raise KmsrInputError(f"model size_multiple: expected a positive integer, found {self.size_multiple!r}")


@dataclass(frozen=True)
class Tile:
    y0: int
    y1: int
    x0: int
    x1: int  # output region, in output pixels


def plan_tiles(out_h: int, out_w: int, tile: int) -> list[Tile]:
    """Output tiles of at most ``tile`` x ``tile`` (0 = one tile) covering the image."""
    if tile <= 0:
        return [Tile(0, out_h, 0, out_w)]
    tiles = []
    for y0 in range(0, out_h, tile):
        for x0 in range(0, out_w, tile):
            tiles.append(Tile(y0, min(out_h, y0 + tile), x0, min(out_w, x0 + tile)))
    return tiles


# The tile margin when the receptive field is unknown (0).
DEFAULT_OVERLAP = 16


def default_overlap(receptive_field: int) -> int:
    """The tile margin, in network-input pixels, that makes tiled output equal untiled output:
    the receptive-field radius plus one; :data:`DEFAULT_OVERLAP` when the field is unknown (0)."""
    return receptive_field // 2 + 1 if receptive_field else DEFAULT_OVERLAP


def _rgb(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(H, W, C) in [0, 1] → RGB float64, alpha or None, whether the input was grey."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    c = pixels.shape[2]
    if c == 1:
        return np.repeat(pixels, 3, axis=2).astype(np.float64), None, True
    if c == 3:
        return pixels.astype(np.float64), None, False
    if c == 4:
        return pixels[..., :3].astype(np.float64), pixels[..., 3].astype(np.float64), False
    raise UnusableImageError(f"image: expected 1, 3 or 4 channels, found {c}")


class _Runner:
    """Runs the network on float32 (1, C, h, w) arrays on a device, in eval mode, without autograd.

    ``backend`` says which path runs: ``eager``, or on the CPU with ``fast`` one of
    :data:`FAST_BACKENDS` (see :func:`_fast_cpu_runner`).
    """

    def __init__(self, model: SRModel, device: str, half: bool, fast: bool | None = None, ensemble: bool = False):
        import torch

        if half and not str(device).startswith("cuda"):
            raise KmsrInputError("--half runs on CUDA only; half precision on the CPU is slow and inaccurate")
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.module = model.module.to(self.device).to(self.dtype).eval()
        self.multiple = int(model.size_multiple)
        self.factor = int(model.scale) if model.input == "lr" else 1
        self.backend = "eager"
        self.ensemble = bool(ensemble)
        self._fast = None
        if fast is None:
            fast = self.device.type == "cpu" and os.environ.get(FAST_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
        if fast:
            if self.device.type != "cpu":
                log.info("the fast inference path is for the CPU; running PyTorch eager on %s", self.device)
            else:
                self._fast, self.backend = _fast_cpu_runner(model, self.module)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.ensemble:
            return self._padded(x)
        # x8 self-ensemble: the network on each of the 8 flips/transposes of the input, each output
        # mapped back, averaged. Every transform commutes with the bicubic upscaling and the tiling.
        total = None
        for k in range(4):
            for transpose in (False, True):
                t = np.rot90(x, k, axes=(-2, -1))
                t = t.swapaxes(-2, -1) if transpose else t
                y = self._padded(np.ascontiguousarray(t)).astype(np.float64)
                y = y.swapaxes(-2, -1) if transpose else y
                y = np.rot90(y, -k, axes=(-2, -1))
                total = y if total is None else total + y
        return (total / 8).astype(np.float32)

    def _padded(self, x: np.ndarray) -> np.ndarray:
        m = self.multiple
        h, w = x.shape[-2:]
        if m > 1 and (h % m or w % m):
            # The network takes sides that are multiples of m: repeat the last row/column, crop back.
            x = np.pad(x, ((0, 0), (0, 0), (0, -h % m), (0, -w % m)), mode="edge")
            return self._run(x)[..., : h * self.factor, : w * self.factor]
        return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._fast is not None:
            return self._fast(np.ascontiguousarray(x, dtype=np.float32))
        torch = self.torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device, self.dtype)
            y = self.module(t)
            return y.float().cpu().numpy()


def export_onnx_bytes(module, channels: int, side: int = _PROBE_SIDE) -> bytes:
    """``module`` as an ONNX graph (opset 17) with input ``x`` (N, C, H, W) and output ``y``; N, H
    and W are left free. Traced on a zero input of ``side`` x ``side`` pixels."""
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter needs only ``onnx`` (the dynamo one also needs onnxscript).
        # Its deprecation notice and tracer/constant-folding remarks are not for the user:
        # the exported network is checked against eager before it is used.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module, torch.zeros(1, channels, side, side), buf, dynamo=False,
                              input_names=["x"], output_names=["y"], opset_version=17,
                              dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "oh", 3: "ow"}})
    return buf.getvalue()


def onnx_cache_dir() -> Path:
    """Where exported graphs are kept: ``$KMSR_CACHE_DIR/onnx``, else ``$XDG_CACHE_HOME/kmsr/onnx``
    (``~/.cache/kmsr/onnx``)."""
    root = os.environ.get("KMSR_CACHE_DIR")
    if root:
        return Path(root) / "onnx"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kmsr" / "onnx"


def _cached_graph(key: str | None, export: Callable[[], bytes], *, refresh: bool = False) -> tuple[bytes, bool]:
    """(graph, came from the cache): the graph cached under ``key``, or a fresh export (then cached;
    ``refresh`` exports even when a cached one exists). The key covers the weights
    and the eager output on the probe, so a graph is never reused for another network; a graph
    read back is still checked against eager like a fresh one. A cache that cannot be read or
    written costs an export, with a log line, never a failure."""
    if key is None:
        return export(), False
    path = onnx_cache_dir() / f"{key}.onnx"
    if not refresh:
        try:
            return path.read_bytes(), True
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.info("ONNX cache %s unreadable (%s); exporting again", path, exc)
    graph = export()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from .atomic import replace_atomically

        replace_atomically(path, lambda tmp: Path(tmp).write_bytes(graph))
    except OSError as exc:
        log.info("ONNX cache %s not written (%s)", path, exc)
    return graph, False


def _graph_key(module, cin: int, side: int, probe_out: np.ndarray) -> str:
    import hashlib

    import torch

    h = hashlib.sha256(f"{torch.__version__}|{type(module).__module__}.{type(module).__qualname__}|{cin}|{side}".encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(np.ascontiguousarray(probe_out).tobytes())
    return h.hexdigest()


class _OrtRunner:
    """The network exported to ONNX (height and width left free) and run by ONNX Runtime."""

    def __init__(self, module, channels: int, side: int = _PROBE_SIDE, cache_key: str | None = None):
        import onnxruntime as ort
        import torch

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = torch.get_num_threads()  # honour OMP_NUM_THREADS / torch's setting
        so.inter_op_num_threads = 1

        def export() -> bytes:
            return export_onnx_bytes(module, channels, side)

        graph, cached = _cached_graph(cache_key, export)
        try:
            self.session = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - a damaged cached graph: export again and replace it
            if not cached:
                raise
            log.info("cached ONNX graph unusable (%s); exporting again", type(exc).__name__)
            graph, _ = _cached_graph(cache_key, export, refresh=True)
            self.session = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"x": x})[0]


class _ChannelsLastRunner:
    """PyTorch with NHWC tensors and weights: oneDNN's convolutions without layout reorders."""

    def __init__(self, module, channels: int, side: int = _PROBE_SIDE):
        import torch

        self.torch = torch
        self.module = copy.deepcopy(module).to(memory_format=torch.channels_last)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            y = self.module(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))
            return y.float().contiguous().numpy()


FAST_BACKENDS = {"onnxruntime": _OrtRunner, "channels_last": _ChannelsLastRunner}


def _weights_key(module) -> tuple:
    # Changes when a weight is replaced or modified in place (torch bumps _version), so a
    # cached fast runner never runs stale weights.
    import torch

    return (torch.get_num_threads(),) + tuple((t.data_ptr(), t._version) for t in module.state_dict().values())


def _fast_cpu_runner(model: SRModel, module):
    """(runner, name) for the first fast CPU path that builds and matches eager; (None, "eager") if none."""
    import torch

    key = _weights_key(module)
    cached = model._fast.get("cpu")
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    cin = 1 if model.channels == "y" else 3
    m = int(model.size_multiple)
    side = -(-_PROBE_SIDE // m) * m
    probe = np.random.default_rng(0).random((1, cin, side, side), dtype=np.float32)
    with torch.inference_mode():
        want = module(torch.from_numpy(probe)).float().numpy()
    runner, name, skipped = None, "eager", []
    for cand, build in FAST_BACKENDS.items():
        try:
            kw = {"cache_key": _graph_key(module, cin, side, want)} if cand == "onnxruntime" else {}
            r = build(module, cin, side, **kw)
            got = np.asarray(r(probe))
        except ImportError as exc:
            what = "is not installed" if exc.name in (None, cand) else f"needs {exc.name}, which is not installed"
            skipped.append(f"{cand} {what} (pip install 'kmsr[fast]')")
            continue
        except Exception as exc:  # noqa: BLE001 - whatever breaks a fast path, the next one (or eager) runs
            skipped.append(f"{cand} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        if not diff <= FAST_ATOL:
            skipped.append(f"{cand} differs from eager by {diff:.3g} (more than {FAST_ATOL:g})")
            continue
        runner, name = r, cand
        break
    if skipped:
        log.info("fast CPU inference for %s: %s; using %s", model.name, "; ".join(skipped),
                 name if runner is not None else "PyTorch eager")
    model._fast["cpu"] = (key, runner, name)
    return runner, name


def inference_backend(model: SRModel, device: str = "cpu", fast: bool | None = None) -> str:
    """The path :func:`super_resolve` runs ``model`` on: ``eager`` or a :data:`FAST_BACKENDS` name."""
    return _Runner(model, device, False, fast).backend


def super_resolve(
    model: SRModel,
    pixels: np.ndarray,
    *,
    tile: int = 512,
    overlap: int = 32,
    device: str = "cpu",
    half: bool = False,
    bit_depth: int = 8,
    on_tile: Callable[[int, int], None] | None = None,
    fast: bool | None = None,
    ensemble: bool = False,
    progress: ProgressSink | None = None,
) -> np.ndarray:
    """Super-resolve one image (H, W, C) float in [0, 1]; returns (sH, sW, C) uint8/uint16.

    ``ensemble`` averages the network's outputs over the 8 flips and 90-degree turns of the input
    (the x8 "self-ensemble" of EDSR+ and most SR papers' "+" rows): 8 times the work.

    Grey images come back grey, RGBA keeps its alpha (upscaled bicubically). ``fast`` (default:
    on for the CPU unless ``KMSR_SR_FAST=0``) runs the network on the fastest CPU path that
    matches eager (see the module docstring).

    ``progress`` gets a ``ProgressEvent`` of stage ``sr.tile`` (``done`` of ``total`` tiles) after
    each tile; ``on_tile(done, total)`` is the older keyword for the same.
    """
    if overlap < 0:
        raise KmsrInputError(f"tile-overlap: expected >= 0, found {overlap}")
    if tile < 0:
        raise KmsrInputError(f"tile: expected >= 0 (0 = no tiling), found {tile}")
    if tile and tile < 16:
        raise KmsrInputError(f"tile: expected 0 or at least 16 pixels, found {tile}")
    pixels = np.asarray(pixels)
    if pixels.ndim not in (2, 3) or min(pixels.shape[:2]) < 2:
        raise UnusableImageError(f"image: expected (H, W[, C]) of at least 2x2 pixels, found shape {pixels.shape}")
    rgb, alpha, grey = _rgb(pixels)
    s = int(model.scale)
    h, w = rgb.shape[:2]
    out_h, out_w = h * s, w * s
    out_c = 1 if grey else 3
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    maxval = float(np.iinfo(dtype).max)
    out = np.empty((out_h, out_w, out_c + (alpha is not None)), dtype=dtype)
    run = _Runner(model, device, half, fast, ensemble=ensemble or model.ensemble)
    if model.input == "lr" and tile:
        tile = max(s, tile - tile % s)  # LR-input tiles start on LR pixel boundaries
    tiles = plan_tiles(out_h, out_w, tile)
    if model.global_context and len(tiles) > 1:
        log.warning("%s pools statistics over its whole input; in %d tiles the result differs slightly from "
                    "the untiled one (--tile 0 for that)", model.name, len(tiles))
    for n, t in enumerate(tiles):
        restored = _tile(model, run, rgb, t, s, overlap)  # (3, th, tw) RGB float in [0, 1]
        if not np.isfinite(restored).all():  # would be written as black pixels
            raise KmsrError(f"{model.name}: the network's output holds NaN or infinite values; nothing was written "
                           "for this image",
                           hint="try without --half" if half else "check the model's weights (a diverged or damaged model?)")
        if grey:
            restored = restored.mean(axis=0, keepdims=True)
        out[t.y0 : t.y1, t.x0 : t.x1, :out_c] = np.rint(np.clip(restored, 0, 1) * maxval).transpose(1, 2, 0)
        if alpha is not None:
            a = _bicubic_region(alpha[..., None], s, t.y0, t.y1, t.x0, t.x1)[..., 0]
            out[t.y0 : t.y1, t.x0 : t.x1, out_c] = np.rint(np.clip(a, 0, 1) * maxval)
        emit(progress, "sr.tile", done=n + 1, total=len(tiles))
        if on_tile:
            on_tile(n + 1, len(tiles))
    return out


def _bicubic_region(lr: np.ndarray, s: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Rows y0:y1, cols x0:x1 (clipped to the image) of imresize(lr, s), from an LR crop."""
    h, w = lr.shape[:2]
    oy0, oy1 = max(0, y0), min(h * s, y1)
    ox0, ox1 = max(0, x0), min(w * s, x1)
    ly0 = max(0, oy0 // s - _BICUBIC_MARGIN)
    ly1 = min(h, math.ceil(oy1 / s) + _BICUBIC_MARGIN)
    lx0 = max(0, ox0 // s - _BICUBIC_MARGIN)
    lx1 = min(w, math.ceil(ox1 / s) + _BICUBIC_MARGIN)
    crop = lr[ly0:ly1, lx0:lx1]
    if s == 1:
        up = crop
    else:
        up = imresize(crop, s)
    return up[oy0 - ly0 * s : oy1 - ly0 * s, ox0 - lx0 * s : ox1 - lx0 * s]


def _tile(model: SRModel, run: _Runner, rgb: np.ndarray, t: Tile, s: int, overlap: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if model.input == "upsampled":
        m = overlap
        ey0, ey1 = max(0, t.y0 - m), min(h * s, t.y1 + m)
        ex0, ex1 = max(0, t.x0 - m), min(w * s, t.x1 + m)
        ey0, ex0 = ey0 - ey0 % model.size_multiple, ex0 - ex0 % model.size_multiple  # keep the network's grid
        up = _bicubic_region(rgb, s, ey0, ey1, ex0, ex1)  # (eh, ew, 3)
        net_out = _run_channels(model, run, up, scale=1)  # (3, eh, ew)
        return net_out[:, t.y0 - ey0 : t.y1 - ey0, t.x0 - ex0 : t.x1 - ex0]
    # LR-input network: tile in LR space; output tiles align with LR pixels times s.
    if t.y0 % s or t.x0 % s:
        raise AssertionError("LR-input tiles must start on multiples of the scale")
    ly0, ly1 = t.y0 // s, math.ceil(t.y1 / s)
    lx0, lx1 = t.x0 // s, math.ceil(t.x1 / s)
    m = math.ceil(overlap / s)
    if model.channels == "y":
        m = max(m, _BICUBIC_MARGIN)  # the chroma is upscaled bicubically from this crop
    ey0, ey1 = max(0, ly0 - m), min(h, ly1 + m)
    ex0, ex1 = max(0, lx0 - m), min(w, lx1 + m)
    ey0, ex0 = ey0 - ey0 % model.size_multiple, ex0 - ex0 % model.size_multiple  # keep the network's grid
    crop = rgb[ey0:ey1, ex0:ex1]
    net_out = _run_channels(model, run, crop, scale=s)  # (3, s*eh, s*ew)
    oy, ox = (ly0 - ey0) * s, (lx0 - ex0) * s
    return net_out[:, oy : oy + (t.y1 - t.y0), ox : ox + (t.x1 - t.x0)]


def _run_channels(model: SRModel, run: _Runner, rgb: np.ndarray, scale: int) -> np.ndarray:
    """Feed an RGB crop (h, w, 3) to the network per its channel convention; RGB (3, H, W) back."""
    if model.channels == "rgb":
        y = run(rgb.transpose(2, 0, 1)[None])[0]
        return y.astype(np.float64)
    ycc = rgb2ycbcr(rgb)
    y_out = run(ycc[None, None, :, :, 0])[0, 0].astype(np.float64)
    if scale == 1:
        chroma = ycc[..., 1:]
    else:
        chroma = imresize(ycc[..., 1:], scale)
    merged = np.concatenate([y_out[..., None], chroma], axis=2)
    return np.clip(ycbcr2rgb(merged), 0, 1).transpose(2, 0, 1)

