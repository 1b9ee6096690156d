"""``kmsr gan``: train the kernel GAN on kernel sets, and sample kernel sets from it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import TextColumn

from ..console import emit_json, err, make_progress, progress_enabled
from ..errors import CliError
from ..options import DeviceOpt, JsonOpt, SeedOpt

app = typer.Typer(
    help=(
        "Kernel GAN (KMSR stage 2): learn the distribution of real blur kernels and sample new ones.\n\n"
        "  kmsr gan train estimated.h5 -o gan.safetensors --iters 20000\n\n"
        "  kmsr gan sample gan.safetensors -n 1000 -o generated.h5\n\n"
        "  kmsr pool build --estimated estimated.h5 --generated generated.h5 -o pool.h5"
    ),
    no_args_is_help=True,
)


def _device(device: str) -> str:
    from kmsr_ops.backend import resolve_device

    try:
        return resolve_device(device)
    except (RuntimeError, ValueError) as exc:
        raise CliError(str(exc)) from None


# The options of `kmsr gan train`.
_Kernels = Annotated[list[Path], typer.Argument(help="Kernel sets to learn from (.h5, 25x25, one scale).")]
_Out = Annotated[Path, typer.Option("-o", "--out", help="Checkpoint to write (.safetensors); GAN.state.pt goes beside it.")]
_Iters = Annotated[int, typer.Option("--iters", help="Total generator iterations (each after --critic-steps critic updates).", min=1)]
_Batch = Annotated[int | None, typer.Option("--batch", help="Batch size [default: 32].", min=1)]
_Loss = Annotated[
    str | None,
    typer.Option("--loss", help="gp: WGAN-GP, Adam 1e-4 (the paper) [default]; clip: weight clipping, RMSprop 5e-5 (the release)."),
]
_CriticSteps = Annotated[int | None, typer.Option("--critic-steps", help="Critic updates per generator update [default: 5].", min=1)]
_Lr = Annotated[float | None, typer.Option("--lr", help="Learning rate [default: 1e-4 for gp, 5e-5 for clip].")]
_GpLambda = Annotated[float | None, typer.Option("--gp-lambda", help="Gradient-penalty weight [default: 10].")]
_ClipValue = Annotated[float | None, typer.Option("--clip-value", help="Critic weight clip for --loss clip [default: 0.01].")]
_Augment = Annotated[
    bool | None, typer.Option("--augment/--no-augment", help="Random flips/transposes of training kernels [default: off].")
]
_WidthMult = Annotated[
    float | None,
    typer.Option("--width-mult", help="Channel multiplier [default: 1.0, the paper's network]; e.g. 0.0625 for a small CPU model."),
]
_KernelOutput = Annotated[
    str | None,
    typer.Option("--kernel-output", help="How G's last map becomes a kernel: relu then / sum [default]; clip to [0,1] then / sum (the release); softmax."),
]
_LrDecay = Annotated[
    str | None,
    typer.Option("--lr-decay", help="Learning-rate schedule: none (constant) or linear (from --lr down to 0 at "
                 "--iters, as in the WGAN-GP paper; a resumed run keeps its own) [default: none]."),
]
_Ema = Annotated[
    float | None,
    typer.Option("--ema", help="Save an exponential moving average of the generator's weights with this decay "
                 "(batch-norm statistics recomputed for it) instead of its last weights: the average does not "
                 "swing with the critic as the last weights do; 0: the last weights [default: 0.999]. "
                 "A resumed run keeps its own."),
]
_CheckpointEvery = Annotated[int, typer.Option("--checkpoint-every", help="Save every N iterations (0: only at the end).", min=0)]
_WatchEvery = Annotated[
    int | None,
    typer.Option("--watch-every", help="Score the generator every N iterations (MMD of its kernels to the training "
                 "kernels) and keep the best weights if the final ones are 1.5x worse (a collapse) "
                 "[default: --iters / 20 from 200 iterations on; 0: off].", min=0),
]
_SampleEvery = Annotated[int, typer.Option("--sample-every", help="Write a grid of 64 generated kernels every N iterations.", min=0)]
_SamplesPng = Annotated[Path | None, typer.Option("--samples-png", help="Where --sample-every writes its grid (PNG).")]
_Resume = Annotated[bool, typer.Option("--resume", help="Continue the run saved in --out (and its .state.pt) up to --iters.")]
_Generator = Annotated[
    str | None,
    typer.Option("--generator", help="Trainable generator plugin [default: wgan-gp, the paper's]; `kmsr plugins` lists them."),
]
_TrainSeed = Annotated[int | None, typer.Option("--seed", help="Random seed of a new run [default: 0]; a resumed run keeps its own.", min=0)]


@app.command("train")
def train(
    kernels: _Kernels,
    out: _Out,
    iters: _Iters = 20000,
    batch: _Batch = None,
    loss: _Loss = None,
    critic_steps: _CriticSteps = None,
    lr: _Lr = None,
    lr_decay: _LrDecay = None,
    ema: _Ema = None,
    gp_lambda: _GpLambda = None,
    clip_value: _ClipValue = None,
    augment: _Augment = None,
    width_mult: _WidthMult = None,
    output: _KernelOutput = None,
    checkpoint_every: _CheckpointEvery = 1000,
    watch_every: _WatchEvery = None,
    sample_every: _SampleEvery = 0,
    samples_png: _SamplesPng = None,
    resume: _Resume = False,
    generator: _Generator = None,
    device: DeviceOpt = "auto",
    seed: _TrainSeed = None,
    json: JsonOpt = False,
) -> None:
    """Train the KMSR kernel GAN on estimated (or any) 25x25 kernel sets.

    The architecture is the paper's (generator z(100) → 1024@4² → 512@8² → 256@16² → 1@32² →
    8x8 valid conv → 25x25; critic 256/512/1024 strided convs with instance norm). The
    checkpoint holds both networks; the .state.pt beside it holds optimisers and the random
    stream, so --resume continues exactly where a run stopped. Progress shows the critic loss
    and the Wasserstein estimate (mean critic score of real minus generated kernels).

    The losses do not tell whether the kernels are good, and a run can drift late to kernels
    unlike its data. So every --watch-every iterations the generator is scored (the MMD between
    a fixed draw of its kernels and the training kernels); if the final score is over 1.5x the
    best one, the best weights are kept and a warning names both iterations.

    Examples:

        kmsr gan train estimated.h5 -o gan.safetensors --iters 20000 --sample-every 500 --samples-png grid.png

        kmsr gan train estimated.h5 -o gan.safetensors --iters 40000 --resume

    On a CPU the paper's network manages ~10 s per iteration; a 1/16-width network with a
    larger learning rate reaches held-out quality in ~3000 iterations, every seed tried, with the
    moving average of its weights that --ema keeps (benchmarks/gan_quality.py):

        kmsr gan train motion.h5 -o small.safetensors --width-mult 0.0625 --lr 1e-3 --iters 3000 --device cpu
    """
    settings = {
        "loss": loss, "batch": batch, "critic_steps": critic_steps, "lr": lr, "gp_lambda": gp_lambda,
        "clip_value": clip_value, "augment": augment, "width_mult": width_mult, "output": output, "seed": seed,
        "generator": generator, "lr_decay": lr_decay, "ema": ema,
    }
    dev = _check_train_args(kernels, out, batch, device)
    summary = _train_with_progress(
        kernels, out, json, iters=iters, settings=settings, device=dev, resume=resume,
        checkpoint_every=checkpoint_every, sample_every=sample_every, samples_png=samples_png, watch_every=watch_every,
    )
    if json:
        emit_json(summary)
        return
    _report_training(summary)


def _train_with_progress(kernels: list[Path], out: Path, json: bool, **options) -> dict:
    """train_gan with a progress bar (critic loss, Wasserstein estimate) and its log lines."""
    from ..gan import train_gan
    from ..plugin_host import get_host

    show = progress_enabled(json)
    columns = (TextColumn("critic {task.fields[critic]}  W {task.fields[w]}"),)
    with make_progress(json_mode=json, extra_columns=columns) as progress:
        task = progress.add_task("training", total=options["iters"], critic="-", w="-")

        def sink(event) -> None:
            if event.stage == "gan.iteration":
                st = event.data
                progress.update(task, completed=st.iteration, critic=f"{st.critic_loss:+.4f}", w=f"{st.wasserstein:.4f}")
            elif event.stage == "gan.log":
                if show:
                    progress.console.print(escape(event.message), highlight=False)
                elif not json or event.message.startswith("warning"):
                    err.print(escape(event.message), highlight=False)

        return train_gan(get_host(), kernels, out, progress=sink, **options)


def _check_train_args(kernels: list[Path], out: Path, batch: int | None, device: str) -> str:
    """Refuse what cannot work before training starts; returns the device to train on."""
    from ..limits import check_memory

    if batch is not None:
        # Real and generated 25x25 kernels and their gradients, float32: at least 10 kB a kernel.
        check_memory(16.0 * batch * 25 * 25, f"gan train --batch {batch}", hint="a smaller --batch (the paper uses 32)")
    dev = _device(device)
    if out.suffix != ".safetensors":
        raise CliError(f"{out}: the checkpoint is a safetensors file; name it *.safetensors")
    if out.resolve() in {p.resolve() for p in kernels}:
        raise CliError(f"{out}: the output is also an input")
    return dev


def _report_training(summary: dict) -> None:
    """What the run did and how its samples compare, on stderr; the checkpoint's path on stdout."""
    err.print(escape(
        f"trained {summary['iterations'] - summary['start_iteration']} iterations ({summary['iterations']} in all) on "
        f"{summary['training_kernels']} kernels: critic loss {summary['critic_loss']}, Wasserstein estimate {summary['wasserstein']}"
    ), highlight=False)
    c = summary["sample_check"]
    err.print(f"samples: median width {c['width_median_generated']:.2f} vs {c['width_median_estimated']:.2f} for the "
              f"training kernels, spread {c['width_iqr_generated']:.2f} vs {c['width_iqr_estimated']:.2f}: "
              f"{'like the training kernels' if c['passed'] else 'NOT like them (' + escape(c['reason']) + ')'}", highlight=False)
    sys.stdout.write(f"{summary['path']}\n")


