"""Which array module an op runs on, and whether the GPU paths are usable here.

The backend follows the input: NumPy arrays stay on the CPU, CuPy arrays on their GPU,
torch tensors on their own device. CuPy is optional (``pip install kmsr[gpu]``); when it is
missing or finds no device, :func:`cupy_status` says why. ``KMSR_FORCE_CPU=1`` hides CuPy
and CUDA from ``auto`` device selection.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from types import ModuleType

import numpy as np

FORCE_CPU_ENV = "KMSR_FORCE_CPU"


def force_cpu() -> bool:
    """True when the environment asks for the CPU whatever is installed."""
    return os.environ.get(FORCE_CPU_ENV, "").strip().lower() not in ("", "0", "false", "no")


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here, and why not when it cannot."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


@functools.lru_cache(maxsize=1)
def _probe_cupy() -> tuple[ModuleType | None, str]:
    try:
        import cupy  # noqa: PLC0415 - optional dependency, imported on demand
    except ImportError as exc:
        return None, f"CuPy is not installed ({exc.msg}); install it with: pip install 'kmsr[gpu]'"
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install raises all sorts of errors at import
        return None, f"CuPy failed to import: {type(exc).__name__}: {exc}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - CUDARuntimeError when no driver is present
        return None, f"CuPy found no usable CUDA device: {type(exc).__name__}: {exc}"
    if n < 1:
        return None, "CuPy found no CUDA device"
    return cupy, ""


def cupy_status() -> Availability:
    """Whether CuPy with a CUDA device is usable (ignores KMSR_FORCE_CPU)."""
    mod, reason = _probe_cupy()
    return Availability(mod is not None, reason)


def get_cupy() -> ModuleType:
    """The cupy module, or a RuntimeError that says why it cannot be used."""
    mod, reason = _probe_cupy()
    if mod is None:
        raise RuntimeError(reason)
    return mod


def torch_cuda_status() -> Availability:
    """Whether torch sees a CUDA device."""
    import torch  # noqa: PLC0415 - keep `import kmsr_ops` light

    if not torch.cuda.is_available():
        return Availability(False, "torch sees no CUDA device (CPU build or no GPU)")
    return Availability(True)


def is_cupy_array(x) -> bool:
    return type(x).__module__.startswith("cupy")


def is_torch_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


def get_array_module(x) -> ModuleType:
    """numpy for NumPy arrays, cupy for CuPy arrays (without importing cupy otherwise)."""
    if is_cupy_array(x):
        return get_cupy()
    return np


def resolve_device(device: str) -> str:
    """Turn ``auto|cpu|cuda|cuda:N`` into a concrete torch device string.

    ``auto`` picks CUDA when torch sees a device and KMSR_FORCE_CPU is not set.
    Asking for ``cuda`` where there is none, or for an unknown device, raises
    :class:`~kmsr_ops.errors.KmsrInputError` saying why (the CLI prints it as one line, exit 1).
    """
    device = (device or "auto").strip().lower()
    if device == "auto":
        if force_cpu():
            return "cpu"
        return "cuda" if torch_cuda_status() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        status = torch_cuda_status()
        if not status:
            from .errors import KmsrInputError

            raise KmsrInputError(f"--device {device} was asked for, but {status.reason}; use --device cpu or auto")
        return device
    from .errors import KmsrInputError

    raise KmsrInputError(f"--device: expected auto, cpu, cuda or cuda:N, found {device!r}")


def numba_cache_ok(module_file: str) -> bool:
    """Numba's on-disk cache needs a writable __pycache__ beside the module (or NUMBA_CACHE_DIR)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return True
    folder = os.path.join(os.path.dirname(os.path.abspath(module_file)), "__pycache__")
    if os.path.isdir(folder):
        return os.access(folder, os.W_OK)
    return os.access(os.path.dirname(folder), os.W_OK)
