"""Numba kernels of :mod:`kmsr_ops.dark_channel` (imported on first use: numba is slow to import).

Module-level functions so that Numba's on-disk cache can find them again in a new process.
"""

from __future__ import annotations

import numba
import numpy as np

from .backend import numba_cache_ok

_CACHE = numba_cache_ok(__file__)


@numba.njit(cache=_CACHE)
def load_row(img, i, r, prow):
    # Row i of the replicate-padded frame (H+2r, W+2r) into a contiguous buffer.
    H, W = img.shape
    src = img[min(max(i - r, 0), H - 1)]
    for j in range(r):
        prow[j] = src[0]
        prow[W + r + j] = src[W - 1]
    for j in range(W):
        prow[r + j] = src[j]

@numba.njit(cache=_CACHE)
def vh_columns(img, r, out_v, out_i, hb, hbi, gb, gbi, prow):
    # Running minimum down each column of the padded frame over w = 2r+1 rows, topmost
    # row winning ties (van Herk / Gil-Werman). Output rows are produced one block of w at
    # a time: suffix minima of the block (hb, w rows) and a running prefix minimum of the
    # next block (gb, one row), so the working set stays a few hundred kB.
    H, W = img.shape
    w = 2 * r + 1
    Wp = W + 2 * r
    for B in range(0, H, w):
        last = B + w - 1
        load_row(img, last, r, prow)
        k = w - 1
        for j in range(Wp):
            hb[k, j] = prow[j]
            hbi[k, j] = last
        for i in range(last - 1, B - 1, -1):
            load_row(img, i, r, prow)
            k = i - B
            for j in range(Wp):
                v = prow[j]
                below = hb[k + 1, j]
                take = v <= below
                hb[k, j] = v if take else below
                hbi[k, j] = i if take else hbi[k + 1, j]
        for j in range(Wp):
            out_v[B, j] = hb[0, j]
            out_i[B, j] = hbi[0, j]
        for i in range(B + 1, min(B + w, H)):
            e = i + w - 1
            load_row(img, e, r, prow)
            k = i - B
            if e == B + w:
                for j in range(Wp):
                    gb[j] = prow[j]
                    gbi[j] = e
            else:
                for j in range(Wp):
                    v = prow[j]
                    g = gb[j]
                    take = v < g
                    gb[j] = v if take else g
                    gbi[j] = e if take else gbi[j]
            for j in range(Wp):
                hv = hb[k, j]
                g = gb[j]
                take = hv <= g
                out_v[i, j] = hv if take else g
                out_i[i, j] = hbi[k, j] if take else gbi[j]

@numba.njit(cache=_CACHE)
def vh_rows(v, vi, r, J, ar, ac, g, gi, h, hi):
    # Running minimum along each row of v (H, W+2r) over w columns, leftmost winning
    # ties; the row of the winner comes from vi. Positions are returned in image
    # coordinates of the padded frame (padded index - r; may lie outside the image).
    H, Wp = v.shape
    W = Wp - 2 * r
    w = 2 * r + 1
    for i in range(H):
        row = v[i]
        for B in range(0, Wp, w):
            end = min(B + w, Wp)
            g[B] = row[B]
            gi[B] = B
            for j in range(B + 1, end):
                x = row[j]
                take = x < g[j - 1]
                g[j] = x if take else g[j - 1]
                gi[j] = j if take else gi[j - 1]
            h[end - 1] = row[end - 1]
            hi[end - 1] = end - 1
            for j in range(end - 2, B - 1, -1):
                x = row[j]
                take = x <= h[j + 1]
                h[j] = x if take else h[j + 1]
                hi[j] = j if take else hi[j + 1]
        rows_i = vi[i]
        for j in range(W):
            e = j + w - 1
            take = h[j] <= g[e]
            c = hi[j] if take else gi[e]
            J[i, j] = h[j] if take else g[e]
            ac[i, j] = c - r
            ar[i, j] = rows_i[c] - r

