"""Kernel maximum mean discrepancy (MMD) between two sets of blur kernels.

Each blur kernel is flattened to a vector; the MMD kernel is the Gaussian RBF
``k(a, b) = exp(-||a - b||^2 / (2 h^2))`` with the bandwidth ``h`` set by the median
heuristic: the median Euclidean distance between distinct points of the pooled sets.

Two estimates of MMD^2 (Gretton et al., JMLR 2012, eqs. 3 and 5):

- :func:`mmd2_unbiased`, the U-statistic: diagonal terms left out, so its expectation is the
  population MMD^2 (zero for equal distributions, so it can come out slightly negative);
- :func:`mmd2_biased`, the V-statistic: diagonal terms kept; always >= 0, and larger by a
  finite-sample term of order 1/m + 1/n even for equal distributions.

:func:`mmd` is ``sqrt(max(mmd2_biased, 0))``, the distance in the RKHS between the two
empirical mean embeddings. Compare figures only at equal set sizes and one bandwidth.
"""

from __future__ import annotations

import numpy as np

from .errors import KmsrInputError

#: Above this many pooled points the median heuristic uses an evenly spaced subset.
MEDIAN_MAX_POINTS = 3000


def _flat(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim < 2 or a.shape[0] == 0:
        raise KmsrInputError(f"{name}: expected a non-empty stack (N, ...) of kernels, found shape {a.shape}")
    a = a.reshape(a.shape[0], -1)
    if not np.isfinite(a).all():
        raise KmsrInputError(f"{name}: expected finite values, found NaN or Inf")
    return a


def _check_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    a, b = _flat(x, "x"), _flat(y, "y")
    if a.shape[1] != b.shape[1]:
        raise KmsrInputError(f"x and y: expected kernels of one size, found {a.shape[1]} and {b.shape[1]} entries")
    return a, b


def pairwise_sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) squared Euclidean distances between the rows of ``a`` and of ``b``."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)  # the expansion can dip a hair below zero


def median_bandwidth(*sets) -> float:
    """Median distance between distinct points of the pooled sets (the median heuristic)."""
    flats = [_flat(s, f"sets[{i}]") for i, s in enumerate(sets)]
    if len({f.shape[1] for f in flats}) > 1:
        raise KmsrInputError(f"sets: expected kernels of one size, found {sorted({f.shape[1] for f in flats})} entries")
    pooled = np.concatenate(flats)
    if pooled.shape[0] < 2:
        raise KmsrInputError(f"sets: expected at least 2 kernels in all, found {pooled.shape[0]}")
    if pooled.shape[0] > MEDIAN_MAX_POINTS:
        pooled = pooled[np.linspace(0, pooled.shape[0] - 1, MEDIAN_MAX_POINTS).astype(np.intp)]
    d2 = pairwise_sq_dists(pooled, pooled)
    iu = np.triu_indices(pooled.shape[0], k=1)
    h = float(np.sqrt(np.median(d2[iu])))
    if not h > 0:
        raise KmsrInputError("sets: every kernel is identical, the median distance is 0 (no bandwidth)")
    return h


def _grams(x, y, bandwidth):
    a, b = _check_pair(x, y)
    h = median_bandwidth(a, b) if bandwidth is None else float(bandwidth)
    if not (np.isfinite(h) and h > 0):
        raise KmsrInputError(f"bandwidth: expected a positive number, found {bandwidth!r}")
    g = -1.0 / (2.0 * h * h)
    return np.exp(g * pairwise_sq_dists(a, a)), np.exp(g * pairwise_sq_dists(b, b)), np.exp(g * pairwise_sq_dists(a, b))


def mmd2_unbiased(x, y, *, bandwidth: float | None = None) -> float:
    """Unbiased estimate of MMD^2 (needs at least 2 kernels per set)."""
    kxx, kyy, kxy = _grams(x, y, bandwidth)
    m, n = kxx.shape[0], kyy.shape[0]
    if m < 2 or n < 2:
        raise KmsrInputError(f"the unbiased MMD needs at least 2 kernels per set, found {m} and {n}")
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def mmd2_biased(x, y, *, bandwidth: float | None = None) -> float:
    """Biased (V-statistic) estimate of MMD^2: the squared distance of the mean embeddings."""
    kxx, kyy, kxy = _grams(x, y, bandwidth)
    return float(kxx.mean() + kyy.mean() - 2.0 * kxy.mean())


def mmd(x, y, *, bandwidth: float | None = None) -> float:
    """sqrt of the biased MMD^2: >= 0, 0 only for identical empirical distributions."""
    return float(np.sqrt(max(mmd2_biased(x, y, bandwidth=bandwidth), 0.0)))
