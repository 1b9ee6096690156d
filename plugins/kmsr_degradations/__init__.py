"""Built-in plugin: training degradations (how an HR batch becomes a network input).

Registered through the ``kmsr`` entry-point group like any third-party plugin; importing it is
cheap (torch loads when a degradation is built).

- ``pool``: the paper's ``x0 = y * k0``, k0 drawn per sample from a kernel pool, at HR size
  (decimated for LR-input backbones);
- ``bicubic``: MATLAB bicubic downscaling (and upscaling back), how SRCNN/VDSR/EDSR/DBPN were trained;
- ``gaussian``: random isotropic/anisotropic Gaussian blur, then decimation;
- ``realistic``: pool blur, decimation, Gaussian noise and JPEG at random levels (beyond the paper).

Factories are called as ``factory(scale=S, input=INFO["input"], channels=INFO["channels"],
**options)`` with the backbone's registry info, and return a
:class:`~kmsr_degradations.base.Degradation`: ``x, y = degradation(hr, generator)`` (see
:mod:`kmsr_degradations.base` for shapes, devices and randomness). Registry ``info``:
``needs_kernels`` (the caller must pass ``kernels=``, the pool as an (N, K, K) array or a
zero-argument loader, e.g. ``lambda: KernelSet(path).kernels()``), ``decimates`` (HR sides must
be multiples of the scale), ``options`` with their defaults.
"""

from __future__ import annotations

from kmsr_cli.hookspecs import hookimpl

_LAZY = {
    "Degradation": "base",
    "PoolDegradation": "pool",
    "BicubicDegradation": "bicubic",
    "GaussianDegradation": "gaussian",
    "RealisticDegradation": "realistic",
    "gaussian_kernels": "gaussian",
}

__all__ = [*_LAZY, "make_pool", "make_bicubic", "make_gaussian", "make_realistic"]  # noqa: PLE0604 - _LAZY's keys are names

POOL_OPTIONS = {"kernels": None, "boundary": "reflect", "per_channel": False, "pool_scale": None, "bicubic_fraction": 0.0}
GAUSSIAN_OPTIONS = {"sigma_min": 0.2, "sigma_max": 2.0, "iso_prob": 0.5, "kernel_size": None, "boundary": "reflect"}
REALISTIC_OPTIONS = {**POOL_OPTIONS, "noise_min": 0.0, "noise_max": 0.04, "jpeg_prob": 0.7, "jpeg_min": 40, "jpeg_max": 95}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_pool(scale: int, input: str = "upsampled", channels: str = "rgb", **options):  # noqa: A002
    from .pool import PoolDegradation

    return PoolDegradation(scale, input, channels, **options)


def make_bicubic(scale: int, input: str = "upsampled", channels: str = "rgb"):  # noqa: A002
    from .bicubic import BicubicDegradation

    return BicubicDegradation(scale, input, channels)


def make_gaussian(scale: int, input: str = "upsampled", channels: str = "rgb", **options):  # noqa: A002
    from .gaussian import GaussianDegradation

    return GaussianDegradation(scale, input, channels, **options)


def make_realistic(scale: int, input: str = "upsampled", channels: str = "rgb", **options):  # noqa: A002
    from .realistic import RealisticDegradation

    return RealisticDegradation(scale, input, channels, **options)


@hookimpl
def kmsr_register_degradations(register):
    common = {"inputs": ["upsampled", "lr"], "channels": ["rgb", "y"]}
    register("pool", make_pool,
             description="the paper's: blur with a kernel drawn per sample from a pool, at HR size (decimated for LR input)",
             needs_kernels=True, decimates=False, options=dict(POOL_OPTIONS), **common)
    register("bicubic", make_bicubic,
             description="MATLAB bicubic downscaling (and upscaling back for pre-upsampling backbones)",
             needs_kernels=False, decimates=True, options={}, **common)
    register("gaussian", make_gaussian,
             description="random isotropic/anisotropic Gaussian blur, then decimation",
             needs_kernels=False, decimates=True, options=dict(GAUSSIAN_OPTIONS), **common)
    register("realistic", make_realistic,
             description="beyond the paper: pool blur, decimation, Gaussian noise and JPEG at random levels",
             needs_kernels=True, decimates=True, options=dict(REALISTIC_OPTIONS), **common)
