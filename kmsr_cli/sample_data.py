"""The photos kmsr can use with no download: scikit-image's bundled public-domain/CC0 images.

Used by ``kmsr demo``, as the default training data of ``kmsr train``, and by the experiment
scripts in ``benchmarks/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Real camera photographs among scikit-image's bundled data (public domain or CC0 per
# scikit-image's data documentation).
CC0_PHOTOS = ("astronaut", "coffee", "rocket", "chelsea", "camera", "brick", "grass", "gravel")


def load_cc0(name: str) -> np.ndarray:
    """One bundled photo as (H, W, 3) uint8 (grey photos repeated over three channels)."""
    import skimage.data as skd

    if name not in CC0_PHOTOS and name not in ("hubble_deep_field", "immunohistochemistry"):
        raise ValueError(f"unknown bundled photo {name!r}; known: {', '.join(CC0_PHOTOS)}")
    a = getattr(skd, name)()
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


def export_cc0(dest: str | Path, names=CC0_PHOTOS) -> list[Path]:
    """Write the bundled photos as PNG files into ``dest``; returns their paths."""
    from kmsr_ops.image_io import write_png

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        p = dest / f"{name}.png"
        if not p.exists():
            write_png(p, load_cc0(name))
        out.append(p)
    return out
