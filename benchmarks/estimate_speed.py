"""Kernel-estimation speed: seconds per 512x512 patch, ours against a straightforward baseline.

Both run the same algorithm and schedule (``kmsr_ops.blind_kernel``), in the same run, on the
same patches, one patch per worker process with every core busy (throughput = wall time /
patches):

- ours: ``backend="numba"``: float32, van Herk dark channel in Numba, fused Numba passes, real
  FFTs (pocketfft), every spectrum that is constant inside a loop computed once;
- baseline: ``backend="reference"``: float64 NumPy/SciPy as one would first write it: complex
  ``numpy.fft`` transforms, ``scipy.ndimage.minimum_filter`` plus a scan of the window offsets for
  the argmin.

Patches: the centre 512x512 of real photos (``../shared/data/real/RealSRSet``, those >= 256 px,
else scikit-image's sample photos), greyscale, upscaled x2 with MATLAB bicubic (KMSR's input).

    python benchmarks/estimate_speed.py                 # Markdown on stdout
    python benchmarks/estimate_speed.py --json          # {"ours_s_per_patch", "baseline_s_per_patch", "speedup", ...}
    python benchmarks/estimate_speed.py --schedule fast --baseline-patches 0
    python benchmarks/estimate_speed.py --schedule fast --against-schedule reference --baseline-patches 0

``--against-schedule S`` also times our backend with schedule ``S`` on the same patches in the same
run (``schedule_ratio`` = its seconds per patch / the ``--schedule`` one's), e.g. the default
``reference`` schedule against ``fast``.
"""

from __future__ import annotations

import argparse
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

from kmsr_ops.image_io import read_image_array  # noqa: E402
from kmsr_ops.kernel_similarity import kernel_similarity  # noqa: E402
from kmsr_ops.resize import imresize  # noqa: E402

PATCH = 512


def photo_patches(n: int) -> list[tuple[str, np.ndarray]]:
    """Centre PATCH x PATCH crops of x2 bicubic-upscaled greyscale photos."""
    out = []
    folder = DATA / "real" / "RealSRSet"
    paths = sorted(folder.glob("*.png")) if folder.is_dir() else []
    for path in paths:
        grey = read_image_array(path, channels="L")[..., 0].astype(np.float64)
        if min(grey.shape) * 2 < PATCH:
            continue
        out.append((path.name, grey))
    if len(out) < n:
        import skimage.data

        for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
            img = getattr(skimage.data, name)().astype(np.float64) / 255.0
            out.append((f"skimage:{name}", img.mean(axis=2) if img.ndim == 3 else img))
    patches = []
    for name, grey in out[:n]:
        up = np.clip(imresize(grey, 2), 0.0, 1.0)
        y0, x0 = (up.shape[0] - PATCH) // 2, (up.shape[1] - PATCH) // 2
        patches.append((name, np.ascontiguousarray(up[y0 : y0 + PATCH, x0 : x0 + PATCH])))
    return patches


def _init(options: dict) -> None:
    global _EST
    from kmsr_darkchannel import DarkChannelEstimator

    _EST = DarkChannelEstimator(**options)
    _EST.estimate(np.random.default_rng(0).random((96, 96)), kernel_size=11)  # JIT compile / cache load


