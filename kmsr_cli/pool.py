"""Pool pipeline: synthetic kernel sets from generator plugins, and the statistics ``pool show`` reports."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kmsr_ops.errors import KmsrInputError
from kmsr_ops.kernels import kernel_moments

from .kernelset import KernelSet, Provenance, write_kernel_set
from .plugin_host import PluginHost


def synth_pool(
    host: PluginHost,
    family: str,
    n: int,
    size: int,
    out: str | os.PathLike,
    *,
    scale: int,
    seed: int,
    options: dict | None = None,
    on_progress: Callable[[int], None] | None = None,
    chunk: int = 64,
) -> Path:
    """Draw ``n`` kernels from the generator plugin ``family`` and write them as a kernel set."""
    if n < 1:
        raise KmsrInputError(f"n: expected at least 1 kernel, found {n}")
    if size < 3 or size % 2 == 0:
        raise KmsrInputError(f"size: expected an odd kernel size >= 3, found {size}")
    backend = host.get("generators", family)
    gen = backend.create(**(options or {}))
    rng = np.random.default_rng(seed)
    params = gen.params() if hasattr(gen, "params") else dict(options or {})
    origin = backend.info.get("origin", "generated")
    kernels = np.empty((n, size, size), dtype=np.float64)
    done = 0
    while done < n:
        m = min(chunk, n - done)
        batch = np.asarray(gen.sample(m, size=size, rng=rng), dtype=np.float64)
        if batch.shape != (m, size, size):
            raise KmsrInputError(
                f"generator {family!r} (plugin {backend.plugin!r}) returned shape {batch.shape}, expected {(m, size, size)}"
            )
        kernels[done : done + m] = batch
        done += m
        if on_progress:
            on_progress(m)
    prov = Provenance()
    for i in range(n):
        prov.append(origin=origin, source=f"generator:{family}", method=family, params=params, seed=seed, index=i)
    return write_kernel_set(
        out,
        kernels,
        prov,
        scale=scale,
        description=f"{n} {family} kernels ({size}x{size}) from plugin {backend.plugin}",
        extra_attrs={"generator_params": json.dumps(params, sort_keys=True)},
    )


def kernel_statistics(kernels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-kernel effective width (sqrt of the mean second-moment eigenvalue), anisotropy, entropy."""
    width = np.empty(len(kernels))
    aniso = np.empty(len(kernels))
    entropy = np.empty(len(kernels))
    for i, k in enumerate(kernels):
        m = kernel_moments(k)
        width[i] = np.sqrt(0.5 * (m["sigma_major"] ** 2 + m["sigma_minor"] ** 2))
        aniso[i] = m["anisotropy"]
        p = k[k > 0].astype(np.float64)
        p = p / p.sum()
        entropy[i] = float(-(p * np.log2(p)).sum())
    return {"width": width, "anisotropy": aniso, "entropy_bits": entropy}


def _summary(v: np.ndarray) -> dict:
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return {"mean": None, "std": None, "min": None, "median": None, "max": None}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "median": float(np.median(finite)),
        "max": float(finite.max()),
    }


def describe_pool(path: str | os.PathLike) -> dict:
    """Everything ``kmsr pool show`` reports, as one JSON-friendly document."""
    with KernelSet(path) as ks:
        kernels = ks.kernels()
        prov = ks.provenance()
        attrs = ks.attrs
    stats = kernel_statistics(kernels)
    return {
        "path": str(path),
        "count": int(len(kernels)),
        "kernel_size": int(kernels.shape[-1]),
        "scale": int(attrs.get("scale", 0)),
        "created_by": attrs.get("created_by"),
        "created_at": attrs.get("created_at"),
        "description": attrs.get("description", ""),
        "by_origin": dict(Counter(prov.origin)),
        "by_method": dict(Counter(prov.method)),
        "statistics": {name: _summary(v) for name, v in stats.items()},
    }