@app.command("sample")
def sample(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint from `kmsr gan train` (.safetensors).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Kernel set to write (.h5).")],
    n: Annotated[int, typer.Option("-n", "--count", help="Number of kernels.", min=1)] = 1000,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    json: JsonOpt = False,
) -> None:
    """Draw kernels from a trained kernel GAN into a kernel set.

    Each kernel records its provenance: origin "generated", the checkpoint path and its sha256,
    the seed and its index. The same checkpoint, seed and -n give the same kernels on any
    device (z is drawn on the CPU).

        kmsr gan sample gan.safetensors -n 1000 -o generated.h5 --seed 1
    """
    from ..gan import sample_to_set
    from ..limits import check_memory
    from ..plugin_host import get_host

    # 25x25 kernels, float32 on the device and float32 again when written: ~5 kB a kernel.
    check_memory(8.0 * n * 25 * 25, f"gan sample -n {n}",
                 hint="a smaller -n; kmsr pool merge joins sets sampled in parts (--seed)")
    dev = _device(device)
    with make_progress(json_mode=json) as progress:
        task = progress.add_task("sampling", total=n)
        path, params = sample_to_set(get_host(), checkpoint, n, out, seed=seed, device=dev,
                                     on_progress=lambda m: progress.advance(task, m))
    if json:
        emit_json({"path": str(path), "count": n, "seed": seed, "checkpoint": str(checkpoint), "params": params})
    else:
        err.print(escape(f"wrote {n} generated kernels to {path}"), highlight=False)
        sys.stdout.write(f"{path}\n")
