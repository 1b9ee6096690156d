"""Why does a model with the best SSIM lose PSNR on the RealSR pairs? Contrast, measured.

For each model, on the paired LR/HR images of a RealSR-style folder (HR/NAME.png, LR/NAME.png):

- ``psnr``: Y-PSNR against the HR, ``scale`` pixels shaved (as ``kmsr bench real``);
- ``std_vs_bicubic``: median over images of std(Y of the output) / std(Y of bicubic): how much
  contrast (mostly restored detail) the model adds over plain interpolation;
- ``hf_vs_hr``: median of the Laplacian energy of the output relative to the HR's;
- ``ls_gain``: median least-squares gain a in HR ~ a * output + b: below 1 means the output has
  more contrast than the HR supports (its extra detail does not line up with the HR's);
- ``psnr_gain_fit``: Y-PSNR after that per-image fit. This uses the HR, so it is a diagnosis (how
  much of the loss is amplitude rather than structure), never a method;
- with ``--hr-blur SIGMA``, ``psnr_blurred``: Y-PSNR after a Gaussian blur of SIGMA HR pixels of
  the output. SIGMA must come from somewhere other than these HR images (for example the camera's
  kernel width that ``kmsr adapt`` estimated from the LR images, divided by the scale: the blur the
  same lens gives an image taken at the scale's longer focal length). It tests whether the HR
  captures are blurrier than the model's restoration by the camera's own blur.

    python benchmarks/realsr_contrast.py --pairs ../shared/data/real_pairs/RealSR_x4_Canon --scale 4 \
        --models shipped=kmsr_cli/models/kmsr_x4.safetensors,carn_m=carn_m:../shared/data/weights/carn/carn_m_state_dict.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _y(rgb: np.ndarray) -> np.ndarray:
    return (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2] + 16.0) / 255.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def _laplacian_energy(y: np.ndarray) -> float:
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(np.std(lap))


def measure(pairs: Path, scale: int, models: dict[str, str], *, hr_blur: float = 0.0) -> dict:
    from scipy.ndimage import gaussian_filter

    from kmsr_cli.infer import super_resolve
    from kmsr_cli.models import resolve_model
    from kmsr_ops.image_io import read_image_array

    names = sorted(p.name for p in (pairs / "HR").iterdir() if p.suffix.lower() == ".png")
    loaded = {"bicubic": resolve_model("bicubic", scale=scale)}
    loaded.update({label: resolve_model(spec, scale=scale) for label, spec in models.items()})
    rows: dict[str, dict[str, list]] = {m: {"psnr": [], "std": [], "hf": [], "gain": [], "fit": [], "blurred": []}
                                       for m in loaded}
    s = scale
    for name in names:
        hr = _y(read_image_array(pairs / "HR" / name, channels="RGB").astype(np.float64))[s:-s, s:-s]
        lr = read_image_array(pairs / "LR" / name, channels="RGB").astype(np.float64)
        outs, blurred = {}, {}
        for label, srm in loaded.items():
            y = _y(super_resolve(srm, lr, tile=0).astype(np.float64) / 255.0)
            outs[label] = y[s:-s, s:-s][: hr.shape[0], : hr.shape[1]]
            if hr_blur > 0:  # blurred before the shave, so the shaved border is not the filter's
                blurred[label] = gaussian_filter(y, hr_blur, mode="reflect")[s:-s, s:-s][: hr.shape[0], : hr.shape[1]]
        for label, y in outs.items():
            a = np.stack([y.ravel(), np.ones(y.size)], 1)
            coef = np.linalg.lstsq(a, hr.ravel(), rcond=None)[0]
            r = rows[label]
            r["psnr"].append(_psnr(y, hr))
            r["std"].append(np.std(y) / np.std(outs["bicubic"]))
            r["hf"].append(_laplacian_energy(y) / _laplacian_energy(hr))
            r["gain"].append(coef[0])
            r["fit"].append(_psnr(a @ coef, hr.ravel()))
            if hr_blur > 0:
                r["blurred"].append(_psnr(blurred[label], hr))
    return {"pairs": str(pairs), "scale": scale, "images": len(names), "hr_blur": hr_blur,
            "models": {m: {"psnr": float(np.mean(r["psnr"])), "std_vs_bicubic": float(np.median(r["std"])),
                           "hf_vs_hr": float(np.median(r["hf"])), "ls_gain": float(np.median(r["gain"])),
                           "psnr_gain_fit": float(np.mean(r["fit"])),
                           **({"psnr_blurred": float(np.mean(r["blurred"]))} if hr_blur > 0 else {})}
                       for m, r in rows.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--models", required=True, help="LABEL=SPEC,... (any --model spec of kmsr sr)")
    ap.add_argument("--hr-blur", type=float, default=0.0,
                    help="also score each output blurred by a Gaussian of this sigma (HR pixels); 0: not")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    models = dict(item.split("=", 1) for item in args.models.split(","))
    doc = measure(args.pairs, args.scale, models, hr_blur=args.hr_blur)
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"{doc['images']} pairs of {doc['pairs']}, x{doc['scale']}\n")
    blur = f" | Y-PSNR blurred (sigma {doc['hr_blur']:g})" if doc["hr_blur"] > 0 else ""
    print(f"| model | Y-PSNR | std / bicubic's | Laplacian energy / HR's | LS gain (HR ~ a out + b) | Y-PSNR after that fit{blur} |")
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if blur else ""))
    for m, r in doc["models"].items():
        extra = f" | {r['psnr_blurred']:.2f}" if blur else ""
        print(f"| {m} | {r['psnr']:.2f} | {r['std_vs_bicubic']:.3f} | {r['hf_vs_hr']:.2f} | {r['ls_gain']:.3f} | "
              f"{r['psnr_gain_fit']:.2f}{extra} |")


if __name__ == "__main__":
    main()
