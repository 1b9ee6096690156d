"""``kmsr sr`` on the CPU: eager PyTorch against the fast path, the candidates, and peak memory at 4096².

Three parts, all with the ``kmsr`` backbone at x2 and random weights (seed 0):

1. ``super_resolve`` (the engine of ``kmsr sr``) on a ``--size`` x ``--size`` input, default
   architecture (16 blocks, 64 filters), CLI tiling (``--tile`` 512, overlap = the receptive-field
   radius), ``fast=False`` (eager) against the default fast path, runs alternating; megapixels
   of output per second (median).
2. The candidates, on the network alone (one ``--net-size``² input, runs alternating with eager):
   channels_last, TorchScript trace + freeze (oneDNN fusion), ``torch.compile`` (inductor,
   freezing, channels_last), bf16 autocast, ONNX Runtime (when installed). Setup time, speed-up,
   largest difference from eager; bf16 also by its Y-PSNR change with the published VDSR weights
   on Set5 butterfly x2 (kmsr ships no trained weights), when ``../shared/data`` is there.
3. Peak RSS of a 4096x4096 input (8192x8192 output) in fresh processes: (a) the default
   architecture on the fast path and (b) on eager, for the first ``--tiles-4096`` tiles only (the
   whole image would take an hour on 2 cores; the time is extrapolated); (c) the whole ``kmsr sr``
   command line (decode, every tile, PNG encode) with a 1-block, 64-filter model, whose live
   activations per tile are those of the 16-block model (blocks run one after the other).

    python benchmarks/infer.py                 # table on stdout
    python benchmarks/infer.py --json          # {"eager_mpix_s", "fast_mpix_s", "speedup", "fast_path", "peak_rss_gb_4096", ...}
    python benchmarks/infer.py --skip-4096 --no-candidates   # part 1 only
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
SCALE = 2
TARGET_SPEEDUP = 1.5
TARGET_RSS_GB = 3.0


def kmsr_model(blocks: int = 16, filters: int = 64, seed: int = 0):
    import torch

    from kmsr_cli.infer import SRModel
    from kmsr_cli.plugin_host import get_host

    torch.manual_seed(seed)
    net = get_host().get("backbones", "kmsr").create(scale=SCALE, blocks=blocks, filters=filters).eval()
    return SRModel(net, scale=SCALE, input=net.input_kind, channels=net.channels,
                   receptive_field=net.receptive_field, name=f"kmsr-{blocks}x{filters}")


def overlap_for(model) -> int:
    # What `kmsr sr` uses by default: the receptive-field radius, which makes tiles exact.
    return model.receptive_field // 2 + 1


def test_image(size: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image with fine noise, (size, size, 3) float32 in [0, 1]."""
    from kmsr_ops.resize import imresize

    rng = np.random.default_rng(seed)
    base = rng.random((size // 8 + 2, size // 8 + 2, 3))
    img = imresize(base, out_shape=(size, size)) + rng.normal(0, 0.03, (size, size, 3))
    return np.clip(img, 0, 1).astype(np.float32)


def alternate(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, run in turn ``repeats`` times (after one warm-up each)."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: {"median_s": float(np.median(v)), "min_s": float(np.min(v)), "max_s": float(np.max(v))}
            for k, v in times.items()}


# --------------------------------------------------------------------------- part 1
def throughput(args) -> dict:
    from kmsr_cli.infer import inference_backend, super_resolve

    model = kmsr_model()
    img = test_image(args.size)
    ov = overlap_for(model)
    t0 = time.perf_counter()
    backend = inference_backend(model, "cpu")  # builds and caches the fast runner
    setup = time.perf_counter() - t0
    out_mpix = (args.size * SCALE) ** 2 / 1e6
    res = alternate({
        "eager": lambda: super_resolve(model, img, tile=args.tile, overlap=ov, fast=False),
        "fast": lambda: super_resolve(model, img, tile=args.tile, overlap=ov, fast=True),
    }, args.repeats)
    a = super_resolve(model, img, tile=args.tile, overlap=ov, fast=False, bit_depth=16).astype(np.int64)
    b = super_resolve(model, img, tile=args.tile, overlap=ov, fast=True, bit_depth=16).astype(np.int64)
    e, f = res["eager"]["median_s"], res["fast"]["median_s"]
    return {
        "eager_mpix_s": round(out_mpix / e, 4),
        "fast_mpix_s": round(out_mpix / f, 4),
        "speedup": round(e / f, 3),
        "fast_path": backend,
        "fast_setup_s": round(setup, 2),
        "max_diff_16bit_levels": int(np.abs(a - b).max()),
        "runs_s": {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in res.items()},
        "input": f"{args.size}x{args.size} RGB", "output_mpix": round(out_mpix, 4), "tile": args.tile,
        "overlap": ov, "repeats": args.repeats,
    }


# --------------------------------------------------------------------------- part 2
def candidates(args) -> list[dict]:
    import torch

    from kmsr_cli.infer import FAST_BACKENDS

    model = kmsr_model().module
    s = args.net_size
    x = torch.from_numpy(np.random.default_rng(1).random((1, 3, s, s), dtype=np.float32))
    xn = x.numpy()
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = model(x).numpy()
    def eager():
        with torch.inference_mode():
            return model(x)

    built: dict = {"eager": (0.0, eager, None)}

    def add(name, build):
        t0 = time.perf_counter()
        try:
            fn = build()
            out = fn()  # first call: tracing / compiling happens here for the lazy ones
            out = out.float().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        except Exception as exc:  # noqa: BLE001 - a candidate that fails is reported, not fatal
            built[name] = (time.perf_counter() - t0, None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            return
        built[name] = (time.perf_counter() - t0, fn, float(np.abs(out - ref).max()))

    def channels_last():
        r = FAST_BACKENDS["channels_last"](model, 3)
        return lambda: r(xn)

    def jit_freeze():
        with torch.no_grad():
            tr = torch.jit.freeze(torch.jit.trace(copy.deepcopy(model), x))

        def run():
            with torch.no_grad():
                return tr(x)
        return run

    def jit_freeze_cl():
        mc = copy.deepcopy(model).to(memory_format=torch.channels_last)
        with torch.no_grad():
            tr = torch.jit.freeze(torch.jit.trace(mc, xc))

        def run():
            with torch.no_grad():
                return tr(xc)
        return run

    def compiled():
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # fold weights into the graph, prepack them for oneDNN
        c = torch.compile(copy.deepcopy(model).to(memory_format=torch.channels_last))

        def run():
            with torch.no_grad():
                return c(xc)
        return run

    def bf16():
        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x)
        return run

    def onnxruntime():
        r = FAST_BACKENDS["onnxruntime"](model, 3)
        return lambda: r(xn)

    add("channels_last", channels_last)
    add("jit_trace_freeze", jit_freeze)
    add("jit_trace_freeze_channels_last", jit_freeze_cl)
    if args.compile:
        add("torch_compile_inductor_freezing_cl", compiled)
    add("bf16_autocast", bf16)
    add("onnxruntime", onnxruntime)
    runnable = {k: v[1] for k, v in built.items() if v[1] is not None}
    times = alternate(runnable, args.repeats)
    e = times["eager"]["median_s"]
    rows = []
    for name, (setup, fn, diff) in built.items():
        row = {"path": name, "setup_s": round(setup, 2)}
        if fn is None:
            row["error"] = diff
        else:
            m = times[name]["median_s"]
            row.update({"ms": round(m * 1e3, 1), "speedup": round(e / m, 3),
                        "max_abs_diff": None if diff is None else float(f"{diff:.3g}")})
        rows.append(row)
    acc = bf16_psnr_change()
    for row in rows:
        if row["path"] == "bf16_autocast":
            row["vdsr_y_psnr_change_db"] = acc
    return rows


def bf16_psnr_change():
    """Y-PSNR(bf16) - Y-PSNR(fp32) of the published VDSR on Set5 butterfly x2, or None without the data."""
    import torch

    weights = SHARED / "weights" / "vdsr" / "vdsr_model_epoch_50_state_dict.npz"
    photo = SHARED / "sr" / "Set5" / "butterfly.png"
    if not (weights.exists() and photo.exists()):
        return None
    from kmsr_cli.plugin_host import get_host
    from kmsr_ops.colour import rgb2ycbcr
    from kmsr_ops.image_io import read_image
    from kmsr_ops.metrics import psnr
    from kmsr_ops.resize import imresize, modcrop

    hr = modcrop(read_image(photo, channels="RGB").pixels.astype(np.float64), SCALE)
    up = imresize(imresize(hr, 1 / SCALE), SCALE)
    y_hr = rgb2ycbcr(hr)[..., 0] * 255
    y_in = torch.from_numpy(rgb2ycbcr(up)[..., 0].astype(np.float32))[None, None]
    net = get_host().get("backbones", "vdsr").create(scale=SCALE, weights=str(weights)).eval()
    with torch.inference_mode():
        fp32 = net(y_in)[0, 0].double().numpy() * 255
        with torch.autocast("cpu", dtype=torch.bfloat16):
            b16 = net(y_in)[0, 0].float().double().numpy() * 255
    p32 = psnr(np.clip(fp32, 0, 255), y_hr, crop_border=SCALE)
    p16 = psnr(np.clip(b16, 0, 255), y_hr, crop_border=SCALE)
    return round(p16 - p32, 4)


# --------------------------------------------------------------------------- part 3
_WRAP = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
         "print('RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 'RC', r.returncode)")


def _measured(cmd: list[str], env: dict) -> tuple[float, int, str]:
    """(peak RSS in GB of the process tree's largest child, exit code, its stdout) of ``cmd``, run in a fresh wrapper."""
    p = subprocess.run([sys.executable, "-c", _WRAP, *cmd], capture_output=True, text=True, env=env)
    last = [ln for ln in p.stdout.splitlines() if ln.startswith("RSS_KB")][-1].split()
    out = "\n".join(ln for ln in p.stdout.splitlines() if not ln.startswith("RSS_KB"))
    if int(last[3]) != 0:
        sys.stderr.write(p.stderr[-3000:])
    return int(last[1]) / 1024**2, int(last[3]), out


class _Stop(Exception):
    pass


def child_tiles(png: str, tiles: int, fast: bool, blocks: int) -> None:
    """In a fresh process: decode the PNG, super-resolve its first ``tiles`` tiles; JSON on stdout."""
    from kmsr_cli.infer import inference_backend, super_resolve
    from kmsr_ops.image_io import read_image

    model = kmsr_model(blocks=blocks)
    t0 = time.perf_counter()
    backend = inference_backend(model, "cpu", fast)
    setup = time.perf_counter() - t0
    img = read_image(png)
    stamps, total = [time.perf_counter()], [0]

    def on_tile(k, n):
        stamps.append(time.perf_counter())
        total[0] = n
        if k >= tiles:
            raise _Stop

    try:
        super_resolve(model, img.pixels, tile=512, overlap=overlap_for(model), fast=fast, on_tile=on_tile)
    except _Stop:
        pass
    per_tile = np.diff(stamps)
    print(json.dumps({"backend": backend, "setup_s": setup, "tiles_done": len(per_tile), "tiles_total": total[0],
                      "tile_s": per_tile.tolist(), "rss_self_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))


def rss_4096(args) -> dict:
    import torch

    from kmsr_cli.checkpoint import save_model
    from kmsr_ops.image_io import write_png

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="kmsr-infer-bench-") as tmp:
        png = Path(tmp) / "in4096.png"
        write_png(png, test_image(4096, seed=5), bit_depth=8)
        me = [sys.executable, str(Path(__file__).resolve())]
        for key, fast, n in (("fast_16x64_first_tiles", True, args.tiles_4096),
                             ("eager_16x64_first_tiles", False, max(1, args.tiles_4096 - 1))):
            gb, rc, text = _measured([*me, "--child-tiles", str(n), "--child-png", str(png),
                                      "--child-fast", str(int(fast)), "--child-blocks", "16"], env)
            info = json.loads(text.strip().splitlines()[-1]) if rc == 0 else {}
            steady = info.get("tile_s", [])[1:] or info.get("tile_s", [])
            per = float(np.median(steady)) if steady else float("nan")
            out[key] = {"peak_rss_gb": round(gb, 3), "backend": info.get("backend"), "tiles_done": info.get("tiles_done"),
                        "tiles_total": info.get("tiles_total"), "tile_s": [round(t, 2) for t in info.get("tile_s", [])],
                        "extrapolated_total_min": round(per * info.get("tiles_total", 0) / 60, 1) if steady else None,
                        "exit_code": rc}
        if not args.skip_full_4096:
            torch.manual_seed(0)
            small = kmsr_model(blocks=1).module
            ckpt = Path(tmp) / "kmsr_1x64.safetensors"
            save_model(ckpt, small, backbone="kmsr", scale=SCALE)
            outp = Path(tmp) / "out.png"
            t0 = time.perf_counter()
            cli = [sys.executable, "-m", "kmsr_cli", "sr", str(png), "-o", str(outp), "--model", str(ckpt), "--json"]
            gb, rc, text = _measured(cli, env)
            secs = time.perf_counter() - t0
            out["cli_whole_image_1x64"] = {"peak_rss_gb": round(gb, 3), "seconds": round(secs, 1), "exit_code": rc,
                                           "output_bytes": outp.stat().st_size if outp.exists() else None,
                                           "command": "kmsr sr in4096.png -o out.png --model kmsr_1x64.safetensors --json"}
    peaks = [v["peak_rss_gb"] for v in out.values() if v.get("exit_code") == 0]
    out["peak_rss_gb_4096"] = round(max(peaks), 3) if peaks else None
    return out


# --------------------------------------------------------------------------- main
def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "onnxruntime": ort, "python": platform.python_version(),
            "loadavg_at_start": [round(v, 2) for v in os.getloadavg()]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--size", type=int, default=256, help="input side for the throughput run (output is twice that)")
    ap.add_argument("--tile", type=int, default=512, help="tile size in output pixels, as kmsr sr --tile")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--net-size", type=int, default=192, help="network input side for the candidate table")
    ap.add_argument("--no-candidates", dest="candidates", action="store_false", help="skip part 2")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="leave torch.compile out of part 2 (it compiles for a minute)")
    ap.add_argument("--skip-4096", action="store_true", help="skip part 3")
    ap.add_argument("--tiles-4096", type=int, default=4, help="tiles run by the 16-block model on the 4096 input")
    ap.add_argument("--skip-full-4096", action="store_true", help="in part 3, skip the whole-image command-line run")
    ap.add_argument("--child-tiles", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-png", help=argparse.SUPPRESS)
    ap.add_argument("--child-fast", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--child-blocks", type=int, default=16, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_tiles is not None:
        child_tiles(args.child_png, args.child_tiles, bool(args.child_fast), args.child_blocks)
        return 0

    res = {"machine": machine()}
    res.update(throughput(args))
    if args.candidates:
        res["candidates"] = candidates(args)
    if not args.skip_4096:
        r = rss_4096(args)
        res["peak_rss_gb_4096"] = r.pop("peak_rss_gb_4096")
        res["rss_4096"] = r
    res["targets"] = {"speedup": TARGET_SPEEDUP, "peak_rss_gb_4096": TARGET_RSS_GB}
    res["machine"]["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        print(json.dumps(res))
        return 0
    m = res["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), onnxruntime {m['onnxruntime']}")
    print(f"kmsr 16x64 x2, input {res['input']}, tile {res['tile']}, overlap {res['overlap']}, {res['repeats']} runs")
    print(f"eager : {res['eager_mpix_s']:.4f} Mpix/s")
    print(f"fast  : {res['fast_mpix_s']:.4f} Mpix/s  ({res['fast_path']}, setup {res['fast_setup_s']} s, "
          f"max diff {res['max_diff_16bit_levels']} 16-bit levels)")
    print(f"speed-up {res['speedup']:.2f}x (target >= {TARGET_SPEEDUP}x)")
    for row in res.get("candidates", []):
        print("  ", json.dumps(row))
    if "rss_4096" in res:
        for k, v in res["rss_4096"].items():
            print(f"4096: {k}: {json.dumps(v)}")
        print(f"peak RSS 4096x4096 -> 8192x8192: {res['peak_rss_gb_4096']} GB (target <= {TARGET_RSS_GB} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