@numba.njit(cache=_CACHE)
def dark_stack(imgs, r, J, ar, ac):
    n, H, W = imgs.shape
    w = 2 * r + 1
    Wp = W + 2 * r
    dt = imgs.dtype
    hb = np.empty((w, Wp), dt)
    hbi = np.empty((w, Wp), np.int32)
    gb = np.empty(Wp, dt)
    gbi = np.empty(Wp, np.int32)
    prow = np.empty(Wp, dt)
    v = np.empty((H, Wp), dt)
    vi = np.empty((H, Wp), np.int32)
    g1 = np.empty(Wp, dt)
    h1 = np.empty(Wp, dt)
    gi1 = np.empty(Wp, np.int32)
    hi1 = np.empty(Wp, np.int32)
    for b in range(n):
        vh_columns(imgs[b], r, v, vi, hb, hbi, gb, gbi, prow)
        vh_rows(v, vi, r, J[b], ar[b], ac[b], g1, gi1, h1, hi1)

@numba.njit(cache=_CACHE)
def assign_sequential(S, J, ar, ac, thr, r, u, diff):
    # The reference loop visits window centres in raster order and, for a window whose
    # thresholded dark value is 0, writes 0 at the window's argmin unless the window's
    # current minimum is already 0. Windows with J > 0 are therefore skipped when an
    # earlier write fell inside them; that is tracked with per-row difference arrays of
    # "writes covering this centre", O(w) per write and O(1) per centre. Writes for J < 0
    # always happen and need no tracking (a window with J > 0 cannot contain a pixel < 0).
    # u must hold a copy of S on entry; diff (H, W+1) int32 zeros.
    H, W = S.shape
    for m in range(H):
        run = 0
        for n in range(W):
            run += diff[m, n]
            jv = J[m, n]
            if jv * jv >= thr or jv == 0.0:
                continue
            if jv > 0.0 and run > 0:
                continue
            qr = ar[m, n]
            qc = ac[m, n]
            if 0 <= qr < H and 0 <= qc < W:
                u[qr, qc] = 0.0
            if jv < 0.0:
                continue
            c0 = max(qc - r, 0)
            c1 = qc + r + 1  # > n, since the write lies in the window of (m, n)
            r1 = min(qr + r, H - 1)
            for rr in range(m, r1 + 1):
                if rr == m and c0 <= n:
                    run += 1
                elif c0 < W:
                    diff[rr, c0] += 1
                if c1 < W:
                    diff[rr, c1] -= 1

@numba.njit(cache=_CACHE)
def assign_all(J, ar, ac, thr, u):
    H, W = J.shape
    for m in range(H):
        for n in range(W):
            jv = J[m, n]
            if jv * jv < thr and jv != 0.0:
                qr = ar[m, n]
                qc = ac[m, n]
                if 0 <= qr < H and 0 <= qc < W:
                    u[qr, qc] = 0.0

@numba.njit(cache=_CACHE)
def assign_stack(S, J, ar, ac, thr, r, sequential, u):
    n, H, W = S.shape
    diff = np.zeros((H, W + 1), np.int32)
    for b in range(n):
        u[b] = S[b]
        if thr[b] <= 0.0:
            continue
        if sequential:
            diff[:, :] = 0
            assign_sequential(S[b], J[b], ar[b], ac[b], thr[b], r, u[b], diff)
        else:
            assign_all(J[b], ar[b], ac[b], thr[b], u[b])
        # The reference keeps the r-pixel border strip of S as it was.
        ub, sb = u[b], S[b]
        for i in range(H):
            if i < r or i >= H - r:
                ub[i, :] = sb[i, :]
            else:
                for j in range(min(r, W)):
                    ub[i, j] = sb[i, j]
                for j in range(max(W - r, 0), W):
                    ub[i, j] = sb[i, j]
