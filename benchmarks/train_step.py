"""Training-step time with the degradation on the device inside the step vs on pre-made batches.

Both modes train the same ``kmsr`` backbone (L1, Adam) in one process; only the data differ:

- ``with_degradation``: what ``kmsr_cli/train.py`` does every step: ``PatchSampler`` cuts HR
  patches (flips, turns), they move to the device, the ``pool`` degradation blurs each with a
  kernel drawn from a pool of 1000 synthetic 25x25 motion kernels, then forward, backward, Adam;
- ``premade``: (input, target) batches made the same way before timing, already on the device,
  cycled through: forward, backward, Adam only.

``overhead_fraction = (t_with - t_premade) / t_with`` from the median step times, the two modes
timed in alternating blocks so that load from other processes hits both alike. The sampling
and the degradation are also timed inside the steps (``components_ms``, medians): their sum
over ``t_with`` is a second, less noisy estimate of the same fraction. ``--compare-torch-route``
adds a third mode, the pool blur called on torch tensors as before it went through NumPy.

    python benchmarks/train_step.py                 # CPU, small model (4 blocks, 32 filters, batch 16, patch 64)
    python benchmarks/train_step.py --json
    python benchmarks/train_step.py --device cuda   # full model (16 blocks, 64 filters, batch 32, patch 128)
    python benchmarks/train_step.py --compare-torch-route
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

from kmsr_cli.plugin_host import get_host
from kmsr_cli.train import SKIMAGE_TRAIN, PatchSampler, load_hr_images
from kmsr_ops.blur import blur
from kmsr_ops.kernels import motion_kernel

# Small model for a 2-core CPU; the paper's model and batch when a GPU is there.
PRESETS = {
    "cpu": {"blocks": 4, "filters": 32, "batch": 16, "patch": 64},
    "cuda": {"blocks": 16, "filters": 64, "batch": 32, "patch": 128},
}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def make_pool(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([motion_kernel(size, rng=rng) for _ in range(n)])


def median_ms(times: list[float]) -> float:
    return float(np.median(times) * 1e3)


def iqr_ms(times: list[float]) -> float:
    q1, q3 = np.percentile(times, [25, 75])
    return float((q3 - q1) * 1e3)


def run(args) -> dict:
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    cfg = dict(PRESETS[dev.type])
    for key in cfg:
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    scale = 2
    torch.manual_seed(args.seed)
    host = get_host()
    model = host.get("backbones", "kmsr").create(scale=scale, blocks=cfg["blocks"], filters=cfg["filters"]).to(dev)
    kernels = make_pool(args.pool_size, args.kernel_size, args.seed)
    degrade = host.get("degradations", "pool").create(scale=scale, input="upsampled", channels="rgb", kernels=kernels)
    images, _ = load_hr_images([], default=SKIMAGE_TRAIN)
    g_data = torch.Generator().manual_seed(args.seed + 1)
    g_deg = torch.Generator().manual_seed(args.seed + 2)
    sampler = PatchSampler(images, cfg["patch"], g_data)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.L1Loss()
    model.train()

    def hr_batch():
        # As train.py: uint8 patches on the host, moved to the device, then to [0, 1] float.
        return sampler(cfg["batch"]).to(dev, non_blocking=True).float().div_(255)

    def optimise(x, y, record) -> float:
        t0 = time.perf_counter()
        out = model(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        v = float(loss.detach())  # train.py reads the loss every step (a device sync)
        record["forward_backward_adam"].append(time.perf_counter() - t0)
        return v

    def new_record() -> dict:
        return {"sample_patches": [], "degradation": [], "forward_backward_adam": []}

    parts, torch_parts, pre_parts, scratch = new_record(), new_record(), new_record(), new_record()

    def step_with(route=None, record=parts) -> float:
        # Sub-times inside real steps (the data path right after a training step, as in
        # train.py); on CUDA the two extra syncs make this mode slightly slower, if anything.
        t0 = time.perf_counter()
        hr = hr_batch()
        sync(dev)
        t1 = time.perf_counter()
        with torch.no_grad():
            x, y = (route or degrade)(hr, g_deg)
        sync(dev)
        t2 = time.perf_counter()
        record["sample_patches"].append(t1 - t0)
        record["degradation"].append(t2 - t1)
        return optimise(x, y, record)

    def torch_route(hr, generator):
        # The pool degradation as it was before it gathered and checked in NumPy on the CPU:
        # kernels indexed in torch, kmsr_ops.blur called on torch tensors.
        params = degrade.sample(tuple(hr.shape), generator, hr.device)
        ks = degrade._kernels_on(hr.device, hr.dtype)[params["index"].to(hr.device)]
        return blur(hr, ks, degrade.boundary), hr

    premade = []
    with torch.no_grad():
        for _ in range(args.premade_batches):
            premade.append(degrade(hr_batch(), g_deg))
    cursor = [0]

    def step_premade(record=pre_parts) -> float:
        x, y = premade[cursor[0] % len(premade)]
        cursor[0] += 1
        return optimise(x, y, record)

    def timed(fn) -> float:
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        return time.perf_counter() - t0

    compare = args.compare_torch_route and dev.type == "cpu"
    for _ in range(args.warmup):
        step_with(record=scratch)
        step_premade(scratch)
        if compare:
            step_with(torch_route, scratch)
    t_with, t_pre, t_torch = [], [], []
    block = max(1, args.block)
    done = 0
    while done < args.steps:
        n = min(block, args.steps - done)
        t_with += [timed(step_with) for _ in range(n)]
        t_pre += [timed(step_premade) for _ in range(n)]
        if compare:
            t_torch += [timed(lambda: step_with(torch_route, torch_parts)) for _ in range(n)]
        done += n

    mw, mp = median_ms(t_with), median_ms(t_pre)
    ms, md = median_ms(parts["sample_patches"]), median_ms(parts["degradation"])
    res = {
        "overhead_fraction": round((mw - mp) / mw, 4),
        "step_ms_with_degradation": round(mw, 2),
        "step_ms_premade": round(mp, 2),
        "components_ms": {"sample_patches": round(ms, 3), "degradation": round(md, 3),
                          "forward_backward_adam_with": round(median_ms(parts["forward_backward_adam"]), 2),
                          "forward_backward_adam_premade": round(median_ms(pre_parts["forward_backward_adam"]), 2)},
        "component_fraction": round((ms + md) / mw, 4),
        "noise_iqr_ms": {"with_degradation": round(iqr_ms(t_with), 2), "premade": round(iqr_ms(t_pre), 2),
                         "sample_patches": round(iqr_ms(parts["sample_patches"]), 3),
                         "degradation": round(iqr_ms(parts["degradation"]), 3)},
        "target_fraction": 0.05,
        "config": {
            "device": str(dev), "backbone": "kmsr", "blocks": cfg["blocks"], "filters": cfg["filters"],
            "batch": cfg["batch"], "patch": cfg["patch"], "scale": scale, "degradation": "pool",
            "pool": f"{args.pool_size} synthetic motion kernels {args.kernel_size}x{args.kernel_size}",
            "loss": "l1", "optimizer": "Adam", "steps_per_mode": args.steps, "warmup": args.warmup,
            "block": block, "premade_batches": args.premade_batches, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "machine": platform.machine(),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "loadavg": [round(v, 2) for v in os.getloadavg()],
        },
    }
    if compare:
        mt = median_ms(t_torch)
        res["torch_route"] = {
            "step_ms": round(mt, 2), "overhead_fraction": round((mt - mp) / mt, 4),
            "components_ms": {k: round(median_ms(v), 3) for k, v in torch_parts.items()},
        }
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per mode first")
    ap.add_argument("--block", type=int, default=5, help="steps per mode before switching (interleaving)")
    ap.add_argument("--premade-batches", type=int, default=8)
    ap.add_argument("--blocks", type=int, default=None)
    ap.add_argument("--filters", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--patch", type=int, default=None)
    ap.add_argument("--pool-size", type=int, default=1000)
    ap.add_argument("--kernel-size", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare-torch-route", action="store_true",
                    help="also time steps with the pool blur on torch tensors (the route before the NumPy one; CPU)")
    args = ap.parse_args(argv)
    res = run(args)
    if args.json:
        print(json.dumps(res))
        return 0
    c = res["config"]
    print(f"kmsr {c['blocks']} blocks x {c['filters']} filters, batch {c['batch']}, patch {c['patch']}, "
          f"pool of {c['pool']}, {c['device']}, torch threads {c['torch_threads']}")
    print(f"step with degradation : {res['step_ms_with_degradation']:9.2f} ms (IQR {res['noise_iqr_ms']['with_degradation']} ms)")
    print(f"step on premade batch : {res['step_ms_premade']:9.2f} ms (IQR {res['noise_iqr_ms']['premade']} ms)")
    print(f"  sampling patches    : {res['components_ms']['sample_patches']:9.3f} ms")
    print(f"  pool degradation    : {res['components_ms']['degradation']:9.3f} ms")
    print(f"  fwd/bwd/Adam        : {res['components_ms']['forward_backward_adam_with']:9.2f} ms "
          f"(premade: {res['components_ms']['forward_backward_adam_premade']:.2f} ms)")
    print(f"overhead fraction     : {res['overhead_fraction']:.2%} (from components: {res['component_fraction']:.2%}; "
          f"target <= {res['target_fraction']:.0%})")
    if "torch_route" in res:
        t = res["torch_route"]
        print(f"torch route (before)  : {t['step_ms']:9.2f} ms per step, overhead {t['overhead_fraction']:.2%}, "
              f"components {t['components_ms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
