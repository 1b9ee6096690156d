"""The two kernel-pool plots of the KMSR paper, in one PNG (``kmsr pool show --plot``).

Left (Fig. 3 style): a grid of kernels, one band of rows per origin (estimated, generated,
synthetic), each kernel centre-cropped to 15x15 and scaled to its own maximum.

Right (Fig. 4 style): the central row of the pool's kernels, ``k[c, :]`` with ``c = K // 2``,
as a mean with a ±1 standard-deviation band, beside the central rows of the bicubic kernel at
the pool's scale (:func:`kmsr_ops.bicubic_kernel.bicubic_kernel`, MATLAB's downscaling cubic
stretched by the scale, centred on a pixel) and of isotropic Gaussians with sigma 1.25, 1.6
and 1.7 (the paper's test blurs), all K x K and summing to 1.

Matplotlib draws through its Agg canvas directly (no pyplot, no global backend switch); the
file is written to a temporary name and moved into place. Image size: :data:`FIGSIZE` x
:data:`DPI` = 1200 x 500 pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kmsr_ops.errors import KmsrError

from .atomic import replace_atomically

FIGSIZE = (12.0, 5.0)
DPI = 100
GRID_COLS = 8
GRID_ROWS = 8
CROP = 15
GAUSSIAN_SIGMAS = (1.25, 1.6, 1.7)
ORIGIN_ORDER = ("estimated", "generated", "synthetic")


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise KmsrError(f"--plot needs matplotlib ({exc})", hint="pip install matplotlib (a dependency of kmsr)") from None
    return Figure, FigureCanvasAgg


def _crop(kernels: np.ndarray, size: int) -> np.ndarray:
    k = kernels.shape[-1]
    if size >= k:
        return kernels
    lo = k // 2 - size // 2
    return kernels[:, lo:lo + size, lo:lo + size]


def grid_mosaic(kernels: np.ndarray, origins: Sequence[str], *, seed: int = 0, cols: int = GRID_COLS,
                rows: int = GRID_ROWS, crop: int = CROP) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """Mosaic image (NaN between tiles) and, per origin, (label, first row, number of rows)."""
    rng = np.random.default_rng(seed)
    origins = np.asarray(list(origins))
    present = [o for o in ORIGIN_ORDER if (origins == o).any()] + sorted(set(origins) - set(ORIGIN_ORDER))
    rows_each = max(1, rows // max(1, len(present)))
    ks = _crop(np.asarray(kernels, dtype=np.float64), crop)
    c = ks.shape[-1]
    picks: list[tuple[str, np.ndarray]] = []
    for origin in present:
        idx = np.flatnonzero(origins == origin)
        take = min(len(idx), rows_each * cols)
        picks.append((origin, np.sort(rng.choice(idx, size=take, replace=False))))
    band_rows = [-(-len(idx) // cols) for _, idx in picks]
    total_rows = sum(band_rows)
    mosaic = np.full((total_rows * (c + 1) - 1, cols * (c + 1) - 1), np.nan)
    bands, row = [], 0
    for (origin, idx), nrows in zip(picks, band_rows):
        bands.append((origin, row, nrows))
        for j, i in enumerate(idx):
            r, col = divmod(j, cols)
            tile = ks[i] / ks[i].max() if ks[i].max() > 0 else ks[i]
            y, x = (row + r) * (c + 1), col * (c + 1)
            mosaic[y:y + c, x:x + c] = tile
        row += nrows
    return mosaic, bands


def central_profiles(kernels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, mean, std) of the kernels' central rows ``k[K // 2, :]``."""
    ks = np.asarray(kernels, dtype=np.float64)
    c = ks.shape[-1] // 2
    rows = ks[:, c, :]
    return np.arange(ks.shape[-1]) - c, rows.mean(axis=0), rows.std(axis=0)


def reference_profiles(size: int, scale: int) -> dict[str, np.ndarray]:
    """Central rows of the bicubic kernel (x``scale``) and of the paper's Gaussians, (size, size) each."""
    from kmsr_ops.bicubic_kernel import bicubic_kernel
    from kmsr_ops.kernels import gaussian_kernel

    c = size // 2
    out = {}
    try:
        out[f"bicubic x{scale}"] = bicubic_kernel(scale, size)[c]
    except ValueError:  # kernel too small to hold the stretched cubic: leave it out of the plot
        pass
    for s in GAUSSIAN_SIGMAS:
        out[f"Gaussian σ={s:g}"] = gaussian_kernel(size, s)[c]
    return out


def plot_pool(kernels: np.ndarray, origins: Sequence[str], scale: int, out: str | os.PathLike, *,
              title: str = "", seed: int = 0) -> Path:
    """Write the grid and profile plots of a pool side by side to ``out`` (PNG, 1200 x 500)."""
    Figure, FigureCanvasAgg = _matplotlib()
    out = Path(out)
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax_grid = fig.add_axes((0.08, 0.06, 0.40, 0.84))
    ax_prof = fig.add_axes((0.55, 0.12, 0.43, 0.78))

    mosaic, bands = grid_mosaic(kernels, origins, seed=seed)
    ax_grid.imshow(np.ma.masked_invalid(mosaic), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax_grid.set_facecolor("#4060a0")
    tile = min(CROP, kernels.shape[-1]) + 1
    ax_grid.set_yticks([(r + n / 2) * tile - 1 for _, r, n in bands], [o for o, _, _ in bands])
    ax_grid.set_xticks([])
    ax_grid.set_title(f"kernels (centre {min(CROP, kernels.shape[-1])}x{min(CROP, kernels.shape[-1])}, each to its max)")

    x, mean, std = central_profiles(kernels)
    ax_prof.fill_between(x, mean - std, mean + std, color="tab:blue", alpha=0.25, label="pool ±1 std")
    ax_prof.plot(x, mean, color="tab:blue", lw=2.2, label=f"pool mean ({len(kernels)} kernels)")
    styles = iter(["k--", "tab:red", "tab:orange", "tab:green"])
    for label, prof in reference_profiles(kernels.shape[-1], scale).items():
        style = next(styles)
        if style.startswith("k"):
            ax_prof.plot(x, prof, style, lw=1.5, label=label)
        else:
            ax_prof.plot(x, prof, color=style, lw=1.3, label=label)
    ax_prof.axhline(0, color="0.6", lw=0.8)
    ax_prof.set_xlim(-8, 8)
    ax_prof.set_xlabel("offset from the kernel centre (HR pixels)")
    ax_prof.set_ylabel("k[centre row, x]")
    ax_prof.set_title("central profile of the mean kernel")
    ax_prof.legend(fontsize=8, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)

    return replace_atomically(out, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
