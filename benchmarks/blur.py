"""Batched per-sample blur: the project's CPU path against the usual baselines, in one run.

Default case (issue 2): B = 32, C = 3, 128x128, 25x25 kernels, float32, reflect boundary.
Timed in the same process: ``kmsr_ops.blur.blur`` (auto path), the grouped convolution that
BasicSR and Real-ESRGAN use (``F.conv2d(groups=B*C)`` on a reflect-padded batch), and a
per-sample ``scipy.signal.fftconvolve`` loop. Every path is checked against the SciPy
reference before it is timed.

    python benchmarks/blur.py            # table on stdout
    python benchmarks/blur.py --json     # {"ours_ms", "grouped_conv_ms", "scipy_loop_ms", ...}
    python benchmarks/blur.py --crossover  # fft / conv / direct per kernel size and dtype
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import fftconvolve

from kmsr_ops.blur import blur, blur_reference, choose_method


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def make_batch(b, c, h, w, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((b, c, h, w)).astype(dtype)
    ks = rng.random((b, k, k)).astype(dtype)
    ks /= ks.sum(axis=(1, 2), keepdims=True)
    return x, ks


def grouped_conv_baseline(x: np.ndarray, ks: np.ndarray):
    """BasicSR/Real-ESRGAN style: reflect-pad the whole batch, one conv2d with groups=B*C."""
    xt, kt = torch.from_numpy(x), torch.from_numpy(ks)
    b, c, h, w = xt.shape
    k = kt.shape[-1]
    pads = (k // 2, (k - 1) // 2, k // 2, (k - 1) // 2)

    def run():
        with torch.no_grad():
            padded = F.pad(xt.reshape(1, b * c, h, w), pads, mode="reflect")
            weight = kt.flip(-1, -2).repeat_interleave(c, dim=0).unsqueeze(1)
            return F.conv2d(padded, weight, groups=b * c).reshape(b, c, h, w)

    return run


def scipy_loop_baseline(x: np.ndarray, ks: np.ndarray):
    k = ks.shape[-1]
    pads = ((0, 0), (0, 0), (k // 2, (k - 1) // 2), (k // 2, (k - 1) // 2))

    def run():
        padded = np.pad(x, pads, mode="reflect")
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                out[i, j] = fftconvolve(padded[i, j], ks[i], mode="valid")
        return out

    return run


def main_case(repeats: int) -> dict:
    x, ks = make_batch(32, 3, 128, 128, 25, np.float32)
    ref = blur_reference(x, ks).astype(np.float64)
    runs = {
        "ours": lambda: blur(x, ks),
        "grouped_conv": grouped_conv_baseline(x, ks),
        "scipy_loop": scipy_loop_baseline(x, ks),
    }
    errors = {}
    for name, fn in runs.items():
        out = fn()
        out = out.numpy() if isinstance(out, torch.Tensor) else out
        errors[name] = float(np.abs(out.astype(np.float64) - ref).max())
    if errors["ours"] > 1e-5:
        raise SystemExit(f"ours differs from the SciPy reference by {errors['ours']:.2e} > 1e-5")
    ms = {name: median_ms(fn, repeats) for name, fn in runs.items()}
    return {
        "case": "B=32 C=3 128x128 K=25 float32 reflect",
        "ours_path": choose_method(25, np.float32),
        "ours_ms": ms["ours"],
        "grouped_conv_ms": ms["grouped_conv"],
        "scipy_loop_ms": ms["scipy_loop"],
        "speedup_vs_grouped_conv": ms["grouped_conv"] / ms["ours"],
        "speedup_vs_scipy_loop": ms["scipy_loop"] / ms["ours"],
        "max_abs_error": errors,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }


def crossover(repeats: int) -> list[dict]:
    rows = []
    for dtype in (np.float32, np.float64):
        for size in (64, 128, 256):
            for k in (3, 5, 7, 9, 11, 13, 15, 19, 25, 31):
                x, ks = make_batch(16, 3, size, size, k, dtype, seed=k)
                row = {"dtype": np.dtype(dtype).name, "size": size, "k": k}
                for method in ("fft", "conv", "direct"):
                    row[f"{method}_ms"] = median_ms(lambda m=method, x=x, ks=ks: blur(x, ks, method=m), repeats, warmup=1)
                row["fastest"] = min(("fft", "conv", "direct"), key=lambda m: row[f"{m}_ms"])
                row["auto"] = choose_method(k, dtype)
                rows.append(row)
                print(
                    f"{row['dtype']:8s} {size:4d} K={k:2d}  fft {row['fft_ms']:8.2f}  conv {row['conv_ms']:8.2f}  "
                    f"direct {row['direct_ms']:8.2f}  fastest {row['fastest']:6s} auto {row['auto']}",
                    file=sys.stderr,
                )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--crossover", action="store_true", help="also time fft/conv/direct per kernel size (B=16, C=3)")
    args = ap.parse_args()

    res = main_case(args.repeats)
    if args.crossover:
        res["crossover"] = crossover(max(3, args.repeats // 4))
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{res['case']}, torch threads {res['torch_threads']}, median of {args.repeats}")
    print("| path | ms | ratio (baseline / ours) | max abs error |")
    print("|---|---:|---:|---:|")
    print(f"| kmsr ({res['ours_path']}) | {res['ours_ms']:.2f} | 1.00 | {res['max_abs_error']['ours']:.1e} |")
    print(f"| grouped conv2d | {res['grouped_conv_ms']:.2f} | {res['speedup_vs_grouped_conv']:.2f} | {res['max_abs_error']['grouped_conv']:.1e} |")
    print(f"| scipy fftconvolve loop | {res['scipy_loop_ms']:.2f} | {res['speedup_vs_scipy_loop']:.2f} | {res['max_abs_error']['scipy_loop']:.1e} |")
    if args.crossover:
        print("\n| dtype | size | K | fft ms | conv ms | direct ms | fastest | auto |")
        print("|---|---:|---:|---:|---:|---:|---|---|")
        for r in res["crossover"]:
            print(f"| {r['dtype']} | {r['size']} | {r['k']} | {r['fft_ms']:.2f} | {r['conv_ms']:.2f} | {r['direct_ms']:.2f} | {r['fastest']} | {r['auto']} |")


if __name__ == "__main__":
    main()