def _one(patch: np.ndarray) -> tuple[np.ndarray, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    k = _EST.estimate(patch)
    return k, time.perf_counter() - t0, time.process_time() - c0


def throughput(options: dict, patches: list[np.ndarray], workers: int):
    """(wall s per patch, per-patch wall times, per-patch CPU times, kernels)."""
    with ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=(options,)) as pool:
        list(pool.map(_one, [np.zeros((64, 64))] * workers))  # every worker started and warm
        t0 = time.perf_counter()
        res = list(pool.map(_one, patches))
        wall = time.perf_counter() - t0
    return wall / len(patches), [r[1] for r in res], [r[2] for r in res], [r[0] for r in res]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--patches", type=int, default=4, help="patches for our estimator (default 4)")
    ap.add_argument("--baseline-patches", type=int, default=2, help="patches for the baseline (default 2; it is slow)")
    ap.add_argument("--schedule", default="reference", help="reference (default) or fast")
    ap.add_argument("--against-schedule", default=None, metavar="S",
                    help="also time our backend with this schedule on the same patches (e.g. reference)")
    ap.add_argument("--kernel-size", type=int, default=25)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    args = ap.parse_args()

    named = photo_patches(max(args.patches, args.baseline_patches))
    patches = [p for _, p in named]
    opts = {"schedule": args.schedule, "kernel_size": args.kernel_size, "threads": 1}
    ours, ours_each, ours_cpu, ours_k = throughput({**opts, "backend": "numba"}, patches[: args.patches], args.workers)
    res = {
        "ours_s_per_patch": ours,
        "ours_s_per_patch_single_process": float(np.mean(ours_each)),
        # CPU seconds of one estimate: on an otherwise idle machine, s per patch ~ this / cores.
        "ours_cpu_s_per_patch": float(np.mean(ours_cpu)),
        "schedule": args.schedule,
        "kernel_size": args.kernel_size,
        "patch": PATCH,
        "patches": [n for n, _ in named[: args.patches]],
        "workers": args.workers,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    if args.against_schedule:
        other, other_each, other_cpu, other_k = throughput({**opts, "schedule": args.against_schedule, "backend": "numba"},
                                                           patches[: args.patches], args.workers)
        res.update(
            against_schedule=args.against_schedule,
            against_s_per_patch=other,
            against_s_per_patch_single_process=float(np.mean(other_each)),
            against_cpu_s_per_patch=float(np.mean(other_cpu)),
            schedule_ratio=float(np.mean(other_each) / np.mean(ours_each)),
            kernel_similarity_schedules=[kernel_similarity(a, b) for a, b in zip(ours_k, other_k)],
        )
    if args.baseline_patches > 0:
        base, base_each, base_cpu, base_k = throughput({**opts, "backend": "reference"},
                                                       patches[: args.baseline_patches], args.workers)
        # Per-patch ratio on the patches both ran, so a different patch mix does not skew it.
        n = min(args.baseline_patches, args.patches)
        res.update(
            baseline_s_per_patch=base,
            baseline_s_per_patch_single_process=float(np.mean(base_each)),
            baseline_cpu_s_per_patch=float(np.mean(base_cpu)),
            speedup=float(np.mean(base_each[:n]) / np.mean(ours_each[:n])) if n else base / ours,
            kernel_similarity_ours_vs_baseline=[kernel_similarity(a, b) for a, b in zip(ours_k, base_k)],
        )
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{PATCH}x{PATCH} patches, K = {args.kernel_size}, schedule {args.schedule}, {args.workers} workers")
    print("| path | s per patch (all cores busy) | s per patch in one process | CPU s per patch | ratio (baseline / ours) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| kmsr (numba, float32) | {ours:.2f} | {res['ours_s_per_patch_single_process']:.2f} | "
          f"{res['ours_cpu_s_per_patch']:.2f} | 1.00 |")
    if "against_s_per_patch" in res:
        print(f"| kmsr (numba, float32), schedule {args.against_schedule} | {res['against_s_per_patch']:.2f} | "
              f"{res['against_s_per_patch_single_process']:.2f} | {res['against_cpu_s_per_patch']:.2f} | "
              f"{res['schedule_ratio']:.2f} |")
    if "baseline_s_per_patch" in res:
        print(f"| NumPy/SciPy baseline (float64) | {res['baseline_s_per_patch']:.2f} | "
              f"{res['baseline_s_per_patch_single_process']:.2f} | {res['baseline_cpu_s_per_patch']:.2f} | "
              f"{res['speedup']:.1f} |")
        sims = ", ".join(f"{s:.3f}" for s in res["kernel_similarity_ours_vs_baseline"])
        print(f"\nkernel similarity ours vs baseline per patch: {sims}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
