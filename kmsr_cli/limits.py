"""Sizes checked before the work: what a command would allocate against what the machine has.

A huge count or size (``pool synth -n 100000000000``, ``--batch 100000000``) is refused with one
line saying how much memory it would need, instead of a MemoryError or an allocator traceback
minutes later. Scales are bounded as plain usage (``MAX_SCALE``).
"""

from __future__ import annotations

import logging
import os

from kmsr_ops.errors import KmsrError

# Largest SR scale the commands take: x16 already makes a 64x64 photo 1024x1024.
MAX_SCALE = 16


def machine_memory() -> int | None:
    """Physical memory of this machine in bytes (psutil when installed, else sysconf)."""
    try:
        import psutil  # type: ignore[import-not-found]

        return int(psutil.virtual_memory().total)
    except ImportError:  # not installed: ask the OS
        pass
    except Exception as exc:  # noqa: BLE001 - psutil installed but no answer (a sandbox's /proc): ask the OS
        logging.getLogger(__name__).debug("psutil gave no memory figure (%s); asking sysconf", exc)
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def check_memory(nbytes: float, what: str, *, hint: str | None = None) -> None:
    """Refuse (one line) ``what`` when it would need more than the machine's memory."""
    have = machine_memory()
    if have is None or nbytes <= have:
        return
    raise KmsrError(f"{what} would need about {human_bytes(nbytes)} of memory; this machine has {human_bytes(have)}",
                   hint=hint)
