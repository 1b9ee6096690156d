"""What width does `kmsr estimate` report for LR images whose blur is known?

KMSR estimates kernels on LR photos upscaled by the SR scale (bicubic), so what it sees is the
camera's blur *and* everything the decimation and the upscaling did. Training then blurs HR
images with those kernels and decimates again. If the estimate is biased (wider than the kernel
that made the LR image), the SR models learn to sharpen more than real photos need.

This measures the bias on data that is in no test set: Kodak24 HR images (the validation set)
made into LR images with known degradations — MATLAB bicubic, and isotropic Gaussians of several
sigmas followed by decimation, exactly as `kmsr bench quality` makes its LR sets — saved as 8-bit
PNGs like real photos, then run through `kmsr estimate` with the settings the shipped pools used
(256-pixel patches of the upscaled image, one per image). Reported: the effective width (the
kernel's RMS radius per axis, the same statistic `kmsr pool show` prints) of the estimated
kernels, p10 / p50 / p90, against the true sigma.

    python benchmarks/estimate_bias.py --scale 4 --images 12 --out bias-x4 [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
KODAK = REPO.parent / "shared" / "data" / "sr" / "Kodak24"


def make_lr_sets(out: Path, scale: int, sigmas: list[float], n_images: int) -> dict[str, Path]:
    from kmsr_ops.degrade import bicubic_lr, gaussian_lr
    from kmsr_ops.image_io import read_image, write_png
    from kmsr_ops.resize import modcrop

    files = sorted(KODAK.glob("*.png"))[:n_images]
    if not files:
        raise SystemExit(f"Kodak24 not found at {KODAK}")
    sets = {"bicubic": None, **{f"g{s:g}": s for s in sigmas}}
    folders = {}
    for name, sigma in sets.items():
        folder = out / f"lr_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            target = folder / f.name
            if target.exists():
                continue
            hr = modcrop(np.asarray(read_image(f, channels="RGB").pixels, dtype=np.float64), scale)
            lr = bicubic_lr(hr, scale) if sigma is None else gaussian_lr(hr, sigma, scale)
            write_png(target, np.rint(np.clip(lr, 0, 1) * 255).astype(np.uint8))
        folders[name] = folder
    return folders


def estimate(folder: Path, out: Path, scale: int, patch: int) -> tuple[Path, float]:
    t0 = time.perf_counter()
    if not out.exists():
        cmd = [sys.executable, "-m", "kmsr_cli", "estimate", str(folder), "-o", str(out), "--scale", str(scale),
               "--patch", str(patch), "--per-image", "1", "--workers", "1", "--seed", "0", "--device", "cpu"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out, time.perf_counter() - t0


def widths(path: Path) -> np.ndarray:
    from kmsr_cli.kernelset import KernelSet
    from kmsr_cli.pool import kernel_statistics

    with KernelSet(path) as ks:
        return kernel_statistics(ks.kernels())["width"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--sigmas", default="1.0,1.5,2.0,2.5")
    ap.add_argument("--images", type=int, default=12, help="the first N Kodak24 images")
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("estimate-bias"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sigmas = [float(v) for v in args.sigmas.split(",")]
    folders = make_lr_sets(args.out, args.scale, sigmas, args.images)
    rows = []
    for name, folder in folders.items():
        path, seconds = estimate(folder, args.out / f"est_{name}.h5", args.scale, args.patch)
        w = widths(path)
        rows.append({"lr": name, "true_sigma": None if name == "bicubic" else float(name[1:]), "kernels": int(len(w)),
                     "width_p10": float(np.percentile(w, 10)), "width_p50": float(np.median(w)),
                     "width_p90": float(np.percentile(w, 90)), "seconds": round(seconds, 1)})
        print(f"{name}: median width {rows[-1]['width_p50']:.2f} over {len(w)} kernels", file=sys.stderr)
    doc = {"scale": args.scale, "images": args.images, "patch": args.patch, "rows": rows}
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"x{args.scale}, {args.images} Kodak24 images, one {args.patch}-pixel patch each\n")
    print("| LR made by | true sigma (HR px) | kernels | estimated width p10 | p50 | p90 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        sigma = "-" if r["true_sigma"] is None else f"{r['true_sigma']:.2f}"
        print(f"| {r['lr']} | {sigma} | {r['kernels']} | {r['width_p10']:.2f} | {r['width_p50']:.2f} | {r['width_p90']:.2f} |")


if __name__ == "__main__":
    main()
