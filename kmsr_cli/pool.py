"""Pool pipeline: synthetic kernel sets from generator plugins, and the statistics ``pool show`` reports."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kmsr_ops.errors import KmsrError, KmsrInputError
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


def compare_sets(kernels: np.ndarray, other: np.ndarray) -> dict:
    """Kernel MMD between two sets (see :mod:`kmsr_ops.mmd`), median-heuristic bandwidth."""
    from kmsr_ops.mmd import median_bandwidth, mmd, mmd2_unbiased

    h = median_bandwidth(kernels, other)
    out = {"bandwidth": h, "mmd": mmd(kernels, other, bandwidth=h)}
    out["mmd2_unbiased"] = mmd2_unbiased(kernels, other, bandwidth=h) if min(len(kernels), len(other)) >= 2 else None
    return out


WIDTH_TOLERANCE = 0.2


def width_check(reference: np.ndarray, candidate: np.ndarray, *, tolerance: float = WIDTH_TOLERANCE) -> dict:
    """Do ``candidate`` kernels (a GAN's samples) look like ``reference`` (its training kernels)?

    Passed when the median effective width is within ``tolerance`` of the reference's (a GAN that
    drifted wider or narrower fails) and the interquartile range of the widths is at least half
    the reference's (a GAN collapsed onto a few kernels fails). Cheaper and easier to read than
    the MMD, and it names what went wrong.
    """
    we, wg = kernel_statistics(reference)["width"], kernel_statistics(candidate)["width"]
    med_e, med_g = float(np.median(we)), float(np.median(wg))
    iqr_e = float(np.subtract(*np.percentile(we, [75, 25])))
    iqr_g = float(np.subtract(*np.percentile(wg, [75, 25])))
    drift = abs(med_g - med_e) / max(med_e, 1e-12)
    if drift > tolerance:
        reason = f"generated median width {med_g:.2f} vs {med_e:.2f} for the training kernels (drift {drift:.0%})"
    elif iqr_g < 0.5 * iqr_e:
        reason = f"generated width spread {iqr_g:.2f} < half of the training kernels' {iqr_e:.2f} (collapse)"
    else:
        reason = ""
    return {"passed": not reason, "width_median_estimated": med_e, "width_median_generated": med_g,
            "width_iqr_estimated": iqr_e, "width_iqr_generated": iqr_g, "reason": reason}


def describe_pool(path: str | os.PathLike, *, against: str | os.PathLike | None = None) -> dict:
    """Everything ``kmsr pool show`` reports, as one JSON-friendly document.

    With ``against``, adds the kernel MMD between the pool and that set (e.g. held-out kernels).
    """
    with KernelSet(path) as ks:
        kernels = ks.kernels()
        prov = ks.provenance()
        attrs = ks.attrs
    stats = kernel_statistics(kernels)
    doc = {
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
    if against is not None:
        with KernelSet(against) as other_set:
            other = other_set.kernels()
        if other.shape[-1] != kernels.shape[-1]:
            raise KmsrError(
                f"{against}: holds {other.shape[-1]}x{other.shape[-1]} kernels, {path} holds "
                f"{kernels.shape[-1]}x{kernels.shape[-1]}; the MMD compares kernels of one size",
                hint="bring one to the other's size with `kmsr pool merge REF.h5 SET.h5 --resample -o OUT.h5`",
            )
        doc["against"] = {
            "path": str(against),
            "count": int(len(other)),
            **compare_sets(kernels, other),
            "statistics": {name: _summary(v) for name, v in kernel_statistics(other).items()},
        }
    return doc


# --------------------------------------------------------------------------- pool build


def _take(prov: Provenance, idx: np.ndarray) -> Provenance:
    cols = ("origin", "source", "box", "method", "params", "seed", "index")
    return Provenance(**{c: [getattr(prov, c)[int(i)] for i in idx] for c in cols})


def _pick(n_available: int, n_wanted: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_wanted`` distinct kernels in file order (all of them when fewer)."""
    if n_wanted >= n_available:
        return np.arange(n_available)
    return np.sort(rng.choice(n_available, size=n_wanted, replace=False))


