"""``kmsr adapt``: fine-tune a model for one camera from a folder of its photos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..console import emit_json, err
from ..options import AmpOpt, DeviceOpt, JsonOpt, SeedOpt
from .render import print_log_event


def adapt(
    photos: Annotated[list[str], typer.Argument(help="The camera's photos: files, folders, globs, or - (paths on stdin).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The adapted model (.safetensors). Its work folder is OUT.adapt/, its report OUT.report/index.html.")],
    scale: Annotated[int, typer.Option("--scale", help="SR scale.", min=2, max=16)] = 4,
    base: Annotated[str | None, typer.Option("--base", help="Model to fine-tune (.safetensors); default: the shipped model for the scale.")] = None,
    minutes: Annotated[float, typer.Option("--minutes", help="Training budget in minutes, counted across reruns.", min=0)] = 30.0,
    data: Annotated[list[str] | None, typer.Option("--data", help="HR training images or folders (repeatable); default: scikit-image's CC0 photos. The shipped models were fine-tuned on T91 + BSD200.")] = None,
    patch: Annotated[int, typer.Option("--patch", help="Kernel-estimation patch side, in upscaled pixels.", min=64)] = 512,
    per_image: Annotated[int, typer.Option("--per-image", help="Patches estimated per photo.", min=1)] = 5,
    gan_iters: Annotated[int, typer.Option("--gan-iters", help="Kernel-GAN iterations (used with 100 or more kernels).", min=1)] = 1000,
    train_patch: Annotated[int | None, typer.Option("--train-patch", help="HR training patch side (default 48 x scale).")] = None,
    batch: Annotated[int, typer.Option("--batch", help="Training batch size.", min=1)] = 16,
    steps: Annotated[int | None, typer.Option("--steps", help="Stop training after this many steps in all (default: the budget decides).", min=1)] = None,
    amp: AmpOpt = False,
    noise_model: Annotated[bool, typer.Option("--noise-model/--no-noise-model", help="Train with the camera's measured noise and JPEG (default), or with its blur only (the ablation; the noise is still measured and reported).")] = True,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    json: JsonOpt = False,
) -> None:
    """Adapt a super-resolution model to one camera: its blur and its noise, from its photos alone.

    Estimates the camera's blur kernels from the photos, builds a kernel pool (a kernel GAN with
    100 kernels or more, if its samples match the estimated ones; otherwise the estimated kernels
    with flips and turns), measures the camera's noise on flat regions, and fine-tunes --base on
    HR images degraded with those kernels and that noise for --minutes. Each stage leaves an
    ordinary kmsr artefact in OUT.adapt/ (kernels.h5, pool.h5, noise.json, run/); killed and rerun
    with the same command, it continues where it stopped.

    Examples:

        kmsr adapt phone_photos/ --scale 4 -o phone_x4.safetensors --minutes 60
        kmsr adapt scans/*.png --scale 2 -o scanner_x2.safetensors --data T91/ --data BSD200/
        kmsr sr photo.jpg -o photo_x4.png --model phone_x4.safetensors
    """
    from kmsr_ops.backend import resolve_device

    from ..adapt import AdaptSettings, run_adapt
    from ..estimate import discover_photos
    from ..plugin_host import get_host

    dev = resolve_device(device)
    files = discover_photos(photos, missing_hint="check the photo list; nothing was adapted",
                            empty_hint="kmsr adapt PHOTO_OR_FOLDER... -o camera.safetensors")
    settings = AdaptSettings(scale=scale, base=base, minutes=minutes, data=list(data or []), patch=patch,
                             per_image=per_image, gan_iters=gan_iters, train_patch=train_patch, batch=batch,
                             steps=steps, seed=seed, device=dev, amp=amp, noise_model=noise_model)

    res = run_adapt(files, out, settings, host=get_host(), progress=print_log_event)
    if json:
        emit_json(res.__dict__)
        return
    err.print(f"done in {res.seconds:.0f} s: {res.kernels} kernels, pool {res.pool['kernels']} ({res.pool['rule']}), "
              f"noise sigma {res.noise['sigma_median'] * 255:.2f}/255, {res.train['steps']} training steps")
    err.print(f"report: {escape(res.report)}", highlight=False)
    typer.echo(res.model)
