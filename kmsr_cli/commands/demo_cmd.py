"""``kmsr demo``: the whole pipeline, small, on bundled CC0 photos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..console import emit_json, err
from ..options import DeviceOpt, JsonOpt, SeedOpt
from .render import print_log_event


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything the demo writes.")] = Path("kmsr-demo"),
    quick: Annotated[bool, typer.Option("--quick", help="The smallest run that still goes through every stage (CI, a first look).")] = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    json: JsonOpt = False,
) -> None:
    """Run KMSR end to end on photos that ship with scikit-image, printing each command it runs.

    Estimates blur kernels from CC0 photos upscaled x2, trains a small kernel GAN briefly,
    builds and plots the kernel pool, then super-resolves a real photo and a synthetic
    Gaussian-blurred (sigma 1.6) LR image with the shipped x2 model, writing labelled
    side-by-side comparisons, a PSNR table and OUT/report.html, one page with all of it
    (images embedded) to open in a browser. About 1.5 minutes on 2 idle CPU cores (3-4 under load); `--quick` takes under half a minute.
    """
    from kmsr_ops.backend import resolve_device

    from ..atomic import check_output_folder
    from ..demo import run_demo

    check_output_folder(out, "-o")
    dev = resolve_device(device)

    res = run_demo(out, quick=quick, device=dev, seed=seed, progress=print_log_event)
    if json:
        emit_json({"out": res.out, "outputs": res.outputs, "psnr": res.table, "seconds": res.seconds})
        return
    t = Table(title=f"x2 on a g1.6-blurred LR image (Y-PSNR, {2}-pixel shave)", title_justify="left")
    for col in ("model", "Y-PSNR (dB)", "SSIM"):
        t.add_column(col)
    for r in res.table:
        t.add_row(r["model"], f"{r['psnr']:.2f}", f"{r['ssim']:.4f}")
    err.print(t)
    err.print(f"done in {res.seconds:.0f} s. Outputs:")
    for what, path in res.outputs.items():
        if what != "report":
            err.print(f"  {escape(what)}: {escape(path)}", highlight=False)
    err.print(f"[bold]Open the report: {escape(res.outputs['report'])}[/]", highlight=False)
    typer.echo(res.out)
