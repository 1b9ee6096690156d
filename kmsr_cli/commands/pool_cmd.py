"""``kmsr pool``: build, merge, synthesise and inspect kernel pools (HDF5 kernel sets)."""

from __future__ import annotations

import json as jsonlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..console import emit_json, err, make_progress
from ..errors import CliError
from ..options import JsonOpt, SeedOpt

app = typer.Typer(
    help="Kernel pools: synthesise, merge and inspect HDF5 kernel sets.",
    no_args_is_help=True,
)


def _print_path(path: Path) -> None:
    """The written file on stdout, verbatim on one line (no markup, no wrapping) for pipelines."""
    sys.stdout.write(f"{path}\n")
    sys.stdout.flush()


@app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("-o", "--out", help="Kernel set to write (.h5); replaced atomically.")],
    family: Annotated[
        str,
        typer.Option("--family", help="Generator plugin: gaussian, aniso, motion, or any generator `kmsr plugins` lists."),
    ] = "gaussian",
    n: Annotated[int, typer.Option("-n", "--count", help="Number of kernels.", min=1)] = 1000,
    size: Annotated[int, typer.Option("--size", help="Kernel size K (odd); KMSR uses 25.", min=3)] = 25,
    scale: Annotated[int, typer.Option("--scale", help="SR scale the pool is meant for (stored with the set).", min=1)] = 2,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", help="Generator option KEY=VALUE (JSON value), e.g. --option sigma_max=2.0; repeatable."),
    ] = None,
    seed: SeedOpt = 0,
    json: JsonOpt = False,
) -> None:
    """Write a synthetic kernel set drawn from a generator plugin.

    For users with no photos, for tests, and as baselines. Example:

        kmsr pool synth --family motion -n 500 --size 25 -o motion.h5
    """
    from ..plugin_host import get_host
    from ..pool import synth_pool

    options = {}
    for item in option or []:
        if "=" not in item:
            raise typer.BadParameter(f"expected KEY=VALUE, found {item!r}", param_hint="--option")
        key, value = item.split("=", 1)
        try:
            options[key.strip()] = jsonlib.loads(value)
        except jsonlib.JSONDecodeError:
            options[key.strip()] = value
    host = get_host()
    with make_progress(json_mode=json) as progress:
        task = progress.add_task(f"{family} kernels", total=n)
        try:
            path = synth_pool(host, family, n, size, out, scale=scale, seed=seed, options=options,
                              on_progress=lambda m: progress.advance(task, m))
        except TypeError as exc:
            raise CliError(f"generator {family!r} rejected the options {options}: {exc}") from None
    if json:
        emit_json({"path": str(path), "count": n, "family": family, "kernel_size": size, "scale": scale, "seed": seed})
    else:
        err.print(escape(f"wrote {n} {family} kernels ({size}x{size}, x{scale}) to {path}"))
        _print_path(path)


@app.command("merge")
def merge(
    sets: Annotated[list[Path], typer.Argument(help="Kernel sets to combine (same scale and kernel size).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Merged kernel set to write (.h5).")],
    json: JsonOpt = False,
) -> None:
    """Concatenate kernel sets, e.g. the shards of `kmsr estimate --shard i/N`, keeping provenance."""
    from ..kernelset import KernelSet, merge_kernel_sets

    if out.resolve() in {p.resolve() for p in sets}:
        raise CliError(f"{out}: the output is also an input; write the merge to a new file")
    path = merge_kernel_sets(sets, out)
    with KernelSet(path) as ks:
        count = len(ks)
    if json:
        emit_json({"path": str(path), "count": count, "inputs": [str(p) for p in sets]})
    else:
        err.print(escape(f"merged {len(sets)} sets into {path} ({count} kernels)"))
        _print_path(path)


@app.command("show")
def show(
    pool: Annotated[Path, typer.Argument(help="Kernel set or pool (.h5).")],
    json: JsonOpt = False,
) -> None:
    """Counts by origin and method, scale, kernel size, and kernel statistics.

    Effective width is the square root of the mean eigenvalue of the kernel's second-moment
    matrix (sigma of the Gaussian with the same spread); anisotropy is the ratio of the major
    to the minor axis; entropy in bits measures how spread the mass is.
    """
    from ..pool import describe_pool

    doc = describe_pool(pool)
    if json:
        emit_json(doc)
        return
    out = Console()
    out.print(f"[bold]{escape(doc['path'])}[/]  {doc['count']} kernels, {doc['kernel_size']}x{doc['kernel_size']}, x{doc['scale']}")
    out.print(escape(f"created {doc['created_at']} by {doc['created_by']}  {doc['description']}"), highlight=False)
    t = Table(title="origin / method", title_justify="left")
    t.add_column("origin")
    t.add_column("count", justify="right")
    for k, v in sorted(doc["by_origin"].items()):
        t.add_row(escape(k), str(v))
    for k, v in sorted(doc["by_method"].items()):
        t.add_row(f"[dim]method[/] {escape(k)}", str(v))
    out.print(t)
    t = Table(title="kernel statistics", title_justify="left")
    for col in ("statistic", "mean", "std", "min", "median", "max"):
        t.add_column(col, justify="right" if col != "statistic" else "left")
    for name, s in doc["statistics"].items():
        t.add_row(name, *(f"{s[c]:.3f}" if s[c] is not None else "-" for c in ("mean", "std", "min", "median", "max")))
    out.print(t)
