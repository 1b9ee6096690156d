"""``kmsr sr``: super-resolve images of any size, tile by tile."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kmsr_ops.image_io import IMAGE_SUFFIXES as _SUFFIXES

from ..console import emit_json, err, make_progress
from ..errors import CliError
from ..options import DeviceOpt, JsonOpt


def _inputs(specs: list[str]) -> list[str]:
    from ..estimate import discover_photos

    if specs == ["-"]:
        return ["-"]
    if "-" in specs:
        raise CliError("'-' (an image on stdin) cannot be mixed with other inputs")
    return [str(p) for p in discover_photos(specs, missing_hint="check the image paths; nothing was super-resolved",
                                            empty_hint="kmsr sr IMAGE_OR_FOLDER... -o OUT")]


def _relative_names(items: list[str], specs: list[str]) -> dict[str, Path]:
    """Each input's name under the output folder, without suffix: its path below the input folder
    it was found in (so a/same.png and b/same.png stay apart), else its file name."""
    folders = [Path(s) for s in specs if s != "-" and Path(s).is_dir()]
    names = {}
    for inp in items:
        if inp == "-":
            names[inp] = Path("stdin")
            continue
        p = Path(inp)
        rel = None
        for folder in folders:
            try:
                rel = p.relative_to(folder)
                break
            except ValueError:
                continue
        names[inp] = (rel if rel is not None else Path(p.name)).with_suffix("")
    return names


def _targets(items: list[str], specs: list[str], out: str, many: bool, scale: int) -> dict[str, str]:
    """Where each input's PNG goes; refuses, before anything is written, two inputs sharing one."""
    if out == "-":
        return {inp: "-" for inp in items}
    o = Path(out)
    if not many and o.suffix.lower() in (".png", ".tif", ".tiff"):
        return {items[0]: str(o)}
    names = _relative_names(items, specs)
    targets, owner = {}, {}
    for inp in items:
        rel = names[inp]
        target = str(o / rel.parent / f"{rel.name}_x{scale}.png")
        key = os.path.normcase(os.path.normpath(target))
        if key in owner:
            raise CliError(f"{owner[key]} and {inp} would both be written to {target}; nothing was written",
                           hint="give them in separate runs (or folders), or rename one")
        owner[key] = inp
        targets[inp] = target
    return targets


def sr(
    inputs: Annotated[list[str], typer.Argument(help="Images: files, folders, globs, or - (image bytes on stdin).")],
    out: Annotated[str, typer.Option("-o", "--out", help="Output PNG for one input, or TIFF for a name ending .tif/.tiff (the input's bit depth: 8, 16, or float32 for a float input; PNG only otherwise: another image suffix such as .jpg is a usage error), a folder for several (NAME_xS.png, keeping the sub-folders of an input folder), or - for PNG on stdout.")],
    model: Annotated[str, typer.Option("--model", help="A .safetensors checkpoint, NAME:WEIGHTS (e.g. vdsr:vdsr.npz), spandrel:PATH (a published model, with the spandrel extra), bicubic, or a backbone name for kmsr's shipped model.")] = "kmsr",
    scale: Annotated[int | None, typer.Option("--scale", help="SR scale (default: the checkpoint's or spandrel model's, else 2).", min=1, max=16)] = None,
    tile: Annotated[int, typer.Option("--tile", help="Tile size in output pixels (0 = whole image at once).", min=0)] = 512,
    tile_overlap: Annotated[int | None, typer.Option("--tile-overlap", help="Margin around each tile in network-input pixels (default: the network's receptive-field radius, which makes tiles exact).", min=0)] = None,
    device: DeviceOpt = "auto",
    half: Annotated[bool, typer.Option("--half", help="float16 inference (CUDA only).")] = False,
    fast: Annotated[
        bool | None,
        typer.Option("--fast/--no-fast", help="CPU fast path (ONNX Runtime with the `fast` extra, else channels_last), "
                     "checked against eager to 1e-4; default on, KMSR_SR_FAST=0 turns it off."),
    ] = None,
    ensemble: Annotated[bool, typer.Option("--ensemble", help="x8 self-ensemble: average the network's outputs over the 8 flips and 90-degree turns of the input (8x slower; usually a little higher PSNR).")] = False,
    json: JsonOpt = False,
) -> None:
    """Super-resolve images with a trained model, tile by tile, keeping grey, alpha and 16-bit depth.

    Pre-upsampling models (KMSR, SRCNN, VDSR) get the MATLAB-bicubic-upscaled image; LR models
    (EDSR, DBPN) the image itself. Tiles with a margin of the network's receptive-field radius
    give exactly the untiled result. A file that cannot be read is reported and the others go
    on; the exit code is then 1. The output is PNG, or TIFF for `-o NAME.tif` (the input's bit depth, float32 for a float TIFF); `-o photo.jpg` is refused (exit 2).
    Into a folder, each image becomes NAME_xS.png under the same
    sub-folders as below the input folder it was found in (shots/a/x.png -> sr/a/x_x2.png); two
    inputs that would share an output are refused before anything is written.

    Examples:

        kmsr sr photo.jpg -o photo_x2.png --scale 2
        kmsr sr shots/ -o sr/ --model runs/kmsr-x2/model.safetensors
        cat small.png | kmsr sr - -o - --model bicubic --scale 3 > big.png
    """
    from kmsr_ops.backend import resolve_device

    from ..infer import default_overlap
    from ..models import resolve_model

    _check_usage(out, tile)
    items = _inputs(inputs)
    if out == "-" and len(items) > 1:
        raise CliError("-o - writes one PNG to stdout; give a folder for several inputs")
    dev = resolve_device(device)
    # A checkpoint or a spandrel model says its own scale; the rest default to x2.
    own_scale = model.endswith(".safetensors") or model.startswith("spandrel:")
    srm = resolve_model(model, scale=scale if scale is not None else (None if own_scale else 2))
    s = srm.scale
    overlap = tile_overlap if tile_overlap is not None else default_overlap(srm.receptive_field)
    many = len(items) > 1 or (len(items) == 1 and Path(out).suffix.lower() not in _SUFFIXES and out != "-")
    if many and out != "-":
        from ..atomic import check_output_folder

        check_output_folder(out, "-o")
    targets = _targets(items, inputs, out, many, s)
    if many and out != "-":
        Path(out).mkdir(parents=True, exist_ok=True)
    run = dict(tile=tile, overlap=overlap, device=dev, half=half, fast=fast, ensemble=ensemble)
    results, failures = _run_all(srm, items, targets, run, quiet=json or out == "-")
    if json:
        emit_json({"model": srm.name, "scale": s, "tile": tile, "tile_overlap": overlap, "ensemble": ensemble,
                   "results": results, "failed": failures})
    elif out != "-":
        err.print(f"{len(results)} images super-resolved x{s} with {escape(srm.name)}" +
                  (f", {len(failures)} failed" if failures else ""), highlight=False)
    if failures:
        sys.exit(1)


