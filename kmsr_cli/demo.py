"""``kmsr demo``: the whole KMSR pipeline, small, on photos that ship with scikit-image.

Each stage runs the real command in a subprocess and prints it first, so the demo doubles as
a walk-through of the commands a user would type:

1. ``kmsr estimate``: blur kernels from a few CC0 photos, upscaled x2;
2. ``kmsr gan train`` (briefly, a narrow generator for the CPU) and ``kmsr pool build``:
   the pool K+ of estimated and generated kernels;
3. ``kmsr pool show --plot``: its statistics and the paper's two plots;
4. ``kmsr sr`` with the shipped x2 model on a real photo (no ground truth) and on a synthetic
   LR image blurred with a Gaussian of sigma 1.6 (ground truth known): a side-by-side PNG
   (LR nearest-upscaled | bicubic | KMSR | HR) and a PSNR/SSIM table.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kmsr_ops.errors import KmsrError

from .models import shipped_model_path
from .progress import ProgressSink, message_logger
from .report import labelled_strip
from .sample_data import export_cc0, load_cc0

# The GAN settings benchmarks/gan_quality.py found to fit a CPU and still beat the Gaussian
# baseline's MMD: the paper's layers at 1/16 of the channels, Adam 1e-3.
FULL = {"photos": ("coffee", "astronaut", "rocket", "camera", "brick", "gravel"), "patch": 256, "per_image": 2,
        "gan_iters": 200, "gan_width": 0.0625, "gan_lr": 1e-3, "n_generated": 200}
QUICK = {"photos": ("coffee", "camera"), "patch": 128, "per_image": 1, "gan_iters": 3, "gan_width": 0.0625,
         "gan_lr": 1e-3, "n_generated": 16}
SCALE = 2
SIGMA = 1.6


@dataclass
class DemoResult:
    out: str
    outputs: dict = field(default_factory=dict)
    table: list = field(default_factory=list)
    seconds: float = 0.0


def _run(args: list[str], say: Callable[[str], None], *, capture_json: bool = False,
         threads: int | None = None) -> dict | None:
    cmd = [sys.executable, "-m", "kmsr_cli", *args]
    prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
    say(f"$ {prefix}kmsr " + " ".join(shlex.quote(a) for a in args))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    if proc.returncode != 0:
        raise KmsrError(f"the demo step `kmsr {args[0]}` failed (exit {proc.returncode}); its error is above")
    if capture_json:
        return json.loads(proc.stdout)
    return None


def run_demo(out: Path, *, quick: bool, device: str, seed: int, say: Callable[[str], None] | None = None,
             progress: ProgressSink | None = None) -> DemoResult:
    """The demo's four stages into ``out``; every log line (a stage heading, a ``$ kmsr ...``
    command, its output) goes to ``progress`` as a ``demo.log`` event and to the older ``say``."""
    t0 = time.perf_counter()
    commands: list[str] = []
    user_say = message_logger("demo.log", progress, say)

    def say(msg: str) -> None:  # the commands are kept for the report
        if msg.startswith("$ "):
            commands.append(msg[2:])
        user_say(msg)

    cfg = QUICK if quick else FULL
    model = shipped_model_path("kmsr", SCALE)
    if not model.exists():
        raise KmsrError(f"the shipped x{SCALE} model is missing ({model}); reinstall kmsr from a full source tree")
    out.mkdir(parents=True, exist_ok=True)
    res = DemoResult(out=str(out))
    dev = ["--device", device]
    kernels = _estimate_kernels(out, res, cfg, seed=seed, dev=dev, say=say)
    pool = _build_pool(out, res, cfg, kernels, seed=seed, dev=dev, say=say)
    say("[3/4] the pool's statistics and plots")
    plot = out / f"pool_x{SCALE}.png"
    _run(["pool", "show", str(pool), "--plot", str(plot)], say)
    res.outputs["pool plots"] = str(plot)
    hr, lr, real, sr_dir = _super_resolve(out, model, dev=dev, say=say)
    cmp_synth, cmp_real = _compare(out, res, hr, lr, real, sr_dir)
    res.outputs["side by side, synthetic (LR nearest | bicubic | KMSR | HR)"] = str(cmp_synth)
    res.outputs["side by side, real photo (LR nearest | bicubic | KMSR)"] = str(cmp_real)
    res.outputs["SR images"] = str(sr_dir)
    res.outputs["PSNR table"] = str(_write_table(out / "psnr.md", res.table))
    res.seconds = round(time.perf_counter() - t0, 1)
    res.outputs["report"] = str(_write_report(out, res, commands, cfg, cmp_synth, cmp_real, plot))
    return res


def _estimate_kernels(out: Path, res: DemoResult, cfg: dict, *, seed: int, dev: list[str],
                      say: Callable[[str], None]) -> Path:
    """Stage 1: the CC0 photos exported, ``kmsr estimate`` on them; returns the kernel file."""
    say(f"[1/4] kernels from {len(cfg['photos'])} CC0 photos (scikit-image), upscaled x{SCALE}")
    export_cc0(out / "photos", cfg["photos"])
    kernels = out / f"kernels_x{SCALE}.h5"
    _run(["estimate", str(out / "photos"), "-o", str(kernels), "--scale", str(SCALE), "--patch", str(cfg["patch"]),
          "--per-image", str(cfg["per_image"]), "--seed", str(seed), "--overwrite", *dev], say)  # never piles onto an earlier demo's
    res.outputs["photos"] = str(out / "photos")
    res.outputs["estimated kernels"] = str(kernels)
    return kernels


def _build_pool(out: Path, res: DemoResult, cfg: dict, kernels: Path, *, seed: int, dev: list[str],
                say: Callable[[str], None]) -> Path:
    """Stage 2: ``kmsr gan train`` on the kernels, then ``kmsr pool build``; returns the pool file."""
    say("[2/4] a kernel GAN on them, then the pool K+ = estimated + generated")
    gan = out / f"gan_x{SCALE}.safetensors"
    _run(["gan", "train", str(kernels), "-o", str(gan), "--iters", str(cfg["gan_iters"]), "--width-mult", str(cfg["gan_width"]),
          "--lr", str(cfg["gan_lr"]), "--checkpoint-every", "0", "--seed", str(seed), *dev], say,
         threads=1)  # a network this small runs several times faster on one thread than on two
    pool = out / f"pool_x{SCALE}.h5"
    _run(["pool", "build", "--estimated", str(kernels), "--generator", str(gan), "-n", str(cfg["n_generated"]),
          "-o", str(pool), "--seed", str(seed), *dev], say)
    res.outputs["kernel GAN"] = str(gan)
    res.outputs["pool"] = str(pool)
    return pool


def _super_resolve(out: Path, model: Path, *, dev: list[str], say: Callable[[str], None]):
    """Stage 4: ``kmsr sr`` (shipped model and bicubic) on a real photo and on a synthetic LR image
    of known HR; returns (HR, LR) of the synthetic image, the real photo's path and the SR folder."""
    from kmsr_ops.degrade import gaussian_lr
    from kmsr_ops.image_io import write_png
    from kmsr_ops.resize import modcrop

    say(f"[4/4] super-resolution x{SCALE} with the shipped model ({model.name})")
    real = out / "real_lr_photo.png"
    write_png(real, load_cc0("chelsea"))
    sr_dir = out / "sr"
    _run(["sr", str(real), "-o", str(sr_dir / "real_photo_kmsr_x2.png"), "--model", str(model), *dev], say)
    _run(["sr", str(real), "-o", str(sr_dir / "real_photo_bicubic_x2.png"), "--model", "bicubic", "--scale", str(SCALE)], say)

    hr = modcrop(load_cc0("astronaut")[64:320, 128:384], SCALE).astype(np.float64) / 255
    lr = gaussian_lr(hr, SIGMA, SCALE)
    synth = out / f"synthetic_g{SIGMA}_lr.png"
    write_png(synth, lr, bit_depth=16)  # 16 bits: the LR the models see is (almost) the float one
    _run(["sr", str(synth), "-o", str(sr_dir / "synthetic_kmsr_x2.png"), "--model", str(model), *dev], say)
    _run(["sr", str(synth), "-o", str(sr_dir / "synthetic_bicubic_x2.png"), "--model", "bicubic", "--scale", str(SCALE)], say)
    return hr, lr, real, sr_dir


