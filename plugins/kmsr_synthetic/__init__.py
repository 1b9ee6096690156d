"""Built-in plugin: synthetic kernel generators (isotropic and anisotropic Gaussians, camera shake).

Registered through the ``kmsr`` entry-point group like any third-party plugin. Used for pools
when no photos are at hand, for tests, and as the naive baseline of the GAN quality benchmark.
"""

from __future__ import annotations

import numpy as np

from kmsr_cli.hookspecs import hookimpl
from kmsr_ops import kernels as kops
from kmsr_ops.errors import KmsrInputError


def _check_range(name: str, lo: float, hi: float, minimum: float = 0.0) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= minimum or hi < lo:
        raise KmsrInputError(f"{name}: expected {minimum} < low <= high, found ({lo}, {hi})")


class GaussianGenerator:
    """Isotropic Gaussians with sigma uniform in [sigma_min, sigma_max] (HR pixels)."""

    def __init__(self, sigma_min: float = 0.6, sigma_max: float = 2.5):
        _check_range("sigma", sigma_min, sigma_max)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def sample(self, n: int, *, size: int, rng: np.random.Generator) -> np.ndarray:
        sig = rng.uniform(self.sigma_min, self.sigma_max, size=n)
        return np.stack([kops.gaussian_kernel(size, s) for s in sig]) if n else np.zeros((0, size, size))

    def params(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class AnisotropicGenerator:
    """Anisotropic Gaussians: both sigmas uniform in [sigma_min, sigma_max], angle uniform in [0, pi)."""

    def __init__(self, sigma_min: float = 0.6, sigma_max: float = 3.0):
        _check_range("sigma", sigma_min, sigma_max)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def sample(self, n: int, *, size: int, rng: np.random.Generator) -> np.ndarray:
        out = np.zeros((n, size, size))
        for i in range(n):
            sx, sy = rng.uniform(self.sigma_min, self.sigma_max, size=2)
            theta = rng.uniform(0.0, np.pi)
            out[i] = kops.anisotropic_gaussian_kernel(size, sx, sy, theta)
        return out

    def params(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class MotionGenerator:
    """Random camera-shake trajectories rasterised into kernels (see kmsr_ops.kernels.motion_kernel)."""

    def __init__(self, **options):
        self.options = dict(options)

    def sample(self, n: int, *, size: int, rng: np.random.Generator) -> np.ndarray:
        out = np.zeros((n, size, size))
        for i in range(n):
            out[i] = kops.motion_kernel(size, rng=rng, **self.options)
        return out

    def params(self) -> dict:
        return dict(self.options)


_GENERATORS = (
    ("gaussian", GaussianGenerator, "isotropic Gaussian kernels, sigma uniform in [sigma_min, sigma_max]",
     {"sigma_min": 0.6, "sigma_max": 2.5}),
    ("aniso", AnisotropicGenerator, "anisotropic Gaussian kernels with random sigmas and angle",
     {"sigma_min": 0.6, "sigma_max": 3.0}),
    ("motion", MotionGenerator, "random camera-shake (motion) kernels from smooth random trajectories", {}),
)


@hookimpl
def kmsr_register_generators(register):
    for name, factory, description, options in _GENERATORS:
        register(name, factory, description=description, origin="synthetic", options=dict(options))
