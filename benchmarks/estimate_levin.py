"""Kernel-estimation accuracy on the Levin et al. (CVPR 2009) benchmark, beside five published methods.

Runs the ``dark-channel`` estimator (scale 1: on each blurred image as it is, kernel size 31)
on the 32 blurred images of ``../shared/data/deblur/levin09/blurred/`` and scores every kernel
with ``kmsr_ops.kernel_similarity.kernel_similarity`` (max normalised cross-correlation over
shifts and a 180° turn) against the ground truth ``../shared/data/kernels/levin09/``. The
published estimates (``published_estimates.npz``: Cho & Lee 2009, Fergus 2006, Levin 2011,
Pan 2016, Sun 2013) are scored the same way.

    python benchmarks/estimate_levin.py                    # Markdown table on stdout
    python benchmarks/estimate_levin.py --json             # one JSON document
    python benchmarks/estimate_levin.py --images 8 --schedule fast --workers 2
    python benchmarks/estimate_levin.py --set kappa=4 --set warm_start=true

JSON: ``{"ours_mean_similarity", "published": {"pan_cvpr_2016": …, …}, "seconds_per_image",
"per_image": [{"image", "kernel", "ours", "pan_cvpr_2016", …, "seconds"}], …}``.
``seconds_per_image`` is the mean time of one estimate inside its worker process.
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

PUBLISHED_MEANS = {  # the figures the data README states, for a consistency check
    "cho_and_lee_tog_2009": 0.755,
    "fergus_tog_2006": 0.766,
    "levin_cvpr_2011": 0.787,
    "pan_cvpr_2016": 0.798,
    "sun_iccp_2013": 0.816,
}


def cases() -> list[tuple[int, int]]:
    """(image, kernel) pairs ordered so that any first 8 cover all eight kernels."""
    return [((k - 1 + j) % 4 + 1, k) for j in range(4) for k in range(1, 9)]


def parse_value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _init_worker(options: dict) -> None:
    global _ESTIMATOR
    from kmsr_darkchannel import DarkChannelEstimator

    _ESTIMATOR = DarkChannelEstimator(**options)
    _ESTIMATOR.estimate(np.random.default_rng(0).random((96, 96)), kernel_size=11)  # compile / load JIT


def _run_one(case: tuple[int, int]) -> tuple[tuple[int, int], np.ndarray, float]:
    im, k = case
    blurred = read_image_array(DATA / "deblur" / "levin09" / "blurred" / f"im{im}_kernel{k}_img.png", channels="L")[..., 0]
    t0 = time.perf_counter()
    est = _ESTIMATOR.estimate(blurred.astype(np.float64), kernel_size=31)
    return case, est, time.perf_counter() - t0


def published_scores(gt: dict[int, np.ndarray]) -> dict[str, dict[tuple[int, int], float]]:
    pub = np.load(DATA / "kernels" / "levin09" / "published_estimates.npz")
    out: dict[str, dict[tuple[int, int], float]] = {}
    for key in pub.files:
        method, rest = key.split("__", 1)
        method = method.removeprefix("BD_")
        parts = rest.split("_")  # k_<kernel>_im_<image>_<name>
        k, im = int(parts[1]), int(parts[3])
        out.setdefault(method, {})[(im, k)] = kernel_similarity(pub[key], gt[k])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--images", type=int, default=32, help="how many of the 32 images (default all)")
    ap.add_argument("--schedule", default="reference", help="estimator schedule: reference or fast")
    ap.add_argument("--backend", default="numba", help="numba (default), reference or xp")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an estimator parameter")
    args = ap.parse_args()

    if not (DATA / "deblur" / "levin09" / "blurred").is_dir():
        print(f"Levin data not found under {DATA}", file=sys.stderr)
        return 1
    gt = {k: np.load(DATA / "kernels" / "levin09" / f"levin09_kernel{k}.npy") for k in range(1, 9)}
    todo = cases()[: max(1, min(args.images, 32))]
    options = {"schedule": args.schedule, "backend": args.backend}
    for item in args.set:
        key, _, value = item.partition("=")
        options[key.strip()] = parse_value(value.strip())

    t0 = time.perf_counter()
    results = {}
    with ProcessPoolExecutor(max_workers=args.workers, initializer=_init_worker, initargs=(options,)) as pool:
        for case, est, secs in pool.map(_run_one, todo):
            results[case] = (est, secs)
            if not args.json:
                print(f"  im{case[0]} kernel{case[1]}: {kernel_similarity(est, gt[case[1]]):.3f} ({secs:.1f} s)",
                      file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0

    pub = published_scores(gt)
    per_image = []
    for im, k in todo:
        est, secs = results[(im, k)]
        row = {"image": im, "kernel": k, "ours": kernel_similarity(est, gt[k]), "seconds": secs}
        for method, scores in sorted(pub.items()):
            row[method] = scores.get((im, k))
        per_image.append(row)
    ours = float(np.mean([r["ours"] for r in per_image]))
    published = {m: float(np.mean(list(s.values()))) for m, s in sorted(pub.items())}
    published_same = {
        m: float(np.mean([s[c] for c in todo if c in s])) for m, s in sorted(pub.items()) if any(c in s for c in todo)
    }
    res = {
        "ours_mean_similarity": ours,
        "published": published,
        "published_on_these_images": published_same,
        "seconds_per_image": float(np.mean([r["seconds"] for r in per_image])),
        "wall_seconds": wall,
        "images": len(todo),
        "workers": args.workers,
        "estimator": options,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "per_image": per_image,
    }
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"Levin et al. benchmark, {len(todo)} images, kernel size 31, estimator {options}")
    print("| method | mean similarity (these images) | mean similarity (all published) |")
    print("|---|---:|---:|")
    print(f"| kmsr dark-channel | {ours:.3f} | |")
    for m in published:
        print(f"| {m} | {published_same.get(m, float('nan')):.3f} | {published[m]:.3f} |")
    print(f"\nseconds per image: {res['seconds_per_image']:.2f} (in-worker), wall {wall:.1f} s with {args.workers} workers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