def _load(p: Path) -> np.ndarray:
    from kmsr_ops.image_io import read_image

    return read_image(p, channels="RGB").pixels.astype(np.float64)


def _u8(p: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(p, 0, 1) * 255).astype(np.uint8)


def _compare(out: Path, res: DemoResult, hr: np.ndarray, lr: np.ndarray, real: Path, sr_dir: Path) -> tuple[Path, Path]:
    """The synthetic image's scores into ``res.table``, and the two labelled side-by-side PNGs."""
    from kmsr_ops.image_io import write_png
    from kmsr_ops.metrics import psnr, ssim

    bic, ksr = _load(sr_dir / "synthetic_bicubic_x2.png"), _load(sr_dir / "synthetic_kmsr_x2.png")
    for name, img in (("bicubic", bic), ("kmsr (shipped)", ksr)):
        res.table.append({"image": "astronaut crop", "kernel": f"g{SIGMA}", "scale": SCALE, "model": name,
                          "psnr": psnr(img * 255, hr * 255, crop_border=SCALE, test_y_channel=True),
                          "ssim": ssim(img * 255, hr * 255, crop_border=SCALE, test_y_channel=True)})
    psnr_of = {r["model"]: f"{r['psnr']:.2f} dB" for r in res.table}
    nearest = np.repeat(np.repeat(lr, SCALE, axis=0), SCALE, axis=1)
    panel = labelled_strip([(f"LR (nearest x{SCALE})", "", _u8(nearest)), ("bicubic", psnr_of["bicubic"], _u8(bic)),
                            ("KMSR", psnr_of["kmsr (shipped)"], _u8(ksr)), ("HR", "", _u8(hr))])
    cmp_synth = out / "compare_synthetic.png"
    write_png(cmp_synth, panel)
    real_lr = _load(real)
    real_near = np.repeat(np.repeat(real_lr, SCALE, axis=0), SCALE, axis=1)
    panel = labelled_strip([(f"LR (nearest x{SCALE})", "", _u8(real_near)),
                            ("bicubic", "", _u8(_load(sr_dir / "real_photo_bicubic_x2.png"))),
                            ("KMSR", "", _u8(_load(sr_dir / "real_photo_kmsr_x2.png")))])
    cmp_real = out / "compare_real_photo.png"
    write_png(cmp_real, panel)
    return cmp_synth, cmp_real