def build_pool(
    estimated: str | os.PathLike,
    out: str | os.PathLike,
    *,
    generated: str | os.PathLike | None = None,
    generator_checkpoint: str | os.PathLike | None = None,
    host: PluginHost | None = None,
    n_estimated: int = 1000,
    n_generated: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    warn: Callable[[str], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict:
    """KMSR's pool K+ = K' ∪ {G(z_1), …, G(z_N)} as one kernel set.

    ``n_estimated`` kernels drawn without replacement from ``estimated`` (all of them, with a
    warning, when it holds fewer), plus ``n_generated`` kernels either drawn likewise from the
    set ``generated`` or sampled from the GAN checkpoint ``generator_checkpoint``. The paper's
    pool is 1000 + 1000. Returns a summary (path, counts, scale, kernel size).
    """
    warn = warn or (lambda msg: None)
    if (generated is None) == (generator_checkpoint is None):
        raise KmsrError("give the generated kernels either as a set (--generated G.h5) or as a checkpoint (--generator GAN.safetensors), one of the two")
    for name, value in (("n_estimated", n_estimated), ("n_generated", n_generated)):
        if value < 1:
            raise KmsrInputError(f"{name}: expected at least 1 kernel, found {value}")
    out = Path(out)
    inputs = [Path(p) for p in (estimated, generated, generator_checkpoint) if p is not None]
    if any(out.resolve() == p.resolve() for p in inputs):
        raise KmsrError(f"{out}: the output is also an input; write the pool to a new file")
    rng = np.random.default_rng(seed)
    with KernelSet(estimated) as est:
        est_kernels = est.kernels()
        est_prov = est.provenance()
        scale, size = est.scale, est.kernel_size
    if len(est_kernels) < n_estimated:
        warn(f"warning: {estimated} holds {len(est_kernels)} kernels, fewer than the {n_estimated} asked for; using all of them")
    idx = _pick(len(est_kernels), n_estimated, rng)
    kernels = [est_kernels[idx].astype(np.float64)]
    prov = _take(est_prov, idx)
    if generated is not None:
        with KernelSet(generated) as gen:
            if gen.scale != scale:
                raise KmsrError(f"{generated}: scale x{gen.scale} differs from {estimated} (x{scale}); a pool holds kernels of one scale")
            if gen.kernel_size != size:
                raise KmsrError(f"{generated}: kernel size {gen.kernel_size} differs from {estimated} ({size})")
            gen_kernels = gen.kernels()
            gen_prov = gen.provenance()
        if len(gen_kernels) < n_generated:
            warn(f"warning: {generated} holds {len(gen_kernels)} kernels, fewer than the {n_generated} asked for; using all of them")
        gidx = _pick(len(gen_kernels), n_generated, rng)
        kernels.append(gen_kernels[gidx].astype(np.float64))
        prov.extend(_take(gen_prov, gidx))
        source = str(generated)
    else:
        from .gan import sample_from_checkpoint
        from .plugin_host import get_host

        gk, gprov, gscale, _ = sample_from_checkpoint(host or get_host(), generator_checkpoint, n_generated, seed=seed,
                                                      device=device, on_progress=on_progress)
        if gscale != scale:
            raise KmsrError(f"{generator_checkpoint}: trained on x{gscale} kernels, {estimated} is x{scale}; a pool holds kernels of one scale")
        if gk.shape[-1] != size:
            raise KmsrError(f"{generator_checkpoint}: makes {gk.shape[-1]}x{gk.shape[-1]} kernels, {estimated} holds {size}x{size}")
        kernels.append(gk)
        prov.extend(gprov)
        source = str(generator_checkpoint)
    n_est, n_gen = len(kernels[0]), len(kernels[1])
    path = write_kernel_set(
        out, np.concatenate(kernels), prov, scale=scale,
        description=f"KMSR pool: {n_est} kernels from {estimated} + {n_gen} from {source}",
        extra_attrs={"pool_estimated": str(estimated), "pool_generated": source, "pool_seed": int(seed)},
    )
    return {"path": str(path), "count": n_est + n_gen, "estimated": n_est, "generated": n_gen,
            "scale": int(scale), "kernel_size": int(size), "seed": int(seed)}