def _check_usage(out: str, tile: int) -> None:
    """Usage errors, before any image is read."""
    if out != "-" and Path(out).suffix.lower() in _SUFFIXES - {".png", ".tif", ".tiff"}:
        # Writing PNG bytes under a .jpg name, or quietly renaming the output, would both surprise.
        raise typer.BadParameter(f"{out}: kmsr sr writes PNG only, or TIFF for -o NAME.tif (keeping 16-bit depth and alpha); "
                                 f"use -o {Path(out).with_suffix('.png')}", param_hint="'-o' / '--out'")
    if tile and tile < 16:
        raise typer.BadParameter(f"expected 0 (no tiling) or at least 16 pixels, found {tile}", param_hint="'--tile'")


def _run_all(srm, items: list[str], targets: dict[str, str], run: dict, *, quiet: bool) -> tuple[list, list]:
    """Super-resolve and write each input; a file that cannot be read or written is reported,
    named, and the others go on. Returns (results, failures)."""
    from kmsr_ops.errors import ImageReadError
    from kmsr_ops.image_io import read_image, write_image

    from ..infer import UnusableImageError, super_resolve

    results, failures = [], []
    with make_progress(json_mode=quiet) as prog:
        t_files = prog.add_task("images", total=len(items))
        t_tiles = prog.add_task("tiles", total=1)
        for inp in items:
            t0 = time.perf_counter()
            try:
                img = read_image(inp)
                prog.reset(t_tiles, total=1)
                pixels = super_resolve(srm, img.pixels, bit_depth=img.bit_depth, **run,
                                       progress=lambda e: prog.update(t_tiles, completed=e.done, total=e.total))
                target = targets[inp]
                if target != "-":
                    Path(target).parent.mkdir(parents=True, exist_ok=True)
                write_image(target, pixels, bit_depth=img.bit_depth)  # .tif: TIFF, else PNG
                h, w = pixels.shape[:2]
                results.append({"input": inp if inp != "-" else "<stdin>", "output": target, "width": w, "height": h,
                                "scale": srm.scale, "seconds": round(time.perf_counter() - t0, 3)})
                if not quiet:
                    typer.echo(target)
            except (ImageReadError, UnusableImageError, OSError) as exc:
                name = "<stdin>" if inp == "-" else inp
                reason = str(exc) if name in str(exc) else f"{name}: {exc}"
                failures.append({"input": inp, "reason": reason})
                prog.console.print(f"[red]error:[/] {escape(reason)}", highlight=False, soft_wrap=True)
            prog.advance(t_files)
    return results, failures
