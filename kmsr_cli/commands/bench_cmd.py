"""``kmsr bench``: image quality of SR models on the paper's test sets, and the speed benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..console import emit_json, err, make_progress
from ..errors import CliError
from ..options import DeviceOpt, JsonOpt

app = typer.Typer(
    help="Benchmarks of SR quality and of speed.\n\n"
    "- `kmsr bench quality`: Y-PSNR/SSIM on LR test sets made from HR images (the paper's Table 1 protocol: "
    "MATLAB bicubic, Gaussian blurs, unseen kernels).\n"
    "- `kmsr bench real`: Y-PSNR/SSIM on real camera HR/LR pairs (e.g. RealSR), the LR fed as captured; "
    "`--save` writes labelled side-by-side crops.\n"
    "- `kmsr bench ops`: the speed benchmarks of benchmarks/ and their ratios.\n\n"
    "quality and real score, feed the models and print (table, --markdown, --csv, --json) the same way.",
    no_args_is_help=True,
)


def _print_table(table) -> None:
    """A table on stdout; piped into a file it keeps its natural width instead of wrapping at 80."""
    from rich.measure import Measurement

    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=max(80, Measurement.get(console, console.options.update_width(10_000), table).maximum))
    console.print(table)


EnsembleOpt = Annotated[bool, typer.Option("--ensemble", help="Run every network as its x8 self-ensemble (outputs averaged over the 8 flips/turns; rows named MODEL+; 8x slower).")]
TileOpt = Annotated[int, typer.Option("--tile", help="Tile size in output pixels (0 = whole image); tiles are exact.", min=0)]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="Print the table as Markdown (best per column in bold).")]


def _check_flags(json: bool, csv: bool, markdown: bool, folder: Path | None, option: str) -> None:
    """One output format at most; the folder of images to write (``option``) usable."""
    if sum((json, csv, markdown)) > 1:
        raise typer.BadParameter("choose one of --json, --csv, --markdown", param_hint="--json/--csv/--markdown")
    if folder is not None:
        from ..atomic import check_output_folder

        check_output_folder(folder, option)


def _progress_printer(prog, task, json: bool, unit: str, count):
    """The runs' progress sink: the bar advances per model scored; one line per finished test set
    (``count(set)`` of ``unit``s), best model first."""

    def sink(event) -> None:
        if event.stage == "bench.model":
            prog.advance(task)
        elif event.stage == "bench.set" and not json:  # --json promises a quiet stderr
            s, group, summary = event.data["scale"], event.data["set"], event.data["summary"]
            n = count(group)
            best = max(summary, key=lambda r: r["psnr"])
            prog.console.print(f"x{s} {escape(group.name)}: {n} {unit}{'s' if n != 1 else ''}; best "
                               f"{escape(best['model'])} {best['psnr']:.2f} dB", highlight=False)

    return sink


def _print_report(report, n: int | None, unit: str, *, json: bool, csv: bool, markdown: bool) -> None:
    """The report on stdout in the chosen format (the rich table by default)."""
    from .render import render_csv, render_markdown, rich_table

    if json:
        emit_json(report.document())
    elif csv:
        sys.stdout.write(render_csv(report.results))
    elif markdown:
        sys.stdout.write(render_markdown(report.summary, n, unit=unit))
    else:
        _print_table(rich_table(report.summary, n, unit=unit))


@app.command("quality")
def quality(
    hr: Annotated[
        list[str],
        typer.Option("--hr", help="HR test images: files, folders (searched recursively) or globs; repeatable."),
    ],
    models: Annotated[
        list[str],
        typer.Option(
            "--models",
            help="Comma-separated, repeatable: bicubic; NAME (kmsr's shipped model for each scale); "
            "NAME:WEIGHTS (published weights, e.g. vdsr:vdsr.npz); [NAME:]RUN/model.safetensors (a checkpoint, "
            "reported as NAME); {s} in a path stands for the scale; LABEL=SPEC renames.",
        ),
    ],
    scales: Annotated[list[str], typer.Option("--scales", help="Comma-separated SR scales, e.g. 2,4.")] = ["2", "4"],  # noqa: B006
    kernels: Annotated[
        list[str],
        typer.Option(
            "--kernels",
            help="Comma-separated test sets: bicubic (MATLAB, anti-aliased), gSIGMA (isotropic Gaussian, e.g. g1.6, "
            "then decimation), [NAME=]FILE.npy ((N, K, K) kernels; image i uses kernel i mod N; {s} = scale).",
        ),
    ] = ["bicubic,g1.25,g1.6,g1.7"],  # noqa: B006
    device: DeviceOpt = "auto",
    tile: TileOpt = 512,
    ensemble: EnsembleOpt = False,
    round_lr: Annotated[bool, typer.Option("--round-lr", help="Round the LR images to the HR bit depth, as a saved LR PNG would be.")] = False,
    out_images: Annotated[
        Path | None,
        typer.Option("--out-images", help="Also write every LR and SR image to DIR/KERNEL/xS/{_lr,MODEL}/IMAGE.png."),
    ] = None,
    json: JsonOpt = False,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV, one row per image, model, test set and scale.")] = False,
    markdown: MarkdownOpt = False,
) -> None:
    """Y-PSNR and SSIM of SR models on LR test sets made from HR images (KMSR's Table 1 protocol).

    Each HR image is cropped to a multiple of the scale, then degraded into one LR image per test
    set: MATLAB bicubic, or a blur followed by decimation on MATLAB's pixel grid (no sub-pixel
    shift between the bicubic-upscaled LR image and the HR). The LR images stay float (clipped to
    [0, 1], not rounded; --round-lr rounds them). Every model is fed by its own convention
    (upscaled or LR input, RGB or Y with bicubic chroma); its output is rounded to the HR's bit
    depth and compared on the Y channel (BT.601) with `scale` pixels shaved from each border.

    Unseen kernels: a .npy stack of N kernels blurs image i with kernel i mod N. Kernels made
    for one scale need one file per scale, e.g. DIV2KRK's
    `div2krk=../shared/data/kernels/div2krk/div2krk_gt_k_x{s}.npy`. Published SRCNN ships one
    weight file per scale: `srcnn:weights/srcnn_915_x{s}_oihw.npz`. A checkpoint serves only
    its own scale; scale-agnostic weights (VDSR) serve every scale.

    Output: a table on stdout (best per column marked *), or --markdown, --csv, --json
    (`{"results": [{"image", "model", "kernel", "scale", "psnr", "ssim"}], "summary": [...]}`).

    Examples:

        kmsr bench quality --hr Set5/ --scales 2,4 --models bicubic,vdsr:vdsr.npz,kmsr

        kmsr bench quality --hr Set5/ --scales 3 --kernels bicubic,g1.6 --models bicubic,srcnn:srcnn_915_x{s}_oihw.npz --markdown

        kmsr bench quality --hr val/ --scales 2,4 --kernels div2krk=kernels/div2krk_gt_k_x{s}.npy --models ours:runs/x{s}/model.safetensors --json
    """
    from kmsr_ops.backend import resolve_device

    from ..bench import load_hr, parse_kernels, parse_models, parse_scales, run_quality

    _check_flags(json, csv, markdown, out_images, "--out-images")
    scale_list = parse_scales(scales)
    kernel_specs = parse_kernels(kernels)
    model_specs = parse_models(models)
    images = load_hr(hr)
    dev = resolve_device(device)
    with make_progress(json_mode=json) as prog:
        task = prog.add_task("SR + metrics", total=len(scale_list) * len(kernel_specs) * len(images) * len(model_specs))
        report = run_quality(images, scale_list, kernel_specs, model_specs, device=dev, tile=tile, round_lr=round_lr,
                             out_images=out_images, ensemble=ensemble,
                             progress=_progress_printer(prog, task, json, "image", lambda ks: len(images)))
    _print_report(report, len(images), "image", json=json, csv=csv, markdown=markdown)
    if out_images is not None:
        err.print(f"images written under {escape(str(out_images))}", highlight=False)


@app.command("real")
def real(
    pairs: Annotated[
        list[str],
        typer.Option("--pairs", help="A folder of real HR/LR pairs: HR/ and LR/ sub-folders with the same file names, "
                     "or NAME_HR.png with NAME_LR{S}.png; reported under the folder's name (NAME=DIR renames); repeatable."),
    ],
    scale: Annotated[int, typer.Option("--scale", help="The SR scale of the pairs (HR side = scale x LR side).", min=2)],
    models: Annotated[
        list[str],
        typer.Option(
            "--models",
            help="Comma-separated, repeatable, as in `kmsr bench quality`: bicubic; NAME (kmsr's shipped model); "
            "NAME:WEIGHTS (published weights); [NAME:]RUN/model.safetensors; {s} in a path stands for the scale; "
            "LABEL=SPEC renames.",
        ),
    ],
    device: DeviceOpt = "auto",
    tile: TileOpt = 512,
    ensemble: EnsembleOpt = False,
    save: Annotated[
        Path | None,
        typer.Option("--save", help="Write one labelled comparison strip per pair to DIR/SET/NAME.png: "
                     "LR (nearest) | bicubic | each model | HR, and DIR/index.html with the tables and every strip."),
    ] = None,
    crop: Annotated[
        int, typer.Option("--crop", help="Width and height of each --save panel in HR pixels, a centre crop "
                          "(rounded down to a multiple of the scale; 0 = the whole image).", min=0)
    ] = 128,
    json: JsonOpt = False,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV, one row per pair and model.")] = False,
    markdown: MarkdownOpt = False,
) -> None:
    """Y-PSNR and SSIM of SR models on real camera HR/LR pairs, such as RealSR's.

    A pair folder holds either HR/ and LR/ sub-folders with the same file names
    (HR/Canon_001.png, LR/Canon_001.png), or RealSR-style names side by side
    (Canon_001_HR.png, Canon_001_LR4.png; LR files of other scales are ignored). The HR must be
    `scale` times the LR; an HR larger by less than `scale` pixels a side is cropped to it
    (modcrop), any other size is an error naming the file and both sizes.

    The LR file is fed as it is: nothing is synthesised, unlike `kmsr bench quality`. Otherwise
    everything is bench quality's: each model is fed by its own convention (upscaled or LR
    input, RGB or Y with bicubic chroma), its output rounded to the HR's bit depth and compared
    on the Y channel (BT.601) with `scale` pixels shaved from each border; the same table,
    --markdown, --csv and --json (`{"results": [{"image", "model", "kernel", "scale", "psnr",
    "ssim"}], "summary": [...]}`, the `kernel` field holding the pair set's name).

    --save DIR writes, for each pair, DIR/SET/NAME.png: a centre crop (--crop HR pixels) of the
    LR upscaled by pixel repetition, bicubic, every other model and the HR side by side, each
    labelled, the bicubic and model panels with the whole image's Y-PSNR; and DIR/index.html,
    one page with the mean and per-pair tables and every strip, to open in a browser.

    Examples:

        kmsr bench real --pairs ../shared/data/real_pairs/RealSR_x4_Canon --scale 4 --models bicubic,srcnn:weights/srcnn_915_x4_oihw.npz

        kmsr bench real --pairs RealSR/Canon/Test/4 --pairs RealSR/Nikon/Test/4 --scale 4 --models bicubic,ours:runs/x4/model.safetensors --markdown

        kmsr bench real --pairs pairs/ --scale 2 --models bicubic,kmsr --save strips/ --crop 192 --json
    """
    from kmsr_ops.backend import resolve_device

    from ..bench import parse_models
    from ..bench_real import common_pair_count, parse_pair_sets, run_real

    _check_flags(json, csv, markdown, save, "--save")
    model_specs = parse_models(models)
    pair_sets = parse_pair_sets(pairs, scale)
    dev = resolve_device(device)
    with make_progress(json_mode=json) as prog:
        task = prog.add_task("SR + metrics", total=sum(len(ps.pairs) for ps in pair_sets) * len(model_specs))
        report = run_real(pair_sets, scale, model_specs, device=dev, tile=tile, save=save, crop=crop, ensemble=ensemble,
                          progress=_progress_printer(prog, task, json, "pair", lambda ps: len(ps.pairs)))
    _print_report(report, common_pair_count(pair_sets), "pair", json=json, csv=csv, markdown=markdown)
    if save is not None and not json:
        err.print(f"comparison strips written under {escape(str(save))}; report: {escape(str(save / 'index.html'))}",
                  highlight=False)


@app.command("ops")
def ops(
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Run only these benchmarks (comma-separated, repeatable), e.g. --only blur."),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Fewer repeats / smaller cases: a smoke run, noisy ratios.")] = False,
    bench_dir: Annotated[
        Path | None, typer.Option("--dir", help="The benchmarks/ folder (default: the one in kmsr's source tree).")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds allowed per benchmark.", min=1)] = 3600,
    json: JsonOpt = False,
) -> None:
    """Run the speed benchmarks of benchmarks/ and print one table of their ratios (baseline / ours).

    Each benchmark runs as `python benchmarks/NAME.py --json` in its own process (its progress
    goes to stderr); the ratios are those the benchmark measured against its baseline in the
    same run. Quality benchmarks (kernel estimation on Levin, GAN quality) are not run. The
    benchmarks ship with the source tree: install kmsr from a clone (`pip install -e .`).

    Examples:

        kmsr bench ops
        kmsr bench ops --only blur --quick --json
    """
    from ..bench_ops import find_benchmarks_dir, run_ops, select
    from .render import ops_table

    root = find_benchmarks_dir(bench_dir)
    chosen = select(root, only)
    with make_progress(json_mode=json) as prog:
        task = prog.add_task("benchmarks", total=len(chosen))

        def on_done(name, result):
            prog.advance(task)
            if result.get("error"):
                prog.console.print(f"[red]{escape(name)} failed:[/] {escape(result['error'])}", highlight=False)

        report = run_ops(root, chosen, quick=quick, timeout=timeout, on_done=on_done)
    if json:
        emit_json(report)
    else:
        _print_table(ops_table(report))
    if any(b.get("error") for b in report["benchmarks"]):
        raise CliError("some benchmarks failed: " + ", ".join(b["name"] for b in report["benchmarks"] if b.get("error")))
