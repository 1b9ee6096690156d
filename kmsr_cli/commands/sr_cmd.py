"""``kmsr sr``: super-resolve images of any size, tile by tile."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..console import emit_json, err, make_progress
from ..errors import CliError
from ..options import DeviceOpt, JsonOpt

_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def _inputs(specs: list[str]) -> list[str]:
    from ..estimate import discover_photos

    if specs == ["-"]:
        return ["-"]
    if "-" in specs:
        raise CliError("'-' (an image on stdin) cannot be mixed with other inputs")
    return [str(p) for p in discover_photos(specs)]


def _target(inp: str, out: str, many: bool, scale: int) -> str:
    if out == "-":
        return "-"
    o = Path(out)
    if not many and o.suffix.lower() in _SUFFIXES:
        return str(o.with_suffix(".png")) if o.suffix.lower() != ".png" else str(o)
    name = "stdin" if inp == "-" else Path(inp).stem
    return str(o / f"{name}_x{scale}.png")


def sr(
    inputs: Annotated[list[str], typer.Argument(help="Images: files, folders, globs, or - (image bytes on stdin).")],
    out: Annotated[str, typer.Option("-o", "--out", help="Output PNG for one input, a folder for several, or - for PNG on stdout.")],
    model: Annotated[str, typer.Option("--model", help="A .safetensors checkpoint, NAME:WEIGHTS (e.g. vdsr:vdsr.npz), bicubic, or a backbone name for kmsr's shipped model.")] = "kmsr",
    scale: Annotated[int | None, typer.Option("--scale", help="SR scale (default: the checkpoint's, else 2).", min=1)] = None,
    tile: Annotated[int, typer.Option("--tile", help="Tile size in output pixels (0 = whole image at once).", min=0)] = 512,
    tile_overlap: Annotated[int | None, typer.Option("--tile-overlap", help="Margin around each tile in network-input pixels (default: the network's receptive-field radius, which makes tiles exact).", min=0)] = None,
    device: DeviceOpt = "auto",
    half: Annotated[bool, typer.Option("--half", help="float16 inference (CUDA only).")] = False,
    fast: Annotated[
        bool | None,
        typer.Option("--fast/--no-fast", help="CPU fast path (ONNX Runtime with the `fast` extra, else channels_last), "
                     "checked against eager to 1e-4; default on, KMSR_SR_FAST=0 turns it off."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Super-resolve images with a trained model, tile by tile, keeping grey, alpha and 16-bit depth.

    Pre-upsampling models (KMSR, SRCNN, VDSR) get the MATLAB-bicubic-upscaled image; LR models
    (EDSR, DBPN) the image itself. Tiles with a margin of the network's receptive-field radius
    give exactly the untiled result. A file that cannot be read is reported and the others go
    on; the exit code is then 1.

    Examples:

        kmsr sr photo.jpg -o photo_x2.png --scale 2
        kmsr sr shots/ -o sr/ --model runs/kmsr-x2/model.safetensors
        cat small.png | kmsr sr - -o - --model bicubic --scale 3 > big.png
    """
    from kmsr_ops.backend import resolve_device
    from kmsr_ops.errors import ImageReadError
    from kmsr_ops.image_io import read_image, write_png

    from ..infer import UnusableImageError, super_resolve
    from ..models import resolve_model

    items = _inputs(inputs)
    if out == "-" and len(items) > 1:
        raise CliError("-o - writes one PNG to stdout; give a folder for several inputs")
    dev = resolve_device(device)
    srm = resolve_model(model, scale=scale if scale is not None else (None if model.endswith(".safetensors") else 2))
    s = srm.scale
    overlap = tile_overlap if tile_overlap is not None else max(srm.receptive_field // 2 + 1, 0 if srm.receptive_field else 16)
    many = len(items) > 1 or (len(items) == 1 and Path(out).suffix.lower() not in _SUFFIXES and out != "-")
    if many and out != "-":
        from ..atomic import check_output_folder

        check_output_folder(out, "-o")
        Path(out).mkdir(parents=True, exist_ok=True)
    results, failures = [], []
    with make_progress(json_mode=json or out == "-") as prog:
        t_files = prog.add_task("images", total=len(items))
        t_tiles = prog.add_task("tiles", total=1)
        for inp in items:
            t0 = time.perf_counter()
            try:
                img = read_image(inp)
                prog.reset(t_tiles, total=1)
                pixels = super_resolve(srm, img.pixels, tile=tile, overlap=overlap, device=dev, half=half,
                                       bit_depth=img.bit_depth, fast=fast,
                                       on_tile=lambda k, n: prog.update(t_tiles, completed=k, total=n))
                target = _target(inp, out, many, s)
                if target != "-":
                    Path(target).parent.mkdir(parents=True, exist_ok=True)
                write_png(target, pixels, bit_depth=img.bit_depth)
                h, w = pixels.shape[:2]
                results.append({"input": inp if inp != "-" else "<stdin>", "output": target, "width": w, "height": h,
                                "scale": s, "seconds": round(time.perf_counter() - t0, 3)})
                if out != "-" and not json:
                    typer.echo(target)
            except (ImageReadError, UnusableImageError, OSError) as exc:
                # This file only: report it, named, and go on with the others (exit 1 at the end).
                name = "<stdin>" if inp == "-" else inp
                reason = str(exc) if name in str(exc) else f"{name}: {exc}"
                failures.append({"input": inp, "reason": reason})
                prog.console.print(f"[red]error:[/] {escape(reason)}", highlight=False, soft_wrap=True)
            prog.advance(t_files)
    if json:
        emit_json({"model": srm.name, "scale": s, "tile": tile, "tile_overlap": overlap, "results": results, "failed": failures})
    elif out != "-":
        err.print(f"{len(results)} images super-resolved x{s} with {escape(srm.name)}" +
                  (f", {len(failures)} failed" if failures else ""), highlight=False)
    if failures:
        sys.exit(1)
