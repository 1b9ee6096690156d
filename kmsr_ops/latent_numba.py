"""Numba passes of the latent-image inner loop of :mod:`kmsr_ops.blind_kernel` (imported on first use).

Module-level functions so that Numba's on-disk cache can find them again in a new process.
"""

from __future__ import annotations

import numba
import numpy as np

from .backend import numba_cache_ok

_CACHE = numba_cache_ok(__file__)


@numba.njit(cache=_CACHE)
def grad_div(S, thr, out):
    # ∇ᵀ(h, v) of the periodic forward differences of S, each zeroed where h² + v² < thr,
    # streamed one row at a time (the previous row's v and this row's h are all it needs).
    n, H, W = S.shape
    hrow = np.empty(W, S.dtype)
    vrow = np.empty(W, S.dtype)
    vprev = np.empty(W, S.dtype)
    zero = S.dtype.type(0.0)
    for b in range(n):
        t = S.dtype.type(thr[b])
        img = S[b]
        o = out[b]
        for pass_i in range(H + 1):
            i = H - 1 if pass_i == 0 else pass_i - 1
            cur = img[i]
            nxt = img[i + 1] if i + 1 < H else img[0]
            for j in range(W - 1):
                hh = cur[j + 1] - cur[j]
                vv = nxt[j] - cur[j]
                keep = hh * hh + vv * vv >= t
                hrow[j] = hh if keep else zero
                vrow[j] = vv if keep else zero
            hh = cur[0] - cur[W - 1]
            vv = nxt[W - 1] - cur[W - 1]
            keep = hh * hh + vv * vv >= t
            hrow[W - 1] = hh if keep else zero
            vrow[W - 1] = vv if keep else zero
            if pass_i > 0:
                orow = o[i]
                orow[0] = hrow[W - 1] - hrow[0] + vprev[0] - vrow[0]
                for j in range(1, W):
                    orow[j] = hrow[j - 1] - hrow[j] + vprev[j] - vrow[j]
            for j in range(W):
                vprev[j] = vrow[j]


@numba.njit(cache=_CACHE)
def combine(num, Fd, den, den_g, beta):
    # Fd ← (num + β Fd) / (den + β den_g), in place. The spectra come in as float views (…, 2W)
    # of the complex arrays: the denominator is real, so one reciprocal serves both parts and
    # the loop stays in plain float arithmetic.
    n, H, W = den.shape
    bt = np.float32(beta)
    one = np.float32(1.0)
    for b in range(n):
        for i in range(H):
            nb = num[b, i]
            fd = Fd[b, i]
            dk = den[b, i]
            dg = den_g[i]
            for j in range(W):
                inv = one / (dk[j] + bt * dg[j])
                re = 2 * j
                fd[re] = (nb[re] + bt * fd[re]) * inv
                fd[re + 1] = (nb[re + 1] + bt * fd[re + 1]) * inv
