"""Receptive fields of the built-in backbones, by interval arithmetic along one axis (no torch).

Follow where one input pixel (index 0) can reach: every layer maps the interval of positions it
can change at its input to the interval it can change at its output. Stride-1 convolutions
widen it by their padding; transposed and strided convolutions move it between the LR and HR
grids; a concatenation or a sum takes the hull. An output pixel depends on exactly the input
pixels whose reach includes it, and every layer here commutes with a shift of one input pixel
(one LR pixel, i.e. ``scale`` HR pixels, for LR-input networks), so the reach of pixel 0 gives
the receptive field.

Widths are in pixels of the network input (LR pixels for LR-input networks). The tests check
the formulas against a perturbation of one input pixel in random networks.
"""

from __future__ import annotations

Interval = tuple[int, int]  # inclusive (first, last)

IMPULSE: Interval = (0, 0)


def hull(*ivs: Interval) -> Interval:
    return min(a for a, _ in ivs), max(b for _, b in ivs)


def conv(iv: Interval, k: int, padding: int | None = None) -> Interval:
    """Stride-1 k x k convolution (``padding`` defaults to k // 2, a 'same' convolution)."""
    p = k // 2 if padding is None else padding
    return iv[0] - (k - 1 - p), iv[1] + p


def strided_conv(iv: Interval, k: int, stride: int, padding: int) -> Interval:
    """Output j reads inputs j*stride - padding + t, t in [0, k)."""
    a, b = iv
    return -((-(a + padding - k + 1)) // stride), (b + padding) // stride


def transposed_conv(iv: Interval, k: int, stride: int, padding: int) -> Interval:
    """Input i writes outputs i*stride - padding + t, t in [0, k)."""
    a, b = iv
    return a * stride - padding, b * stride - padding + k - 1


def pixel_shuffle(iv: Interval, s: int) -> Interval:
    return iv[0] * s, iv[1] * s + s - 1


def lr_width(hr_iv: Interval, scale: int) -> int:
    """Width in LR pixels, for a network whose LR impulse reaches ``hr_iv`` on the HR grid.

    LR pixel i owns HR pixels [i*scale, i*scale + scale - 1]; it is affected when that block
    meets ``hr_iv``.
    """
    a, b = hr_iv
    first = -((-(a - scale + 1)) // scale)
    last = b // scale
    return 2 * max(-first, last) + 1


# --------------------------------------------------------------------------- per backbone


def kmsr_rf(blocks: int) -> int:
    """Head conv, 2 convs per residual block, tail conv, all 3x3."""
    return 2 * (2 + 2 * blocks) + 1


def srcnn_rf(k2: int) -> int:
    """9x9, k2 x k2, 5x5."""
    return 9 + k2 + 5 - 2


def vdsr_rf(layers: int) -> int:
    return 2 * layers + 1


def edsr_rf(scale: int, blocks: int) -> int:
    """LR: head, 2 per block, body conv; upsampler convs (at LR, then 2x for x4); HR tail conv."""
    iv = IMPULSE
    for _ in range(2 + 2 * blocks):
        iv = conv(iv, 3)
    steps = [2, 2] if scale == 4 else [scale]
    for s in steps:
        iv = pixel_shuffle(conv(iv, 3), s)
    iv = conv(iv, 3)
    return lr_width(iv, scale)


def dbpn_rf(scale: int, stages: int, k: int, stride: int, padding: int) -> int:
    """D-DBPN: features (3x3, 1x1), dense up/down projections, 3x3 reconstruction at HR."""

    def up(iv):
        h0 = transposed_conv(iv, k, stride, padding)
        l0 = strided_conv(h0, k, stride, padding)
        h1 = transposed_conv(hull(l0, iv), k, stride, padding)
        return hull(h0, h1)

    def down(iv):
        l0 = strided_conv(iv, k, stride, padding)
        h0 = transposed_conv(l0, k, stride, padding)
        l1 = strided_conv(hull(h0, iv), k, stride, padding)
        return hull(l0, l1)

    feat = conv(IMPULSE, 3)
    lows: list[Interval] = []
    highs: list[Interval] = []
    for t in range(stages):
        highs.append(up(hull(*lows) if lows else feat))
        if t < stages - 1:
            lows.append(down(hull(*highs)))
    return lr_width(conv(hull(*highs), 3), scale)


def carn_m_rf(scale: int) -> int:
    """CARN-M: entry 3x3, 3 cascading blocks of 3 shared residual units (two 3x3 each, 1x1 fusions),
    the upsampler's 3x3 convs (one per x2 stage at its own grid, one for x3) and the HR exit 3x3."""
    iv = conv(IMPULSE, 3)
    for _ in range(9):
        iv = conv(conv(iv, 3), 3)
    steps = [2, 2] if scale == 4 else [scale]
    for s in steps:
        iv = pixel_shuffle(conv(iv, 3), s)
    iv = conv(iv, 3)
    return lr_width(iv, scale)


def imdn_rf(scale: int, modules: int = 6) -> int:
    """IMDN's convolutions: fea_conv 3x3; per module the chain c1, c2, c3, c4 (3x3 each; the
    distilled splits and the 1x1 c5 reach less far); the 1x1 fusion, LR_conv 3x3, and the
    upsampler's 3x3 at LR before the pixel shuffle. The channel attention's global mean and
    standard deviation are left out: they make every output depend a little on every input."""
    iv = conv(IMPULSE, 3)
    for _ in range(modules):
        for _ in range(4):
            iv = conv(iv, 3)
    iv = pixel_shuffle(conv(conv(iv, 3), 3), scale)
    return lr_width(iv, scale)