def _write_table(path: Path, table: list[dict]) -> Path:
    """The PSNR/SSIM table as Markdown."""
    lines = ["| image | kernel | scale | model | Y-PSNR (dB) | SSIM |", "|---|---|---:|---|---:|---:|"]
    lines += [f"| {r['image']} | {r['kernel']} | x{r['scale']} | {r['model']} | {r['psnr']:.2f} | {r['ssim']:.4f} |"
              for r in table]
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_report(out: Path, res: DemoResult, commands: list[str], cfg: dict, cmp_synth: Path, cmp_real: Path,
                  plot: Path) -> Path:
    """``out/report.html``: what ran, the pool plots, both comparisons and the PSNR table, in one file."""
    from .report import HtmlReport

    rep = HtmlReport("kmsr demo: the KMSR pipeline, small")
    rep.paragraph(f"Blur kernels estimated from {len(cfg['photos'])} CC0 photos of scikit-image upscaled x{SCALE}, "
                  f"a kernel GAN trained on them for {cfg['gan_iters']} iterations, the pool of estimated and "
                  f"generated kernels, then super-resolution x{SCALE} with the shipped model. "
                  f"Done in {res.seconds:.0f} s.")
    rep.heading("Commands (rerun any of them yourself)")
    rep.code(commands)
    rep.heading(f"x{SCALE} on a synthetic LR image (Gaussian blur, sigma {SIGMA}): ground truth known")
    rep.image_file(cmp_synth, "LR (nearest) | bicubic | KMSR | HR; Y-PSNR after each name")
    rep.table(["image", "kernel", "scale", "model", "Y-PSNR (dB)", "SSIM"],
              [[r["image"], r["kernel"], f"x{r['scale']}", r["model"], f"{r['psnr']:.2f}", f"{r['ssim']:.4f}"]
               for r in res.table])
    rep.heading(f"x{SCALE} on a real photo (no ground truth)")
    rep.image_file(cmp_real, "LR (nearest) | bicubic | KMSR")
    rep.heading("The kernel pool")
    rep.image_file(plot, "the pool's statistics (kmsr pool show --plot)")
    rep.heading("Files")
    rep.facts(list(res.outputs.items()))
    return rep.write(out / "report.html")
