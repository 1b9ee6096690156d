"""Built-in plugin: the dark-channel blind kernel estimator (Pan et al., CVPR 2016), KMSR stage 1.

Registered through the ``kmsr`` entry-point group like any third-party plugin:

- ``dark-channel``: runs on the CPU (Numba + pocketfft) everywhere, or on a GPU with
  ``device="cuda"`` (CuPy, patches solved in batches);
- ``dark-channel-cuda``: the same estimator with ``device="cuda"`` by default, listed separately
  so that ``kmsr plugins`` says whether (and why not) the GPU path can run here.

The numerics live in :mod:`kmsr_ops.blind_kernel`; this module only adapts them to the
estimator contract of :func:`kmsr_cli.hookspecs.kmsr_register_estimators`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kmsr_cli.hookspecs import hookimpl
from kmsr_ops import dark_channel_params as dcp
from kmsr_ops.backend import cupy_status, force_cpu
from kmsr_ops.errors import KmsrInputError
from kmsr_ops.validate import check_choice, check_int

BACKENDS = ("numba", "reference", "xp")  # kmsr_ops.blind_kernel.BACKENDS, without importing SciPy here

ESTIMATOR_NAME = "dark-channel"


class DarkChannelEstimator:
    """Pan et al.'s dark-channel kernel estimation with the reference code's defaults.

    :param device: ``cpu`` (default), ``cuda``/``cuda:N`` (CuPy), or ``auto`` (CUDA when CuPy
        sees a device and ``KMSR_FORCE_CPU`` is unset).
    :param schedule: ``reference`` (the reference code's continuation schedule) or ``fast``
        (fewer continuation rounds: 4.6x faster, more accurate on the Levin images it was chosen on,
        but 0.13 lower mean similarity on held-out photos and kernels; see
        benchmarks/results/estimate.md and benchmarks/estimate_heldout.py).
    :param backend: ``numba`` (CPU default), ``reference`` (plain NumPy/SciPy float64, slow; the
        speed baseline) or ``xp`` (array code shared with CuPy; the GPU default).
    :param threads: FFT threads per process (1 when several worker processes share the cores).
    :param batch_size: patches per GPU batch.

    On the GPU ``dark_assign`` defaults to ``"all"`` (see :func:`kmsr_ops.dark_channel.assign_dark_pixels`);
    the CPU keeps the reference's ``"sequential"``. ``params()`` records which one ran.
    :param params: any field of :class:`kmsr_ops.dark_channel_params.DarkChannelParams`
        (``kernel_size=25, lambda_dark=4e-3, lambda_grad=4e-3, gamma=2, iterations=5, window=35,
        kappa=2, kappa_dark=2, beta_max=1e5, beta_dark_max=8, ...``), overriding the schedule's.
    """

    def __init__(self, *, device: str = "cpu", schedule: str = "reference", backend: str | None = None,
                 threads: int = 1, batch_size: int = 64, **params):
        device = (device or "cpu").strip().lower()
        if device == "auto":
            device = "cuda" if (not force_cpu() and cupy_status().ok) else "cpu"
        if device.startswith("cuda"):
            status = cupy_status()
            if not status.ok:
                raise KmsrInputError(f"device {device!r}: the dark-channel GPU path needs CuPy and a CUDA device; {status.reason}")
        elif device != "cpu":
            raise KmsrInputError(f"device: expected auto, cpu, cuda or cuda:N, found {device!r}")
        self.device = device
        self.backend = check_choice("backend", backend or ("xp" if device.startswith("cuda") else "numba"), BACKENDS)
        if device.startswith("cuda") and self.backend != "xp":
            raise KmsrInputError(f"backend {self.backend!r} is CPU-only; on {device} use backend 'xp'")
        self.threads = check_int("threads", threads)
        self.batch_size = check_int("batch_size", batch_size)
        self.schedule = schedule
        if self.device.startswith("cuda"):
            # The reference write-back visits pixels one after another; a GPU runs it one thread
            # per image, which would dominate the batch. Writing at every thresholded argmin is
            # order-free and as accurate on the Levin benchmark; pass dark_assign="sequential"
            # to reproduce the CPU results exactly.
            params.setdefault("dark_assign", "all")
        self._params = dcp.make_params(schedule, **params)

    def _with_size(self, kernel_size: int | None) -> dcp.DarkChannelParams:
        if kernel_size is None or kernel_size == self._params.kernel_size:
            return self._params
        return dataclasses.replace(self._params, kernel_size=kernel_size).validate()

    def estimate(self, patch: np.ndarray, kernel_size: int | None = None, rng=None) -> np.ndarray:
        """Kernel (K, K) of a greyscale patch (H, W) in [0, 1]: float64, non-negative, sum 1,
        odd K, convolution orientation (``blurred = convolve2d(sharp, k)``). The estimate is
        deterministic: ``rng`` is accepted for the estimator contract and not used."""
        x = np.asarray(patch)
        if x.ndim != 2:
            raise KmsrInputError(f"patch: expected a greyscale (H, W) array, found shape {x.shape}")
        return self.estimate_batch(x[None], kernel_size, rng)[0]

    def estimate_batch(self, patches: np.ndarray, kernel_size: int | None = None, rng=None) -> np.ndarray:
        """Kernels (N, K, K) of patches (N, H, W) of one size: one batch per ``batch_size`` on the
        GPU, one patch after another on the CPU."""
        from kmsr_ops import blind_kernel as bk  # noqa: PLC0415 - SciPy and Numba only when estimating

        x = np.asarray(patches)
        if x.ndim != 3:
            raise KmsrInputError(f"patches: expected (N, H, W), found shape {x.shape}")
        p = self._with_size(kernel_size)
        step = self.batch_size if self.device.startswith("cuda") else 1
        out = [
            bk.estimate_kernels(x[i : i + step], p, backend=self.backend, device=self.device, threads=self.threads)
            for i in range(0, x.shape[0], step)
        ]
        return np.concatenate(out) if out else np.zeros((0, p.kernel_size, p.kernel_size))

    def params(self) -> dict:
        """JSON-friendly description for provenance."""
        return {
            "estimator": ESTIMATOR_NAME,
            "schedule": self.schedule,
            "backend": self.backend,
            "device": self.device,
            **self._params.to_dict(),
        }


def _cuda_factory(**options):
    options.setdefault("device", "cuda")
    return DarkChannelEstimator(**options)


_DEFAULTS = dcp.DarkChannelParams().to_dict()


@hookimpl
def kmsr_register_estimators(register):
    register(
        ESTIMATOR_NAME,
        DarkChannelEstimator,
        description="dark-channel prior blind deblurring (Pan et al. CVPR 2016), reference-code defaults; CPU or CUDA",
        devices=["cpu", "cuda"],
        schedules=sorted(dcp.SCHEDULES),
        options=_DEFAULTS,
    )
    register(
        f"{ESTIMATOR_NAME}-cuda",
        _cuda_factory,
        description="the dark-channel estimator on the GPU (CuPy), patches in batches",
        available=cupy_status,
        devices=["cuda"],
        schedules=sorted(dcp.SCHEDULES),
        options=_DEFAULTS,
    )
