"""``kmsr estimate``: blur kernels from real photos (stage 1 of KMSR)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import TextColumn

from ..console import emit_json, err, make_progress
from ..errors import CliError
from ..options import DeviceOpt, JsonOpt, SeedOpt, parse_key_values


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def estimate(
    photos: Annotated[list[str], typer.Argument(help="Photos: files, folders (searched recursively), globs, or - for paths on stdin.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Kernel set to write (.h5). Rerunning the same command resumes.")],
    scale: Annotated[int, typer.Option("--scale", help="SR scale: photos are bicubic-upscaled by it first (1 = the photo's own blur).", min=1, max=16)] = 2,
    patch: Annotated[int, typer.Option("--patch", help="Patch side in upscaled pixels (smaller photos use the largest square that fits, down to 128).")] = 512,
    per_image: Annotated[int, typer.Option("--per-image", help="Kernels per photo at most.", min=1)] = 5,
    kernel_size: Annotated[int, typer.Option("--kernel-size", help="Kernel size K (odd).")] = 25,
    estimator: Annotated[str, typer.Option("--estimator", help="Estimator plugin (see `kmsr plugins`).")] = "dark-channel",
    criterion: Annotated[
        str,
        typer.Option("--criterion", help="Flat-patch test: texture (default; rejects sky, walls), paper (the paper's |mean-var| >= 0.003 mean, accepts nearly everything), none."),
    ] = "texture",
    option: Annotated[list[str] | None, typer.Option("--option", help="Estimator parameter KEY=VALUE (JSON value); repeatable.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Parallel worker processes on this machine; 0 = one per core.", min=0)] = 0,
    dask: Annotated[str | None, typer.Option("--dask", help="Run the patches on a Dask cluster: local:N (a LocalCluster of N processes here) or a running scheduler's address (tcp://host:8786). Results stream into OUT.partial/ as with a local run. Needs pip install 'kmsr[dask]'.")] = None,
    shard: Annotated[str | None, typer.Option("--shard", help="i/N: only every N-th photo from the i-th (0-based), for cluster job arrays; combine with `kmsr pool merge`.")] = None,
    append: Annotated[bool, typer.Option("--append", help="Add this run's kernels to an existing -o kernel set made by other settings, photos or tools (refused without it; rerunning the same command resumes).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing -o made by another run (refused without it), and discard another run's unfinished OUT.partial/.")] = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    json: JsonOpt = False,
) -> None:
    """Estimate real camera blur kernels from photos and write them as an HDF5 kernel set.

    Each photo is converted to grey, bicubic-upscaled by --scale (the kernels are HR-resolution
    kernels seen in upscaled photos, specific to that scale), cut into random patches; flat
    patches are rejected and a kernel is estimated per remaining patch (dark-channel prior of
    Pan et al. 2016 by default). Finished kernels are kept in OUT.partial/ as they come, so a
    killed run loses only the patches in flight: run the same command again to resume.

    Examples:

        kmsr estimate photos/ -o kernels.h5 --scale 2
        find shots -name '*.jpg' | kmsr estimate - -o kernels.h5 --per-image 3
        kmsr estimate 'shots/**/*.png' -o part-3.h5 --shard 3/8   # then: kmsr pool merge part-*.h5 -o all.h5
        kmsr estimate archive/ -o kernels.h5 --dask tcp://scheduler:8786   # a Dask cluster you run
        kmsr estimate archive/ -o kernels.h5 --dask local:2
    """
    from kmsr_ops.backend import resolve_device

    from ..estimate import discover_photos, run_estimate, shard_photos
    from ..plugin_host import get_host

    if append and overwrite:
        raise typer.BadParameter("give --append or --overwrite, not both", param_hint="'--append' / '--overwrite'")
    settings, shard_t = _checked_settings(scale=scale, patch=patch, per_image=per_image, kernel_size=kernel_size,
                                          estimator=estimator, criterion=criterion, seed=seed, option=option,
                                          shard=shard, dask=dask)
    dev = resolve_device("cpu" if dask is not None and device == "auto" else device)  # Dask workers estimate on their CPUs
    photo_list = discover_photos(photos, stdin=sys.stdin if "-" in photos else None)
    host = get_host()
    host.get("estimators", estimator)  # fail early, listing the installed ones, on an unknown name
    n_workers = workers or _default_workers()

    with make_progress(json_mode=json, extra_columns=(TextColumn("{task.fields[rate]}"),)) as prog:
        on_progress, on_warn = _progress_callbacks(prog, len(shard_photos(photo_list, shard_t)))
        summary = run_estimate(host, photo_list, out, settings, device=dev, workers=n_workers, shard=shard_t,
                               progress=on_progress, warn=on_warn,
                               existing="append" if append else "overwrite" if overwrite else "resume", dask=dask)
    _report(summary, out, json)


def _checked_settings(*, option, shard, dask, **fields):
    """The run's Settings and shard; bad values of the options themselves are usage errors
    (exit 2), as --help promises."""
    from kmsr_ops.errors import KmsrInputError

    from ..estimate import Settings, parse_dask, parse_shard

    settings = Settings(**fields, options=parse_key_values(option))
    try:
        settings.validate()
        shard_t = parse_shard(shard)
        if dask is not None:
            parse_dask(dask)
    except KmsrInputError as exc:
        name, _, why = str(exc).partition(": ")
        raise typer.BadParameter(why or str(exc), param_hint=f"'--{name}'" if why else None) from None
    return settings, shard_t


def _progress_callbacks(prog, photos_in_shard: int):
    """run_estimate's ``progress`` and ``warn``: bars for photos and kernels (with the rate),
    and each warning printed above them."""
    started = time.perf_counter()
    t_photos = prog.add_task("photos", total=photos_in_shard, rate="")
    t_kernels = prog.add_task("kernels", total=0, rate="")

    def on_progress(event):
        if event.stage == "estimate.photo":
            prog.update(t_photos, completed=event.done)
        elif event.stage == "estimate.planned":
            prog.update(t_kernels, total=event.total)
        elif event.stage == "estimate.kernel":
            rate = event.done / max(time.perf_counter() - started, 1e-9)
            prog.update(t_kernels, completed=event.done, rate=f"{rate:.2f} kernels/s")

    def on_warn(msg):
        # One line each, never wrapped inside a path: warnings name files.
        prog.console.print(f"[yellow]warning:[/] {escape(msg)}", highlight=False, soft_wrap=True)

    return on_progress, on_warn


def _report(summary, out: Path, json: bool) -> None:
    """The summary: one JSON document, or a line on stderr and the output's path on stdout."""
    doc = summary.as_dict()
    if json:
        emit_json(doc)
    if not summary.output:
        why, hint = summary.why_nothing()
        raise CliError(f"no kernel was estimated, so {out} was not written: {why}", hint=hint)
    if json:
        return
    err.print(
        f"{summary.kernels_written} new kernels ({summary.kernels_resumed} already done), "
        f"{summary.kernels_total} in {escape(str(summary.output))}; {len(summary.photos_skipped)} photos skipped, "
        f"{summary.patches_rejected} flat patches rejected, {summary.seconds:.1f} s",
        highlight=False,
    )
    if summary.output:
        sys.stdout.write(f"{summary.output}\n")
