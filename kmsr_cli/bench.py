"""``kmsr bench quality``: the evaluation protocol of KMSR's Table 1 as a pipeline.

HR images → modcrop to the scale → one LR image per test set → every model, fed by its own
convention (:func:`kmsr_cli.infer.super_resolve`) → Y-PSNR and SSIM against the HR image with
``scale`` pixels shaved from each border.

Test sets (``--kernels``):

- ``bicubic``: MATLAB ``imresize(HR, 1/s, 'bicubic')`` (anti-aliased);
- ``gSIGMA`` (``g1.25``, ``g1.6``, ``g1.7``): isotropic Gaussian of std SIGMA HR pixels, then
  decimation on MATLAB's grid (:mod:`kmsr_ops.degrade`: no sub-pixel shift between the
  bicubic-upscaled LR and the HR);
- ``[NAME=]FILE.npy``: "unseen kernels" from a (N, K, K) stack or one (K, K) kernel; image i
  (in the order the images are listed) is blurred with kernel ``i mod N``. ``{s}`` in the path
  stands for the scale (kernels made for one LR scale, such as DIV2KRK's ``gt_k_x2``/``gt_k_x4``,
  need one file per scale). Kernels are normalised to sum 1, moved by whole pixels so their
  centroid is within half a pixel of their centre, and given the parity the scale needs.

The LR image stays float (clipped to [0, 1], not rounded to 8 bits, like MATLAB's golden
arrays) unless ``round_lr``; SR outputs are quantised to the HR's bit depth, as a saved result
would be.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kmsr_ops.errors import KmsrError, KmsrInputError

from .progress import ProgressSink, emit, fan_out, on_stage

# The metrics need a scale-pixel shave and SSIM's 11x11 window inside what is left.
_SSIM_WINDOW = 11
_GAUSSIAN = re.compile(r"^g(\d+(?:\.\d*)?|\.\d+)$")
# A file name that announces its scale: ..._x2_..., ...-x4.npy
_SCALE_IN_NAME = re.compile(r"(?:^|[_\-.])x(\d+)(?:[_\-.]|$)")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")

PROTOCOL = {
    "metric": "PSNR and SSIM on the Y channel of BT.601 (MATLAB rgb2ycbcr), scale pixels shaved from each border",
    "ssim": "Gaussian window sigma 1.5, 11x11 (Wang et al. 2004)",
    "hr": "modcropped to a multiple of the scale",
    "pairing": "kernel files: image i (in the order listed) uses kernel i mod N",
}


# --------------------------------------------------------------------------- parsing
def split_list(items: Iterable[str] | None) -> list[str]:
    """Comma-separated and repeated option values, flattened, blanks dropped."""
    out: list[str] = []
    for item in items or []:
        out.extend(p.strip() for p in str(item).split(",") if p.strip())
    return out


def parse_scales(items: Iterable[str] | None) -> list[int]:
    scales: list[int] = []
    for p in split_list(items):
        try:
            s = int(p)
        except ValueError:
            raise KmsrError(f"--scales: expected integers such as 2,4, found {p!r}") from None
        if s < 2:
            raise KmsrError(f"--scales: expected scales >= 2, found {s}")
        if s not in scales:
            scales.append(s)
    if not scales:
        raise KmsrError("--scales: no scale given", hint="--scales 2,4")
    return scales


def _split_label(item: str) -> tuple[str | None, str]:
    """``LABEL=SPEC`` → (LABEL, SPEC); a bare spec → (None, spec)."""
    if "=" in item:
        label, spec = item.split("=", 1)
        label, spec = label.strip(), spec.strip()
        if not _LABEL.match(label) or not spec:
            raise KmsrError(f"{item!r}: expected LABEL=SPEC with a label of letters, digits, '_', '-', '.', '+'")
        return label, spec
    return None, item


def _check_unique(labels: list[str], what: str) -> None:
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise KmsrError(f"{what}: the name {label!r} is given twice", hint="name each one with LABEL=SPEC")
        seen.add(label)


@dataclass(frozen=True)
class KernelSpec:
    """One LR test set: ``bicubic``, an isotropic Gaussian, or kernels from a .npy file."""

    name: str
    kind: str  # "bicubic" | "gaussian" | "file"
    sigma: float | None = None
    path: str | None = None  # may hold {s}

    def path_for(self, scale: int) -> Path:
        return Path(self.path.replace("{s}", str(scale)))

    def describe(self) -> dict:
        d = {"name": self.name, "kind": self.kind}
        if self.sigma is not None:
            d["sigma"] = self.sigma
        if self.path is not None:
            d["path"] = self.path
        return d

    def load(self, scale: int) -> np.ndarray | None:
        """(N, K, K) kernels ready for :func:`kmsr_ops.degrade.kernel_lr` at ``scale``; None for bicubic."""
        from kmsr_ops.degrade import gaussian_test_kernel, prepare_kernel

        if self.kind == "bicubic":
            return None
        if self.kind == "gaussian":
            return gaussian_test_kernel(self.sigma, scale)[None]
        path = self.path_for(scale)
        if "{s}" not in self.path:
            named = _SCALE_IN_NAME.search(path.name)
            if named and int(named.group(1)) != scale:
                raise KmsrError(
                    f"kernel set {self.name!r}: {path} is made for x{named.group(1)} (its name says), "
                    f"but --scales asks for x{scale}",
                    hint="put {s} in the path for one file per scale, e.g. ../kernels/div2krk_gt_k_x{s}.npy",
                )
        if not path.is_file():
            raise KmsrError(f"kernel set {self.name!r}: {path}: no such file (expected a .npy of (N, K, K) kernels)")
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise KmsrError(f"kernel set {self.name!r}: {path} is not a readable .npy file ({exc})") from None
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] != arr.shape[2]:
            raise KmsrError(f"kernel set {self.name!r}: {path} holds shape {arr.shape}, expected (N, K, K) or (K, K)")
        try:
            ks = [prepare_kernel(k, scale) for k in arr]
        except KmsrInputError as exc:
            raise KmsrError(f"kernel set {self.name!r}: {path}: {exc}") from None
        size = max(k.shape[0] for k in ks)
        out = np.zeros((len(ks), size, size))
        for i, k in enumerate(ks):
            o = (size - k.shape[0]) // 2  # same parity throughout, so padding keeps the centre
            out[i, o : o + k.shape[0], o : o + k.shape[0]] = k
        return out


def parse_kernels(items: Iterable[str] | None) -> list[KernelSpec]:
    specs: list[KernelSpec] = []
    for item in split_list(items):
        label, spec = _split_label(item)
        m = _GAUSSIAN.match(spec.lower())
        if spec.lower() == "bicubic":
            specs.append(KernelSpec(label or "bicubic", "bicubic"))
        elif m:
            sigma = float(m.group(1))
            if not (0 < sigma <= 20):
                raise KmsrError(f"--kernels: {spec!r}: expected a Gaussian std in (0, 20], found {sigma:g}")
            specs.append(KernelSpec(label or spec.lower(), "gaussian", sigma=sigma))
        elif spec.lower().endswith(".npy"):
            specs.append(KernelSpec(label or Path(spec).stem, "file", path=spec))
        else:
            raise KmsrError(f"--kernels: unknown test set {spec!r}: expected bicubic, gSIGMA (g1.25, g1.6, g1.7) or [NAME=]FILE.npy")
    if not specs:
        raise KmsrError("--kernels: no test set given", hint="--kernels bicubic,g1.25,g1.6,g1.7")
    _check_unique([s.name for s in specs], "--kernels")
    return specs


@dataclass(frozen=True)
class ModelSpec:
    """A model as given in ``--models``: the name it is reported under, and what to load (``{s}`` = scale)."""

    label: str
    spec: str

    def spec_for(self, scale: int) -> str:
        return self.spec.replace("{s}", str(scale))


def parse_models(items: Iterable[str] | None) -> list[ModelSpec]:
    specs: list[ModelSpec] = []
    for item in split_list(items):
        label, spec = _split_label(item)
        name, _, rest = spec.partition(":")
        if name == "spandrel" and rest:  # kept whole (spandrel:x.safetensors is no kmsr checkpoint); the file names it
            specs.append(ModelSpec(label or Path(rest).stem, spec))
        # NAME:PATH (a one-letter NAME would be a Windows drive).
        elif rest and len(name) > 1 and _LABEL.match(name):
            specs.append(ModelSpec(label or name, rest if rest.endswith(".safetensors") else spec))
        elif spec.endswith(".safetensors"):
            p = Path(spec)
            # `kmsr train` writes RUN_DIR/model.safetensors: the run folder names the model.
            specs.append(ModelSpec(label or (p.parent.name if p.stem == "model" and p.parent.name else p.stem), spec))
        else:
            specs.append(ModelSpec(label or spec, spec))
    if not specs:
        raise KmsrError("--models: no model given", hint="--models bicubic,vdsr:vdsr.npz,kmsr")
    _check_unique([m.label for m in specs], "--models")
    return specs


def load_model_for(ms: ModelSpec, scale: int, host=None, *, option: str = "--scales", ensemble: bool = False):
    """The :class:`~kmsr_cli.infer.SRModel` for ``ms`` at ``scale``; a wrong scale is a KmsrError
    (``option`` is the command's scale option, named in the message). ``ensemble``: every
    network runs as its x8 self-ensemble and its row is named LABEL+ (bicubic stays as it is)."""
    from .checkpoint import read_model_meta
    from .models import resolve_model

    spec = ms.spec_for(scale)
    hint = f"give one file per scale with {{s}} in its path (e.g. srcnn:weights/srcnn_915_x{{s}}_oihw.npz), or change {option}"
    if spec.endswith(".safetensors") and not spec.startswith("spandrel:"):
        path = Path(spec)
        if not path.is_file():
            raise KmsrError(f"model {ms.label!r}: {path}: no such checkpoint")
        meta = read_model_meta(path)
        if meta.scale is not None and meta.scale != scale:
            raise KmsrError(f"model {ms.label!r}: {path} is a x{meta.scale} checkpoint, but {option} asks for x{scale}",
                           hint=hint)
        srm = resolve_model(str(path), scale=scale, host=host)
    else:
        if ":" in spec and "{s}" not in ms.spec:
            named = _SCALE_IN_NAME.search(Path(spec.split(":", 1)[1]).name)
            if named and int(named.group(1)) != scale:
                raise KmsrError(f"model {ms.label!r}: {spec.split(':', 1)[1]} holds x{named.group(1)} weights "
                               f"(its name says), but {option} asks for x{scale}", hint=hint)
        srm = resolve_model(spec, scale=scale, host=host)
    if srm.scale != scale:
        raise KmsrError(f"model {ms.label!r} is for x{srm.scale}, but {option} asks for x{scale}", hint=hint)
    srm.name = ms.label
    if ensemble and spec != "bicubic":
        srm.ensemble, srm.name = True, f"{ms.label}+"
    return srm


# --------------------------------------------------------------------------- images
@dataclass
class HRImage:
    name: str
    path: Path
    pixels: np.ndarray  # float64 (H, W, 3) in [0, 1], exact multiples of 1/maxval
    bit_depth: int

    @property
    def maxval(self) -> float:
        return 255.0 if self.bit_depth == 8 else 65535.0


def read_samples(path: Path) -> tuple[np.ndarray, int]:
    """An image as RGB integer samples (uint8 or uint16, (H, W, 3)) and its bit depth.

    Divided by 255 (65535) in float64 they are the exact samples: the reader's float32 k/255 is
    off by ~1e-8, enough to spoil a comparison with MATLAB's float64 arrays.
    """
    from kmsr_ops.image_io import read_image

    img = read_image(path, channels="RGB")
    maxval = 255.0 if img.bit_depth == 8 else 65535.0
    dtype = np.uint8 if img.bit_depth == 8 else np.uint16
    return np.rint(img.pixels.astype(np.float64) * maxval).astype(dtype), img.bit_depth


def load_hr(specs: Iterable[str]) -> list[HRImage]:
    """HR images from files, folders (searched recursively) and globs, in the order given."""
    from .estimate import discover_photos

    paths = discover_photos(list(specs), missing_hint="check the --hr paths; nothing was benchmarked",
                            empty_hint="kmsr bench quality --hr IMAGE_OR_FOLDER... --models bicubic")
    images = []
    for p in paths:
        samples, bit_depth = read_samples(p)
        images.append(HRImage(p.name, p, samples / (255.0 if bit_depth == 8 else 65535.0), bit_depth))
    names = [im.name for im in images]
    if len(set(names)) != len(names):  # same file name in two folders: report full paths
        for im in images:
            im.name = str(im.path)
    return images


def min_hr_side(scale: int) -> int:
    """Smallest HR side the metrics can use: SSIM's window inside the shaved image."""
    return _SSIM_WINDOW + 2 * scale


def make_lr(hr: np.ndarray, kset: KernelSpec, kernels: np.ndarray | None, index: int, scale: int,
            *, image_name: str = "image") -> np.ndarray:
    """The LR image of test set ``kset`` for the ``index``-th HR image (float64, unclipped)."""
    from kmsr_ops.degrade import bicubic_lr, kernel_lr

    if kernels is None:
        return bicubic_lr(hr, scale)
    k = kernels[index % len(kernels)]
    if min(hr.shape[:2]) < k.shape[0]:
        raise KmsrError(f"{image_name}: the {hr.shape[1]}x{hr.shape[0]} image (after modcrop to x{scale}) is smaller "
                       f"than the {k.shape[0]}x{k.shape[0]} kernels of test set {kset.name!r}")
    return kernel_lr(hr, k, scale)


def quantise(x: np.ndarray, maxval: float) -> np.ndarray:
    return np.rint(np.clip(x, 0.0, 1.0) * maxval) / maxval


# --------------------------------------------------------------------------- the run
@dataclass
class BenchReport:
    results: list[dict]
    summary: list[dict]
    kernel_sets: list[dict]
    models: list[dict]
    images: list[str]
    scales: list[int]
    round_lr: bool
    protocol: dict | None = None  # None: bench quality's (PROTOCOL and the LR rounding)

    def document(self) -> dict:
        protocol = self.protocol if self.protocol is not None else {
            **PROTOCOL, "lr": "rounded to the HR bit depth" if self.round_lr else "float, clipped to [0, 1], not rounded"}
        return {
            "protocol": protocol,
            "images": self.images,
            "scales": self.scales,
            "kernel_sets": self.kernel_sets,
            "models": self.models,
            "results": self.results,
            "summary": self.summary,
        }


def summarise(results: list[dict]) -> list[dict]:
    """Mean PSNR/SSIM per (model, kernel, scale), in the order the results came."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["model"], r["kernel"], r["scale"]), []).append(r)
    return [
        {"model": m, "kernel": k, "scale": s,
         "psnr": float(np.mean([r["psnr"] for r in rs])), "ssim": float(np.mean([r["ssim"] for r in rs])), "n": len(rs)}
        for (m, k, s), rs in groups.items()
    ]


def bench_progress(progress: ProgressSink | None, on_step: Callable[[], None] | None,
                   on_set: Callable[[int, object, list[dict]], None] | None) -> ProgressSink | None:
    """``progress`` plus the older ``on_step`` / ``on_set`` callbacks of the bench runs, as one sink."""
    return fan_out(progress,
                   on_stage("bench.model", on_step and (lambda e: on_step())),
                   on_stage("bench.set", on_set and (lambda e: on_set(e.data["scale"], e.data["set"], e.data["summary"]))))


def run_quality(
    images: list[HRImage],
    scales: list[int],
    kernel_specs: list[KernelSpec],
    model_specs: list[ModelSpec],
    *,
    device: str = "cpu",
    tile: int = 512,
    round_lr: bool = False,
    out_images: Path | None = None,
    ensemble: bool = False,
    host=None,
    progress: ProgressSink | None = None,
    on_step: Callable[[], None] | None = None,
    on_set: Callable[[int, KernelSpec, list[dict]], None] | None = None,
) -> BenchReport:
    """Every model on every (scale, test set, image); models and kernels are loaded and checked first.

    ``progress`` gets a ``bench.model`` event after each model on each image (``done`` of ``total``)
    and a ``bench.set`` event after each test set (``data``: ``scale``, ``set``, ``summary``).
    ``on_step()`` and ``on_set(scale, set, summary)`` are the older form of the same events.
    """
    from kmsr_ops.image_io import write_png
    from kmsr_ops.resize import modcrop

    if not images:
        raise KmsrError("no HR images given")
    # Load everything before the long part, so a bad model or kernel file fails at once.
    models = {s: [load_model_for(ms, s, host, ensemble=ensemble) for ms in model_specs] for s in scales}
    kernels = {(s, ks.name): ks.load(s) for s in scales for ks in kernel_specs}
    for s in scales:
        for im in images:
            h, w = im.pixels.shape[:2]
            side = min(h - h % s, w - w % s)
            if side < min_hr_side(s):
                raise KmsrError(f"{im.path}: a {w}x{h} image is too small for x{s}: the metrics need at least "
                               f"{min_hr_side(s)} pixels a side (SSIM's 11x11 window after a {s}-pixel shave)")
            for ks in kernel_specs:
                k = kernels[(s, ks.name)]
                if k is not None and side < k.shape[-1]:
                    raise KmsrError(f"{im.path}: the {w}x{h} image (modcropped to x{s}) is smaller than the "
                                   f"{k.shape[-1]}x{k.shape[-1]} kernels of test set {ks.name!r}")
    progress = bench_progress(progress, on_step, on_set)
    total, done = len(scales) * len(kernel_specs) * len(images) * len(model_specs), 0
    results: list[dict] = []
    for s in scales:
        for ks in kernel_specs:
            set_results: list[dict] = []
            for i, im in enumerate(images):
                hr = modcrop(im.pixels, s)
                lr = make_lr(hr, ks, kernels[(s, ks.name)], i, s, image_name=str(im.path))
                lr = quantise(lr, im.maxval) if round_lr else np.clip(lr, 0.0, 1.0)
                if out_images is not None:
                    _write(write_png, out_images / ks.name / f"x{s}" / "_lr" / f"{Path(im.name).stem}.png",
                           np.rint(np.clip(lr, 0, 1) * im.maxval), im.bit_depth)
                for srm in models[s]:
                    out, p, q = score_model(srm, lr, hr, im.bit_depth, device=device, tile=tile)
                    set_results.append({"image": im.name, "model": srm.name, "kernel": ks.name, "scale": s,
                                        "psnr": p, "ssim": q})
                    if out_images is not None:
                        _write(write_png, out_images / ks.name / f"x{s}" / srm.name / f"{Path(im.name).stem}.png",
                               out, im.bit_depth)
                    done += 1
                    emit(progress, "bench.model", done=done, total=total)
            results.extend(set_results)
            emit(progress, "bench.set", data={"scale": s, "set": ks, "summary": summarise(set_results)})
    kernel_sets = []
    for ks in kernel_specs:
        d = ks.describe()
        if ks.kind == "file":
            d["count"] = {f"x{s}": int(len(kernels[(s, ks.name)])) for s in scales}
            d["pairing"] = "image i uses kernel i mod N"
        kernel_sets.append(d)
    return BenchReport(results, summarise(results), kernel_sets, describe_models(model_specs, models[scales[0]]),
                       [im.name for im in images], scales, round_lr)


def describe_models(model_specs: list[ModelSpec], models: list) -> list[dict]:
    """The ``models`` entries of the JSON document: name, spec and how each model is fed."""
    return [{"name": m.name, "spec": ms.spec, "input": m.input, "channels": m.channels}
            for ms, m in zip(model_specs, models)]


def score_model(srm, lr: np.ndarray, hr: np.ndarray, bit_depth: int, *, device: str = "cpu",
                tile: int = 512) -> tuple[np.ndarray, float, float]:
    """Super-resolve ``lr`` with ``srm`` (fed by its own convention) and score it against ``hr``.

    ``lr`` and ``hr`` are float (H, W, 3) in [0, 1]; the output is rounded to ``bit_depth`` (as a
    saved result would be) and compared on the Y channel with ``srm.scale`` pixels shaved from
    each border. Returns (output as uint8/uint16, Y-PSNR, SSIM).
    """
    from kmsr_ops.metrics import psnr, ssim

    from .infer import default_overlap, super_resolve

    s = int(srm.scale)
    out = super_resolve(srm, lr, tile=tile, overlap=default_overlap(srm.receptive_field), device=device,
                        bit_depth=bit_depth)
    sr255 = out.astype(np.float64) * (255.0 / (255.0 if bit_depth == 8 else 65535.0))
    hr255 = hr * 255.0
    return (out, psnr(hr255, sr255, crop_border=s, test_y_channel=True),
            ssim(hr255, sr255, crop_border=s, test_y_channel=True))


def _write(write_png, path: Path, pixels: np.ndarray, bit_depth: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bit_depth = 8 if bit_depth == 8 else 16  # a float (32) HR image: its LR and SR as 16-bit PNGs
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    write_png(path, np.asarray(pixels).astype(dtype), bit_depth=bit_depth)


# --------------------------------------------------------------------------- rendering
