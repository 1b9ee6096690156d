"""Kernel-estimation accuracy of both schedules on data neither was chosen on.

The ``fast`` schedule was picked among continuation schedules on the 32 Levin et al. images
(``benchmarks/results/estimate.md``), so its Levin score cannot by itself show it is as accurate
as ``reference``. This benchmark blurs other photos with other kernels and scores both schedules
on the same cases in the same run:

- photos: the 24 Kodak24 images (``../shared/data/sr/Kodak24``, validation data, never a test
  set; 500x500 here), greyscale (ITU-R 601 luma), at most the centre 512x512;
- set ``levin``: photo i blurred with Levin kernel ``i mod 8 + 1`` (motion blur, 13-27 px);
- set ``div2krk``: photo i blurred with DIV2KRK x4 kernel i (anisotropic Gaussians, 31x31);
- blur: ``valid`` convolution (no border artefacts; a 470-488 px result here), then Gaussian noise of
  standard deviation 0.01 (seeded per case) and 8-bit quantisation, as a camera file would be;
- the estimator at scale 1 on each blurred image as it is, kernel size 31; score: kernel
  similarity (``kmsr_ops.kernel_similarity``) against the kernel that made it.

The rule for changing the default was written before the first run: ``fast`` becomes the
default of ``kmsr estimate`` if its mean similarity over all cases is at least ``reference``'s.

    python benchmarks/estimate_heldout.py                     # Markdown on stdout, progress on stderr
    python benchmarks/estimate_heldout.py --json --images 8   # a quick look
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "plugins"))

from kmsr_ops.image_io import read_image_array  # noqa: E402
from kmsr_ops.kernel_similarity import kernel_similarity  # noqa: E402

SCHEDULES = ("reference", "fast")
KERNEL_SIZE = 31
NOISE = 0.01
CROP = 512


@functools.cache
def _kernel_file(path: Path) -> np.ndarray:
    return np.load(path)


def kernels(kind: str, i: int) -> np.ndarray:
    if kind == "levin":
        return _kernel_file(DATA / "kernels" / "levin09" / f"levin09_kernel{i % 8 + 1}.npy")
    return _kernel_file(DATA / "kernels" / "div2krk" / "div2krk_gt_k_x4.npy")[i]


@functools.cache
def kodak() -> list[Path]:
    return sorted((DATA / "sr" / "Kodak24").glob("*.png"))


def blurred_case(path: Path, kernel: np.ndarray, seed: int) -> np.ndarray:
    """The centre (at most) CROP x CROP luma of a photo, blurred (valid), noisy and quantised to 8 bits."""
    from scipy.signal import fftconvolve

    grey = read_image_array(path, channels="L")[..., 0].astype(np.float64)  # BT.601 luma in [0, 1]
    h, w = min(CROP, grey.shape[0]), min(CROP, grey.shape[1])
    y0, x0 = (grey.shape[0] - h) // 2, (grey.shape[1] - w) // 2
    sharp = grey[y0 : y0 + h, x0 : x0 + w]
    out = fftconvolve(sharp, kernel / kernel.sum(), mode="valid")
    out = out + np.random.default_rng(seed).normal(0.0, NOISE, out.shape)
    return np.round(np.clip(out, 0.0, 1.0) * 255.0) / 255.0


def _init(schedule_options: dict) -> None:
    global _ESTS
    from kmsr_darkchannel import DarkChannelEstimator

    _ESTS = {s: DarkChannelEstimator(schedule=s, **schedule_options) for s in SCHEDULES}
    for est in _ESTS.values():
        est.estimate(np.random.default_rng(0).random((96, 96)), kernel_size=11)  # JIT compile / cache load


def _run(case: tuple[str, int, str]) -> tuple[tuple[str, int, str], np.ndarray, float]:
    kind, i, schedule = case
    img = blurred_case(kodak()[i], kernels(kind, i), seed=1000 * (kind == "div2krk") + i)
    t0 = time.process_time()
    est = _ESTS[schedule].estimate(img, kernel_size=KERNEL_SIZE)
    return case, est, time.process_time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--images", type=int, default=24, help="how many Kodak24 images per set (default all 24)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if not (DATA / "sr" / "Kodak24").is_dir():
        print(f"Kodak24 not found under {DATA / 'sr'}", file=sys.stderr)
        return 1
    n = max(1, min(args.images, 24))
    todo = [(kind, i, s) for kind in ("levin", "div2krk") for i in range(n) for s in SCHEDULES]
    t0 = time.perf_counter()
    sims: dict[tuple[str, int, str], float] = {}
    cpu: dict[str, list[float]] = {s: [] for s in SCHEDULES}
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=({"threads": 1},)) as pool:
        for case, est, secs in pool.map(_run, todo):
            sims[case] = kernel_similarity(est, kernels(case[0], case[1]))
            cpu[case[2]].append(secs)
            print(f"  {case[0]} {case[1]:2d} {case[2]:9s}: {sims[case]:.3f} ({secs:.1f} CPU s)", file=sys.stderr, flush=True)
    per_set = {kind: {s: float(np.mean([sims[(kind, i, s)] for i in range(n)])) for s in SCHEDULES}
               for kind in ("levin", "div2krk")}
    overall = {s: float(np.mean([v for (k, i, sch), v in sims.items() if sch == s])) for s in SCHEDULES}
    wins = sum(sims[(k, i, "fast")] >= sims[(k, i, "reference")] for k in ("levin", "div2krk") for i in range(n))
    doc = {
        "per_set": per_set, "overall": overall, "fast_at_least_reference_cases": wins, "cases": 2 * n,
        "cpu_s_per_image": {s: float(np.mean(v)) for s, v in cpu.items()},
        "rule_met": overall["fast"] >= overall["reference"],
        "wall_seconds": round(time.perf_counter() - t0, 1), "noise": NOISE, "kernel_size": KERNEL_SIZE,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "per_case": [{"set": k, "image": i, **{s: sims[(k, i, s)] for s in SCHEDULES}}
                     for k in ("levin", "div2krk") for i in range(n)],
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"Kodak24 x held-out kernels, {n} images per set, noise {NOISE}, K = {KERNEL_SIZE}")
    print("| set | reference | fast |\n|---|---:|---:|")
    for kind, row in per_set.items():
        print(f"| {kind} | {row['reference']:.3f} | {row['fast']:.3f} |")
    print(f"| all {2 * n} cases | {overall['reference']:.3f} | {overall['fast']:.3f} |")
    print(f"\nfast >= reference on {wins} of {2 * n} cases; CPU s per image: reference "
          f"{doc['cpu_s_per_image']['reference']:.1f}, fast {doc['cpu_s_per_image']['fast']:.1f}; "
          f"rule (fast becomes the default) {'met' if doc['rule_met'] else 'not met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
