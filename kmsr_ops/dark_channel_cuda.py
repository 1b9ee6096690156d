"""CuPy twin of :func:`kmsr_ops.dark_channel.assign_dark_pixels` (GPU only; imported on demand).

The reference write-back loop is sequential in raster order, so the GPU runs it with one
thread per image of the batch (the batch supplies the parallelism); the logic is line for line
the Numba kernel's (``assign_sequential``). ``mode="all"`` is an order-free scatter.
"""

from __future__ import annotations

import string

import numpy as np

from .backend import get_cupy

_SOURCE = r"""
template<typename T>
__device__ void assign_one(const T* S, const T* J, const int* ar, const int* ac, double thr,
                           int r, int H, int W, T* u, int* diff) {
    for (int m = 0; m < H; ++m) {
        int run = 0;
        for (int n = 0; n < W; ++n) {
            run += diff[m * (W + 1) + n];
            double jv = (double)J[m * W + n];
            if (jv * jv >= thr || jv == 0.0) continue;
            if (jv > 0.0 && run > 0) continue;
            int qr = ar[m * W + n], qc = ac[m * W + n];
            if (qr >= 0 && qr < H && qc >= 0 && qc < W) u[qr * W + qc] = (T)0;
            if (jv < 0.0) continue;
            int c0 = qc - r < 0 ? 0 : qc - r;
            int c1 = qc + r + 1;
            int r1 = qr + r < H - 1 ? qr + r : H - 1;
            for (int rr = m; rr <= r1; ++rr) {
                if (rr == m && c0 <= n) run += 1;
                else if (c0 < W) diff[rr * (W + 1) + c0] += 1;
                if (c1 < W) diff[rr * (W + 1) + c1] -= 1;
            }
        }
    }
}
"""

# One entry point per dtype (extern "C" functions cannot be templates), named assign_f32 / assign_f64.
_ENTRY = string.Template(r"""
extern "C" __global__ void assign_$suffix(const $T* S, const $T* J, const int* ar, const int* ac,
                                      const double* thr, int r, int N, int H, int W, $T* u, int* diff) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= N) return;
    if (thr[b] <= 0.0) return;
    long long off = (long long)b * H * W;
    assign_one<$T>(S + off, J + off, ar + off, ac + off, thr[b], r, H, W, u + off,
                   diff + (long long)b * H * (W + 1));
}
""")
_SOURCE += "".join(_ENTRY.substitute(suffix=suffix, T=t) for suffix, t in (("f32", "float"), ("f64", "double")))

_MODULE = None


def _module():
    global _MODULE
    if _MODULE is None:
        cp = get_cupy()
        _MODULE = cp.RawModule(code=_SOURCE, options=("-std=c++14",), name_expressions=None)
    return _MODULE


def assign_dark_pixels_cupy(S, J, rows, cols, threshold, window: int, *, mode: str = "sequential"):
    """See :func:`kmsr_ops.dark_channel.assign_dark_pixels`; S (H, W) or (N, H, W) CuPy array."""
    cp = get_cupy()
    squeeze = S.ndim == 2
    stack = cp.ascontiguousarray(S[None] if squeeze else S)
    n, H, W = stack.shape
    r = window // 2
    Js = cp.ascontiguousarray(J, dtype=stack.dtype).reshape(stack.shape)
    rs = cp.ascontiguousarray(rows, dtype=cp.int32).reshape(stack.shape)
    cs = cp.ascontiguousarray(cols, dtype=cp.int32).reshape(stack.shape)
    thr = cp.asarray(np.broadcast_to(np.asarray(threshold, dtype=np.float64), (n,)).copy())
    u = stack.copy()
    if mode == "sequential":
        fn = _module().get_function("assign_f32" if stack.dtype == cp.float32 else "assign_f64")
        diff = cp.zeros((n, H, W + 1), dtype=cp.int32)
        threads = 32
        blocks = (n + threads - 1) // threads
        fn((blocks,), (threads,), (stack, Js, rs, cs, thr, np.int32(r), np.int32(n), np.int32(H), np.int32(W), u, diff))
    else:
        zero = (Js * Js < thr.reshape(-1, 1, 1)) & (Js != 0)
        inside = zero & (rs >= 0) & (rs < H) & (cs >= 0) & (cs < W)
        b_idx = cp.broadcast_to(cp.arange(n).reshape(-1, 1, 1), stack.shape)[inside]
        u[b_idx, rs[inside], cs[inside]] = 0
    if r > 0:
        u[:, :r, :] = stack[:, :r, :]
        u[:, H - r :, :] = stack[:, H - r :, :]
        u[:, :, :r] = stack[:, :, :r]
        u[:, :, W - r :] = stack[:, :, W - r :]
    return u[0] if squeeze else u
