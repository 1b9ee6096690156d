"""``kmsr train``: train an SR backbone on HR images degraded on the training device."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import TextColumn

from ..console import emit_json, err, make_progress
from ..options import AmpOpt, DeviceOpt, JsonOpt, SeedOpt, parse_key_values


def train(
    out: Annotated[Path, typer.Option("-o", "--out", help="Run folder: model.safetensors, best.safetensors, state.pt, log.jsonl.")],
    backbone: Annotated[str, typer.Option("--backbone", help="SR backbone plugin: kmsr, srcnn, vdsr, edsr, dbpn (see `kmsr plugins`).")] = "kmsr",
    degradation: Annotated[str, typer.Option("--degradation", help="How HR patches become inputs: pool (KMSR), bicubic, gaussian, realistic.")] = "pool",
    pool: Annotated[Path | None, typer.Option("--pool", help="Kernel pool (.h5) for the pool and realistic degradations.")] = None,
    data: Annotated[list[str] | None, typer.Option("--data", help="HR images or folders (repeatable); default: scikit-image's CC0 photos.")] = None,
    val: Annotated[list[str] | None, typer.Option("--val", help="Validation HR images or folders; Y-PSNR after each epoch.")] = None,
    scale: Annotated[int, typer.Option("--scale", help="SR scale.", min=1, max=16)] = 2,
    preset: Annotated[str, typer.Option("--preset", help="paper (L1, Adam 1e-4 halved every 10 epochs, batch 32) or release (MSE, 1e-3 x0.1 every 30, batch 16).")] = "paper",
    patch: Annotated[int | None, typer.Option("--patch", help="HR patch size (default 128).")] = None,
    batch: Annotated[int | None, typer.Option("--batch", help="Global batch size (split over torchrun processes).", min=1)] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs.", min=1)] = 10,
    iters_per_epoch: Annotated[int, typer.Option("--iters-per-epoch", help="Steps per epoch.", min=1)] = 1000,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (preset default).")] = None,
    lr_halve_every: Annotated[int | None, typer.Option("--lr-halve-every", help="Epochs between learning-rate drops (preset: 10, x0.5).")] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="l1 or mse (preset default).")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Backbone option KEY=VALUE, e.g. blocks=4 filters=32; repeatable.")] = None,
    degradation_option: Annotated[list[str] | None, typer.Option("--degradation-option", help="Degradation option KEY=VALUE; repeatable; `kmsr plugins --json` lists each degradation's options (e.g. pool: boundary=zero, per_channel=true, bicubic_fraction=0.25).")] = None,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Also checkpoint every N steps (0: each epoch).", min=0)] = 0,
    time_budget: Annotated[float | None, typer.Option("--time-budget", help="Stop after this many minutes of training (a checkpoint is written); the schedule still follows --epochs.", min=0)] = None,
    init: Annotated[str | None, typer.Option("--init", help="Start from these weights: a kmsr checkpoint (.safetensors) or NAME:WEIGHTS published weights, e.g. carn_m:carn_m_state_dict.npz (fine-tuning). Recorded in the model's metadata.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in the folder from its last checkpoint.")] = False,
    amp: AmpOpt = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    json: JsonOpt = False,
) -> None:
    """Train a super-resolution network; KMSR trains on HR patches blurred with kernels from a pool.

    The degradation runs on the training device inside each step, per sample. Checkpoints
    are written atomically; `--resume` continues exactly where the last one left off. The same
    command runs under `torchrun --nproc_per_node N` with DistributedDataParallel.

    Examples:

        kmsr pool synth --family motion -n 1000 -o pool.h5
        kmsr train --backbone kmsr --degradation pool --pool pool.h5 --scale 2 -o runs/kmsr-x2
        kmsr train --backbone carn_m --init carn_m:carn_m_state_dict.npz --degradation realistic --pool pool_x4.h5 --scale 4 -o runs/carn-x4
        kmsr train --backbone kmsr --option blocks=4 --option filters=32 --degradation bicubic --epochs 5 --iters-per-epoch 200 -o runs/small
        torchrun --nproc_per_node 2 -m kmsr_cli train --backbone edsr --degradation bicubic -o runs/edsr
    """
    from kmsr_ops.backend import resolve_device

    from ..atomic import check_output_folder
    from ..plugin_host import get_host
    from ..train import TrainConfig, check_train_memory, dist_info, run_training

    check_output_folder(out, "-o")
    cfg = TrainConfig(
        backbone=backbone, degradation=degradation, scale=scale, out=str(out),
        backbone_options=parse_key_values(option, "--option"),
        degradation_options=parse_key_values(degradation_option, "--degradation-option"),
        pool=str(pool) if pool else None, data=list(data or []), val=list(val or []), preset=preset,
        patch=patch, batch=batch, epochs=epochs, iters_per_epoch=iters_per_epoch, lr=lr,
        # --lr-halve-every N: the rate halves every N epochs, whatever the preset's factor.
        lr_step_epochs=lr_halve_every, lr_gamma=None if lr_halve_every is None else 0.5,
        loss=loss, seed=seed, device=resolve_device(device), amp=amp,
        checkpoint_every=checkpoint_every, init=init, time_budget=time_budget * 60 if time_budget is not None else None,
    ).resolve()
    check_train_memory(cfg)
    rank, world, _ = dist_info()
    quiet = json or rank != 0
    result = _train_with_progress(cfg, get_host(), run_training, resume=resume, quiet=quiet)
    if rank != 0:
        _leave_distributed_run()
    _report(result, json)
    if world > 1:
        _leave_distributed_run()


def _train_with_progress(cfg, host, run_training, *, resume: bool, quiet: bool):
    """``run_training`` under a progress bar (steps, loss, learning rate) and a line per epoch."""
    with make_progress(json_mode=quiet, extra_columns=(TextColumn("{task.fields[info]}"),)) as prog:
        task = prog.add_task("training", total=cfg.epochs * cfg.iters_per_epoch, info="")

        def progress(event):
            info = event.data
            if event.stage == "train.step":
                prog.update(task, completed=info["step"], info=f"loss {info['loss']:.4f} lr {info['lr']:.2e}")
            elif event.stage == "train.epoch" and not quiet:
                v = info["val_psnr"]
                prog.console.print(f"epoch {info['epoch']}: loss {info['loss']:.4f}"
                                   + (f", val Y-PSNR {v:.2f} dB" if v is not None else ""), highlight=False)
            elif event.stage == "train.log" and not quiet:
                err.print(escape(event.message), highlight=False)

        return run_training(cfg, host, progress=progress, resume=resume)


def _report(result, json: bool) -> None:
    """The run's summary: a JSON document, or a line on stderr and the model's path on stdout."""
    doc = {"run_dir": result.run_dir, "steps": result.steps, "final_loss": result.final_loss,
           "best_val_psnr_y": result.best_val_psnr, "val_psnr_y": result.val_psnr, "seconds": result.seconds,
           "model": str(Path(result.run_dir) / "model.safetensors")}
    if json:
        emit_json(doc)
    else:
        best = f", best val Y-PSNR {result.best_val_psnr:.2f} dB" if result.best_val_psnr is not None else ""
        err.print(f"trained {result.steps} steps in {result.seconds:.0f} s{best}", highlight=False)
        typer.echo(doc["model"])


def _leave_distributed_run() -> None:
    """End a finished torchrun worker without running C++ static destructors.

    The process group is already destroyed and every file written, but gloo's transport threads
    can still be joinable when the interpreter tears down its statics, and std::terminate then
    aborts a run that succeeded (seen about once in 20 two-process runs on a loaded 2-core
    machine: "terminate called without an active exception", pytorch/pytorch#190489). So flush
    and leave with status 0 directly.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
