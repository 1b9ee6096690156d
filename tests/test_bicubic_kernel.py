"""The bicubic kernel (kmsr_ops.bicubic_kernel) against MATLAB imresize golden data and USRNet's kernels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import loadmat
from scipy.signal import correlate2d

from kmsr_ops.bicubic_kernel import bicubic_kernel, bicubic_kernel_1d, keys_cubic
from kmsr_ops.errors import KmsrInputError


def test_keys_cubic_values():
    # Keys (1981), a = -0.5: 1 at 0, 0 at the integers, -0.0625 at 1.5, 0.5625 at 0.5.
    np.testing.assert_allclose(keys_cubic([0, 0.5, 1, 1.5, 2, 2.5]), [1, 0.5625, 0, -0.0625, 0, 0], atol=1e-15)


@pytest.mark.parametrize("image,scale", [("butterfly", 2), ("butterfly", 3), ("butterfly", 4), ("woman", 3)])
def test_blur_and_decimate_is_matlab_imresize(shared_data, image, scale):
    """MATLAB's imresize(x, 1/s, 'bicubic') equals blur by bicubic_kernel(s) then decimation."""
    m = loadmat(shared_data / "matlab" / f"{image}_GT_x{scale}.mat")
    hr = m["im_gt_y"] / 255.0
    lr = m["im_l_ycbcr"][..., 0]
    # Output pixel i sits at input coordinate s*i + (s-1)/2: on a pixel for odd s, between two for even s,
    # so the kernel grid has the parity of s and its centre (size-1)/2 lands there.
    size = 4 * scale + (0 if scale % 2 == 0 else 1)
    k = bicubic_kernel(scale, size)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    blurred = correlate2d(hr, k, mode="valid")  # blurred[p] is centred on hr[p + (size - 1) / 2]
    # Output i is centred on hr coordinate s*i + (s-1)/2, i.e. on blurred[s*i + off]:
    off = ((scale - 1) - (size - 1)) // 2
    outs = []
    for axis in (0, 1):
        o = np.arange(lr.shape[axis])
        outs.append(o[(scale * o + off >= 0) & (scale * o + off < blurred.shape[axis])])
    ours = blurred[np.ix_(scale * outs[0] + off, scale * outs[1] + off)]
    np.testing.assert_allclose(ours, lr[np.ix_(*outs)], atol=1e-12)
    assert min(len(o) for o in outs) > 50


def test_centred_on_a_pixel_for_pools():
    k = bicubic_kernel(2, 25)
    assert k.shape == (25, 25)
    assert np.unravel_index(k.argmax(), k.shape) == (12, 12)
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])
    # cubic(t/2)/2 at t = 0, 1, 2, 3: 0.5, 0.28125, 0, -0.03125.
    np.testing.assert_allclose(bicubic_kernel_1d(2, 25)[12:16], [0.5, 0.28125, 0.0, -0.03125], atol=1e-15)
    assert k.min() < 0  # the negative lobes of the cubic


def test_close_to_usrnet_fitted_kernel(shared_data):
    """USRNet's x2 bicubic kernel was fitted, not derived: it is sharper, but the same shape."""
    usr = np.load(shared_data / "kernels" / "usrnet" / "kernels_bicubicx234.npy")[0].astype(np.float64)
    # USRNet's x2 kernel is centred between pixels 11 and 12: compare with our even-grid kernel there.
    ours = np.zeros((25, 25))
    ours[8:16, 8:16] = bicubic_kernel(2, 8)
    assert np.abs(ours - usr).max() < 0.02
    ours_profile, usr_profile = ours.sum(0), usr.sum(0)
    assert np.abs(ours_profile - usr_profile).max() < 0.05
    assert np.sign(ours_profile[8:16]).tolist() == np.sign(usr_profile[8:16]).tolist()


def test_bad_arguments():
    with pytest.raises(KmsrInputError, match="scale"):
        bicubic_kernel(0.5, 25)
    with pytest.raises(KmsrInputError, match="cut off"):
        bicubic_kernel(4, 9)
