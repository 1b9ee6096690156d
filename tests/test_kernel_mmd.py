"""Kernel MMD (kmsr_ops.mmd) against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kmsr_ops.errors import KmsrInputError
from kmsr_ops.mmd import median_bandwidth, mmd, mmd2_biased, mmd2_unbiased


def test_median_bandwidth_by_hand():
    # Distances between 0, 1 and 3 are 1, 3 and 2: the median is 2.
    pts = np.array([[0.0], [1.0], [3.0]])
    assert median_bandwidth(pts[:2], pts[2:]) == pytest.approx(2.0)
    # Kernels are flattened: a (2, 2) kernel is a point of R^4.
    a = np.zeros((1, 2, 2))
    b = np.zeros((1, 2, 2))
    b[0, 1, 1] = 3.0
    b2 = b.copy()
    b2[0, 0, 0] = 4.0  # distances: a-b 3, a-b2 5, b-b2 4 → median 4
    assert median_bandwidth(a, np.concatenate([b, b2])) == pytest.approx(4.0)


def test_two_point_sets_by_hand():
    # x = {0, 1}, y = {0, 2}, k(a, b) = exp(-(a - b)^2 / (2 h^2)) with h = 1.
    x = np.array([[0.0], [1.0]])
    y = np.array([[0.0], [2.0]])
    e = math.exp
    kxy = [1.0, e(-2.0), e(-0.5), e(-0.5)]  # (0,0) (0,2) (1,0) (1,2)
    unbiased = e(-0.5) + e(-2.0) - 2 * sum(kxy) / 4
    biased = (2 + 2 * e(-0.5)) / 4 + (2 + 2 * e(-2.0)) / 4 - 2 * sum(kxy) / 4
    assert mmd2_unbiased(x, y, bandwidth=1.0) == pytest.approx(unbiased, rel=1e-12)
    assert mmd2_biased(x, y, bandwidth=1.0) == pytest.approx(biased, rel=1e-12)
    assert mmd(x, y, bandwidth=1.0) == pytest.approx(math.sqrt(biased), rel=1e-12)
    # The default bandwidth is the median distance of the pooled points {0, 1, 0, 2}:
    # pairwise distances 1, 0, 2, 1, 1, 2 → median 1.
    assert mmd2_unbiased(x, y) == pytest.approx(unbiased, rel=1e-12)


def test_identical_sets_and_symmetry():
    rng = np.random.default_rng(0)
    x = rng.random((30, 5, 5))
    y = rng.random((40, 5, 5))
    assert mmd(x, x) == pytest.approx(0.0, abs=1e-7)
    assert mmd2_unbiased(x, y) == pytest.approx(mmd2_unbiased(y, x), rel=1e-12)
    # The unbiased estimate of one distribution against itself averages to 0; the biased one does not.
    z = rng.random((40, 5, 5))
    same = [mmd2_unbiased(rng.random((40, 25)), rng.random((40, 25))) for _ in range(20)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same)) + 1e-9
    assert mmd2_biased(y, z) > 0
    far = mmd2_unbiased(rng.random((40, 25)), rng.random((40, 25)) + 0.5)
    assert far > 10 * np.std(same)


def test_bad_input_is_named():
    with pytest.raises(KmsrInputError, match="same|one size"):
        mmd2_unbiased(np.zeros((3, 5, 5)), np.zeros((3, 7, 7)))
    with pytest.raises(KmsrInputError, match="finite"):
        mmd(np.full((3, 2, 2), np.nan), np.zeros((3, 2, 2)))
    with pytest.raises(KmsrInputError, match="at least 2"):
        mmd2_unbiased(np.zeros((1, 2, 2)), np.ones((3, 2, 2)), bandwidth=1.0)
    with pytest.raises(KmsrInputError, match="identical"):
        median_bandwidth(np.zeros((3, 2, 2)))
