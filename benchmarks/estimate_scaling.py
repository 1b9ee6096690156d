"""``kmsr estimate`` throughput: patches per second in one process, with 2 local workers
(``--workers 2``) and on a 2-worker Dask ``LocalCluster`` (``--dask local:2``), on the same
photos and patches in the same run; Dask's overhead per patch against the 2 local workers, over
the whole run and in the steady state (from the end of each worker's first patch to the last
kernel, which leaves out the start of the pool or cluster and each worker's first estimator build).

Each mode estimates the same units (photos from scikit-image, x2, 256-pixel patches) into its
own output; the kernels are checked to be the same across modes. Run it on an idle machine.

    python benchmarks/estimate_scaling.py [--per-image 4] [--patch 256] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kmsr_cli.estimate import Settings, run_estimate  # noqa: E402
from kmsr_cli.kernelset import KernelSet  # noqa: E402
from kmsr_cli.plugin_host import get_host  # noqa: E402
from kmsr_cli.sample_data import export_cc0  # noqa: E402

PHOTOS = ("astronaut", "coffee", "rocket", "chelsea", "camera", "brick")


def by_unit(path: Path) -> dict:
    with KernelSet(path) as ks:
        return dict(zip((json.loads(p)["unit"] for p in ks.provenance().params), ks.kernels()))


def steady_seconds_per_patch(arrivals: list[float], workers: int) -> float:
    """Seconds per kernel after each worker's first one: (last - workers-th arrival) / the kernels
    that came in between. The first round holds the start-up, so it is left out."""
    if len(arrivals) <= workers:
        raise SystemExit(f"too few patches ({len(arrivals)}) for a steady state with {workers} workers")
    return (arrivals[-1] - arrivals[workers - 1]) / (len(arrivals) - workers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-image", type=int, default=4)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    host = get_host()
    settings = dict(scale=2, patch=args.patch, per_image=args.per_image, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = export_cc0(tmp / "photos", PHOTOS)
        modes = {"1 process": {"workers": 1}, "2 local workers": {"workers": 2}, "Dask LocalCluster, 2 workers": {"dask": "local:2"}}
        rows, kernels = [], {}
        for name, kw in modes.items():
            out = tmp / f"{len(rows)}.h5"
            arrivals: list[float] = []

            def arrived(event, arrivals=arrivals):
                if event.stage == "estimate.kernel":
                    arrivals.append(time.perf_counter())

            t0 = time.perf_counter()
            s = run_estimate(host, photos, out, Settings(**settings), progress=arrived, **kw)
            dt = time.perf_counter() - t0
            kernels[name] = by_unit(out)
            rows.append({"mode": name, "patches": s.kernels_written, "seconds": round(dt, 2),
                         "patches_per_s": round(s.kernels_written / dt, 4),
                         "steady_s_per_patch": steady_seconds_per_patch(arrivals, 1 if name == "1 process" else 2)})
        ref = kernels["1 process"]
        same = all(k.keys() == ref.keys() and all(np.allclose(k[u], ref[u], atol=1e-5) for u in ref) for k in kernels.values())
        local2, dask2 = rows[1]["seconds"] / rows[1]["patches"], rows[2]["seconds"] / rows[2]["patches"]
        steady = rows[2]["steady_s_per_patch"] / rows[1]["steady_s_per_patch"] - 1
        doc = {"rows": rows, "same_kernels": bool(same), "dask_overhead_per_patch": round(dask2 / local2 - 1, 4),
               "dask_overhead_per_patch_steady": round(steady, 4),
               "speedup_2_workers": round(rows[0]["seconds"] / rows[1]["seconds"], 3), "settings": settings}
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print("| mode | patches | seconds | patches/s | steady-state s per patch |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['patches']} | {r['seconds']:.1f} | {r['patches_per_s']:.3f} | "
              f"{r['steady_s_per_patch']:.3f} |")
    print(f"\n2 local workers: {doc['speedup_2_workers']:.2f}x one process; Dask overhead per patch against them: "
          f"{doc['dask_overhead_per_patch']:+.1%} over the whole run, {doc['dask_overhead_per_patch_steady']:+.1%} in "
          f"the steady state; the same kernels in every mode: {doc['same_kernels']}")


if __name__ == "__main__":
    main()
