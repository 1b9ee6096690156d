"""``kmsr bench real``: SR models on real camera HR/LR pairs, scored like ``kmsr bench quality``.

A pair set is a folder in one of two layouts:

- ``HR/`` and ``LR/`` sub-folders holding the same file names (``HR/Canon_001.png`` with
  ``LR/Canon_001.png``);
- RealSR-style names in one folder: ``NAME_HR.png`` with ``NAME_LR{S}.png`` for scale S
  (``Canon_001_HR.png`` with ``Canon_001_LR4.png``); LR files for other scales are ignored.

The LR image is fed as it is (the real capture, not a synthesised one), each model by its own
convention, through the same code as ``bench quality`` (:func:`kmsr_cli.bench.score_model`):
output rounded to the HR's bit depth, Y-PSNR and SSIM with ``scale`` pixels shaved from each
border. The HR must be ``scale`` times the LR; an HR larger by less than ``scale`` pixels a side
is modcropped (top-left kept), anything else is an error naming the file and both sizes.

The report is :class:`kmsr_cli.bench.BenchReport`: the same JSON document, table, Markdown and
CSV as ``bench quality``, with the pair set's name in the ``kernel`` field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kmsr_ops.errors import KmsrError

from .bench import (
    PROTOCOL,
    BenchReport,
    ModelSpec,
    _split_label,
    bench_progress,
    describe_models,
    load_model_for,
    min_hr_side,
    read_samples,
    score_model,
    summarise,
)
from .progress import ProgressSink, emit

LAYOUT_FOLDERS = "HR/ and LR/"
LAYOUT_NAMES = "NAME_HR / NAME_LR{s}"
_REALSR_NAME = re.compile(r"^(?P<name>.+)_(?:(?P<hr>HR)|LR(?P<s>\d+))$", re.IGNORECASE)
DEFAULT_CROP = 128

REAL_PROTOCOL = {
    "metric": PROTOCOL["metric"],
    "ssim": PROTOCOL["ssim"],
    "hr": "the HR file; modcropped to scale x the LR size when larger by less than scale pixels a side",
    "lr": "the real LR file as it is (not synthesised), exact samples, not resampled",
    "pairing": "HR/ and LR/ sub-folders with the same file names, or NAME_HR with NAME_LR{scale} in one folder",
    "kernel": "the results' 'kernel' field holds the pair set's name",
}


def _expected_layouts(scale: int | str = "{S}") -> str:
    return (f"expected HR/ and LR/ sub-folders holding the same file names, "
            f"or NAME_HR.png with NAME_LR{scale}.png in one folder")


@dataclass
class Pair:
    """One HR/LR pair; the samples are read by :func:`load_pairs`."""

    name: str
    hr_path: Path
    lr_path: Path
    hr: np.ndarray | None = None  # uint8/uint16 (H, W, 3), modcropped to scale x the LR
    lr: np.ndarray | None = None  # uint8/uint16 (h, w, 3)
    hr_bits: int = 8
    lr_bits: int = 8
    modcropped: bool = False

    @property
    def hr_pixels(self) -> np.ndarray:
        return self.hr / (255.0 if self.hr_bits == 8 else 65535.0)

    @property
    def lr_pixels(self) -> np.ndarray:
        return self.lr / (255.0 if self.lr_bits == 8 else 65535.0)


@dataclass
class PairSet:
    name: str
    folder: Path
    layout: str
    pairs: list[Pair] = field(default_factory=list)

    def describe(self) -> dict:
        return {"name": self.name, "kind": "pairs", "path": str(self.folder), "layout": self.layout,
                "count": len(self.pairs), "modcropped": sum(p.modcropped for p in self.pairs)}


# --------------------------------------------------------------------------- finding pairs
def _images_in(folder: Path) -> list[Path]:
    from kmsr_ops.image_io import images_in

    return images_in(folder)


def _child(folder: Path, name: str) -> Path | None:
    """The sub-folder ``name`` of ``folder``, in any letter case."""
    exact = folder / name
    if exact.is_dir():
        return exact
    for p in folder.iterdir():
        if p.is_dir() and p.name.lower() == name.lower():
            return p
    return None


def _check_matched(folder: Path, hr: dict[str, Path], lr: dict[str, Path], lr_name, hr_name) -> None:
    """Every HR image has its LR partner and every LR image its HR one (``lr_name`` / ``hr_name``:
    the partner file a pair key would need), or the first one missing is named."""
    for have, other, partner in ((hr, lr, lr_name), (lr, hr, hr_name)):
        lonely = [n for n in have if n not in other]
        if lonely:
            raise _unmatched(folder, have[lonely[0]], partner(lonely[0]), len(lonely))


def _unmatched(folder: Path, have: Path, want: str, count: int) -> KmsrError:
    more = f" (and {count - 1} more without a partner)" if count > 1 else ""
    return KmsrError(f"{folder}: {have.relative_to(folder)} has no partner {want}{more}")


def strip_file_names(names: list[str]) -> dict[str, str]:
    """``NAME.png`` for each pair's strip: the name's stem, or the whole name (``a.jpg.png``) when two
    pairs share a stem (``a.png`` and ``a.jpg``), so no strip overwrites another."""
    stems = [Path(n).stem for n in names]
    return {n: (f"{st}.png" if stems.count(st) == 1 else f"{Path(n).name}.png") for n, st in zip(names, stems)}


def find_pairs(folder: Path, scale: int, name: str | None = None) -> PairSet:
    """The pairs in ``folder`` (either layout, see the module docstring), sorted by name."""
    if not folder.exists():
        raise KmsrError(f"{folder}: no such folder ({_expected_layouts(scale)})")
    if not folder.is_dir():
        raise KmsrError(f"{folder}: not a folder ({_expected_layouts(scale)})")
    set_name = name or folder.name or folder.resolve().name
    hr_dir, lr_dir = _child(folder, "HR"), _child(folder, "LR")
    if hr_dir is not None or lr_dir is not None:
        if hr_dir is None or lr_dir is None:
            have, missing = ("HR/", "LR/") if lr_dir is None else ("LR/", "HR/")
            raise KmsrError(f"{folder}: has {have} but no {missing} beside it ({_expected_layouts(scale)})")
        hr_files = {p.name: p for p in _images_in(hr_dir)}
        lr_files = {p.name: p for p in _images_in(lr_dir)}
        if not hr_files and not lr_files:
            raise KmsrError(f"{folder}: HR/ and LR/ hold no images ({_expected_layouts(scale)})")
        _check_matched(folder, hr_files, lr_files, lambda n: f"{lr_dir.name}/{n}", lambda n: f"{hr_dir.name}/{n}")
        pairs = [Pair(n, hr_files[n], lr_files[n]) for n in sorted(hr_files)]
        return PairSet(set_name, folder, LAYOUT_FOLDERS, pairs)
    hr_files: dict[str, Path] = {}
    lr_files: dict[int, dict[str, Path]] = {}
    for p in _images_in(folder):
        m = _REALSR_NAME.match(p.stem)
        if not m:
            continue
        side = hr_files if m.group("hr") else lr_files.setdefault(int(m.group("s")), {})
        key = m.group("name")
        if key in side:
            raise KmsrError(f"{folder}: {side[key].name} and {p.name} are both {key}'s "
                           f"{'HR' if m.group('hr') else 'LR' + m.group('s')} image; keep one")
        side[key] = p
    lr_here = lr_files.get(scale, {})
    if not hr_files and not lr_files:
        raise KmsrError(f"{folder}: no HR/LR pairs found ({_expected_layouts(scale)})")
    if hr_files and not lr_here and lr_files:
        others = ", ".join(f"_LR{s}" for s in sorted(lr_files))
        raise KmsrError(f"{folder}: holds {others} files but no NAME_LR{scale} files for --scale {scale}")
    _check_matched(folder, hr_files, lr_here, lambda n: f"{n}_LR{scale}.*", lambda n: f"{n}_HR.*")
    if not hr_files:
        raise KmsrError(f"{folder}: no HR/LR pairs found for x{scale} ({_expected_layouts(scale)})")
    pairs = [Pair(n, hr_files[n], lr_here[n]) for n in sorted(hr_files)]
    return PairSet(set_name, folder, LAYOUT_NAMES.replace("{s}", str(scale)), pairs)


def parse_pair_sets(items: Iterable[str] | None, scale: int) -> list[PairSet]:
    """``--pairs [NAME=]DIR`` (repeatable; not split at commas, which folder names may hold) to pair sets, names unique."""
    sets: list[PairSet] = []
    for item in (str(i).strip() for i in items or []):
        if not item:
            continue
        label, spec = _split_label(item) if "=" in item and not Path(item).exists() else (None, item)
        sets.append(find_pairs(Path(spec), scale, label))
    if not sets:
        raise KmsrError("--pairs: no pair folder given", hint="--pairs ../shared/data/real_pairs/RealSR_x4_Canon")
    seen: dict[str, Path] = {}
    for ps in sets:
        if ps.name in seen:
            raise KmsrError(f"--pairs: two pair sets are named {ps.name!r} ({seen[ps.name]} and {ps.folder})",
                           hint="name each one with NAME=DIR")
        seen[ps.name] = ps.folder
    return sets


def common_pair_count(pair_sets: list[PairSet]) -> int | None:
    """The number of pairs every set holds (the tables' "mean over N pairs"); None when the sets differ."""
    counts = {len(ps.pairs) for ps in pair_sets}
    return counts.pop() if len(counts) == 1 else None


def load_pairs(pair_set: PairSet, scale: int) -> None:
    """Read every pair's samples and check its sizes against ``scale`` (modcropping the HR by less than ``scale``)."""
    for pair in pair_set.pairs:
        hr, pair.hr_bits = read_samples(pair.hr_path)
        lr, pair.lr_bits = read_samples(pair.lr_path)
        (h, w), (lh, lw) = hr.shape[:2], lr.shape[:2]
        if h // scale != lh or w // scale != lw:
            raise KmsrError(f"{pair.name}: HR is {w}x{h}, LR is {lw}x{lh}; at x{scale} the LR should be "
                           f"{w // scale}x{h // scale} ({pair_set.folder})")
        if min(lh, lw) * scale < min_hr_side(scale):
            raise KmsrError(f"{pair.name}: a {w}x{h} HR image is too small for x{scale}: the metrics need at least "
                           f"{min_hr_side(scale)} pixels a side (SSIM's 11x11 window after a {scale}-pixel shave)")
        pair.modcropped = (h, w) != (lh * scale, lw * scale)
        pair.hr = hr[: lh * scale, : lw * scale]
        pair.lr = lr


# --------------------------------------------------------------------------- the run
def run_real(
    pair_sets: list[PairSet],
    scale: int,
    model_specs: list[ModelSpec],
    *,
    device: str = "cpu",
    tile: int = 512,
    save: Path | None = None,
    crop: int = DEFAULT_CROP,
    ensemble: bool = False,
    host=None,
    progress: ProgressSink | None = None,
    on_step: Callable[[], None] | None = None,
    on_set: Callable[[int, PairSet, list[dict]], None] | None = None,
) -> BenchReport:
    """Every model on every pair; models are loaded and every pair read and checked before the first SR.

    ``progress`` gets the events of :func:`kmsr_cli.bench.run_quality` (``bench.model``, and
    ``bench.set`` with the pair set as ``set``); ``on_step`` / ``on_set`` are their older form.
    """
    from .models import resolve_model

    if save is not None and save.exists() and not save.is_dir():
        raise KmsrError(f"--save: {save} exists and is not a folder")
    models = [load_model_for(ms, scale, host, option="--scale", ensemble=ensemble) for ms in model_specs]
    for ps in pair_sets:
        load_pairs(ps, scale)
    # The strip's bicubic panel: the bicubic model of --models if there is one, else its own.
    bicubic_index = next((i for i, ms in enumerate(model_specs) if ms.spec_for(scale) == "bicubic"), None)
    reference = None
    if save is not None and bicubic_index is None:
        reference = resolve_model("bicubic", scale=scale, host=host)
    progress = bench_progress(progress, on_step, on_set)
    total, done = sum(len(ps.pairs) for ps in pair_sets) * len(models), 0
    results: list[dict] = []
    strip_names_per_set: dict[str, dict[str, str]] = {}
    for ps in pair_sets:
        set_results: list[dict] = []
        strip_names = strip_names_per_set[ps.name] = strip_file_names([p.name for p in ps.pairs])
        for pair in ps.pairs:
            hr, lr = pair.hr_pixels, pair.lr_pixels
            outputs = []
            for srm in models:
                out, p, q = score_model(srm, lr, hr, pair.hr_bits, device=device, tile=tile)
                set_results.append({"image": pair.name, "model": srm.name, "kernel": ps.name, "scale": scale,
                                    "psnr": p, "ssim": q})
                outputs.append((srm.name, out, p))
                done += 1
                emit(progress, "bench.model", done=done, total=total)
            if save is not None:
                if bicubic_index is not None:
                    bicubic = outputs[bicubic_index]
                    others = [o for i, o in enumerate(outputs) if i != bicubic_index]
                else:
                    out, p, _ = score_model(reference, lr, hr, pair.hr_bits, device=device, tile=tile)
                    bicubic, others = ("bicubic", out, p), outputs
                strip = comparison_strip(pair, scale, bicubic, others, crop=crop)
                write_strip(save / ps.name / strip_names[pair.name], strip)
        results.extend(set_results)
        emit(progress, "bench.set", data={"scale": scale, "set": ps, "summary": summarise(set_results)})
    if save is not None:
        write_real_report(save, pair_sets, scale, results, strip_names_per_set)
    names = [p.name for ps in pair_sets for p in ps.pairs]
    return BenchReport(results, summarise(results), [ps.describe() for ps in pair_sets],
                       describe_models(model_specs, models), names, [scale], False, protocol=REAL_PROTOCOL)


# --------------------------------------------------------------------------- the comparison strips
def crop_box(h: int, w: int, crop: int, scale: int) -> tuple[int, int, int, int]:
    """(y0, x0, ch, cw) of the centre crop in HR pixels, on LR pixel boundaries; crop 0 = whole image."""
    ch = h if crop == 0 else min(crop, h)
    cw = w if crop == 0 else min(crop, w)
    ch, cw = max(scale, ch - ch % scale), max(scale, cw - cw % scale)
    y0 = (h - ch) // 2 // scale * scale
    x0 = (w - cw) // 2 // scale * scale
    return y0, x0, ch, cw


def _to8(samples: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return np.asarray(samples, dtype=np.uint8)
    return np.rint(samples.astype(np.float64) / 257.0).astype(np.uint8)


def comparison_strip(pair: Pair, scale: int, bicubic: tuple[str, np.ndarray, float],
                     models: list[tuple[str, np.ndarray, float]], *, crop: int = DEFAULT_CROP) -> np.ndarray:
    """LR (nearest) | bicubic | each model | HR, a centre crop of each, labelled: (H, W, 3) uint8.

    Each panel is ``crop`` HR pixels wide (rounded down to a multiple of the scale, at most the
    image); a band above the panels holds the labels, with the whole image's Y-PSNR for the
    bicubic and model panels. ``bicubic`` and ``models`` are (name, output samples, PSNR).
    """
    from .report import labelled_strip

    h, w = pair.hr.shape[:2]
    y0, x0, ch, cw = crop_box(h, w, crop, scale)
    lr = pair.lr[y0 // scale : (y0 + ch) // scale, x0 // scale : (x0 + cw) // scale]
    nearest = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
    panels = [(f"LR (nearest x{scale})", "", _to8(nearest, pair.lr_bits))]
    for name, out, p in [bicubic, *models]:
        panels.append((name, f"{p:.2f} dB", _to8(out[y0 : y0 + ch, x0 : x0 + cw, :3], pair.hr_bits)))
    panels.append(("HR", "", _to8(pair.hr[y0 : y0 + ch, x0 : x0 + cw], pair.hr_bits)))
    return labelled_strip(panels)


def write_real_report(save: Path, pair_sets: list[PairSet], scale: int, results: list[dict],
                      strip_names: dict[str, dict[str, str]]) -> Path:
    """``save/index.html``: the mean and per-pair tables and every strip (beside it, linked)."""
    from .report import HtmlReport

    rep = HtmlReport(f"kmsr bench real: x{scale}, {', '.join(ps.name for ps in pair_sets)}")
    rep.paragraph(f"Y-PSNR (dB) and SSIM on the luma channel with {scale} pixels shaved; each LR image fed as it is. "
                  "Strips: a centre crop of LR (nearest), bicubic, each model and HR; the figure after a name is "
                  "the whole image's Y-PSNR.")
    for ps in pair_sets:
        rows = [r for r in results if r["kernel"] == ps.name]
        rep.heading(f"{ps.name}: means over {len(ps.pairs)} pairs")
        rep.table(["model", "Y-PSNR (dB)", "SSIM"], [[m["model"], f"{m['psnr']:.2f}", f"{m['ssim']:.4f}"] for m in summarise(rows)])
        models = list(dict.fromkeys(r["model"] for r in rows))
        per = {(r["image"], r["model"]): r for r in rows}
        rep.heading(f"{ps.name}: per pair (Y-PSNR dB / SSIM)", level=3)
        rep.table(["pair", *models], [[p.name, *(f"{per[p.name, m]['psnr']:.2f} / {per[p.name, m]['ssim']:.4f}" for m in models)]
                                      for p in ps.pairs])
        rep.heading(f"{ps.name}: comparison strips", level=3)
        for p in ps.pairs:
            rep.image_link(f"{ps.name}/{strip_names[ps.name][p.name]}", p.name)
    return rep.write(save / "index.html")


def write_strip(path: Path, strip: np.ndarray) -> None:
    """Write the strip as an 8-bit PNG, atomically (a temporary file moved into place)."""
    from kmsr_ops.image_io import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, strip, bit_depth=8)
