"""``kmsr pool``: build, merge, synthesise and inspect kernel pools (HDF5 kernel sets)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..console import emit_json, err, make_progress
from ..errors import CliError
from ..options import DeviceOpt, JsonOpt, SeedOpt

app = typer.Typer(
    help="Kernel pools: build, synthesise, merge and inspect HDF5 kernel sets.",
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
    scale: Annotated[int, typer.Option("--scale", help="SR scale the pool is meant for (stored with the set).", min=1, max=16)] = 2,
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
    from ..limits import check_memory
    from ..options import parse_key_values
    from ..plugin_host import get_host
    from ..pool import synth_pool

    # The kernels are made in float64 and written as float32: ~12 bytes a kernel pixel.
    check_memory(12.0 * n * size * size, f"pool synth -n {n} --size {size}",
                 hint="a smaller -n or --size; kmsr pool merge joins sets made in parts")
    options = parse_key_values(option)
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


@app.command("build")
def build(
    estimated: Annotated[Path, typer.Option("--estimated", help="Estimated kernels K' (.h5), e.g. from `kmsr estimate`.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Pool to write (.h5).")],
    generated: Annotated[Path | None, typer.Option("--generated", help="Generated kernels (.h5), e.g. from `kmsr gan sample`.")] = None,
    generator: Annotated[
        Path | None, typer.Option("--generator", help="A kernel-GAN checkpoint to sample the generated kernels from.")
    ] = None,
    n_generated: Annotated[int, typer.Option("-n", "--n-generated", help="Generated kernels in the pool.", min=1)] = 1000,
    n_estimated: Annotated[int, typer.Option("--n-estimated", help="Estimated kernels in the pool.", min=1)] = 1000,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    json: JsonOpt = False,
) -> None:
    """Build KMSR's pool K+ = K' ∪ {G(z)}: estimated plus generated kernels in one set.

    Takes --n-estimated kernels at random from --estimated and -n generated ones, either at
    random from --generated or sampled from --generator. The paper's pool is 1000 + 1000;
    a set with fewer kernels than asked gives all of them (with a warning).

        kmsr pool build --estimated estimated.h5 --generator gan.safetensors -n 1000 -o pool.h5

        kmsr pool build --estimated estimated.h5 --generated generated.h5 -o pool.h5
    """
    from kmsr_ops.backend import resolve_device

    from ..plugin_host import get_host
    from ..pool import build_pool

    try:
        dev = resolve_device(device)
    except (RuntimeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    with make_progress(json_mode=json or generator is None) as progress:
        task = progress.add_task("sampling generated kernels", total=n_generated)
        summary = build_pool(
            estimated, out, generated=generated, generator_checkpoint=generator,
            host=get_host() if generator is not None else None,
            n_estimated=n_estimated, n_generated=n_generated, seed=seed, device=dev,
            warn=lambda msg: err.print(escape(msg), highlight=False),
            on_progress=lambda m: progress.advance(task, m),
        )
    if json:
        emit_json(summary)
    else:
        err.print(escape(f"wrote {summary['count']} kernels ({summary['estimated']} estimated + {summary['generated']} generated) to {summary['path']}"))
        _print_path(Path(summary["path"]))


@app.command("merge")
def merge(
    sets: Annotated[list[Path], typer.Argument(help="Kernel sets to combine (same scale and kernel size).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Merged kernel set to write (.h5).")],
    resample: Annotated[
        bool,
        typer.Option("--resample", help="Centre-crop (renormalised) or zero-pad kernels of other sizes to the first set's size."),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Concatenate kernel sets, e.g. the shards of `kmsr estimate --shard i/N`, keeping provenance.

    Sets must share the scale. Kernel sizes must match unless --resample, which brings every
    set to the first set's size by centre crop or zero padding (kernels are in HR pixels at
    any array size, so nothing is interpolated):

        kmsr pool merge shard-0.h5 shard-1.h5 -o estimated.h5

        kmsr pool merge any25.h5 div2krk31.h5 --resample -o mixed25.h5
    """
    from ..kernelset import KernelSet, merge_kernel_sets

    if out.resolve() in {p.resolve() for p in sets}:
        raise CliError(f"{out}: the output is also an input; write the merge to a new file")
    path = merge_kernel_sets(sets, out, resample=resample)
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
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write the paper's plots (kernel grid, mean central profile) to this PNG.")
    ] = None,
    against: Annotated[
        Path | None, typer.Option("--against", help="Another kernel set (e.g. held-out kernels): report the kernel MMD to it.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Counts by origin and method, scale, kernel size, and kernel statistics.

    Effective width is the square root of the mean eigenvalue of the kernel's second-moment
    matrix (sigma of the Gaussian with the same spread); anisotropy is the ratio of the major
    to the minor axis; entropy in bits measures how spread the mass is.

    --plot writes one 1200x500 PNG: left, a grid of kernels per origin (Fig. 3 of the paper,
    centre 15x15 crops); right, the central row of the mean kernel with a ±1 std band, beside
    the bicubic kernel at the pool's scale and Gaussians with sigma 1.25, 1.6, 1.7 (Fig. 4).

    --against reports the kernel MMD (Gaussian RBF on flattened kernels, median-distance
    bandwidth): `mmd` (biased, >= 0) and `mmd2_unbiased` (about 0 for equal distributions).

        kmsr pool show pool.h5 --plot pool.png

        kmsr pool show generated.h5 --against heldout.h5 --json
    """
    from ..pool import describe_pool

    doc = describe_pool(pool, against=against)
    if plot is not None:
        from ..kernelset import KernelSet
        from ..pool_plots import plot_pool

        with KernelSet(pool) as ks:
            plot_pool(ks.kernels(), ks.provenance().origin, ks.scale, plot, title=str(pool))
        doc["plot"] = str(plot)
    if json:
        emit_json(doc)
        return
    from ..console import printable

    def shown(text) -> str:  # strings from the file: no terminal control characters, no rich markup
        return escape(printable(text))

    out = Console()
    out.print(f"[bold]{shown(doc['path'])}[/]  {doc['count']} kernels, {doc['kernel_size']}x{doc['kernel_size']}, x{doc['scale']}")
    out.print(shown(f"created {doc['created_at']} by {doc['created_by']}  {doc['description']}"), highlight=False)
    t = Table(title="origin / method", title_justify="left")
    t.add_column("origin")
    t.add_column("count", justify="right")
    for k, v in sorted(doc["by_origin"].items()):
        t.add_row(shown(k), str(v))
    for k, v in sorted(doc["by_method"].items()):
        t.add_row(f"[dim]method[/] {shown(k)}", str(v))
    out.print(t)
    t = Table(title="kernel statistics", title_justify="left")
    for col in ("statistic", "mean", "std", "min", "median", "max"):
        t.add_column(col, justify="right" if col != "statistic" else "left")
    for name, s in doc["statistics"].items():
        t.add_row(name, *(f"{s[c]:.3f}" if s[c] is not None else "-" for c in ("mean", "std", "min", "median", "max")))
    out.print(t)
    if "against" in doc:
        a = doc["against"]
        u = f"{a['mmd2_unbiased']:.3g}" if a["mmd2_unbiased"] is not None else "-"
        out.print(shown(f"against {a['path']} ({a['count']} kernels): MMD {a['mmd']:.4f}, unbiased MMD² {u} (bandwidth {a['bandwidth']:.4f})"),
                  highlight=False)
    if plot is not None:
        err.print(shown(f"wrote {plot}"), highlight=False)
