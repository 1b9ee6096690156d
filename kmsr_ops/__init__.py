"""Numeric kernels of kmsr: no knowledge of the CLI or of plugins.

Every op has a plain NumPy/SciPy reference; fast paths (batched FFT, Numba, torch, CuPy)
are tested against it.
"""
