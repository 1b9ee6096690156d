"""Option checks shared by the plugins, so every backend words its refusals the same way.

Each check returns the value as a plain Python ``int``, ``float`` or the given choice (so options
serialise to JSON as they are), or raises :class:`~kmsr_ops.errors.KmsrInputError` with
``"NAME: expected ..., found VALUE"``. A ``bool`` is never accepted as a number.
"""

from __future__ import annotations

import math
import numbers

from .errors import KmsrInputError

__all__ = ["check_choice", "check_float", "check_int", "check_probability", "check_range"]


def _is_real(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def check_choice(name: str, value, choices):
    """``value`` when it is one of ``choices``."""
    if value not in choices:
        raise KmsrInputError(f"{name}: expected one of {', '.join(map(str, choices))}, found {value!r}")
    return value


def check_int(name: str, value, minimum: int = 1, maximum: int | None = None, *, odd: bool = False,
              expected: str | None = None) -> int:
    """``value`` as an int: an integer in ``minimum..maximum`` (odd when ``odd``); ``expected``
    replaces the message's default description (``an integer >= MINIMUM``)."""
    ok = (_is_real(value) and isinstance(value, numbers.Integral) and value >= minimum
          and (maximum is None or value <= maximum) and (not odd or value % 2 == 1))
    if not ok:
        expected = expected or f"an {'odd ' if odd else ''}integer >= {minimum}"
        raise KmsrInputError(f"{name}: expected {expected}, found {value!r}")
    return int(value)


def check_float(name: str, value, *, positive: bool = True) -> float:
    """``value`` as a float: a finite real number, above 0 when ``positive``."""
    if not _is_real(value) or not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive finite number" if positive else "a finite number"
        raise KmsrInputError(f"{name}: expected {kind}, found {value!r}")
    return float(value)


def check_probability(name: str, p) -> float:
    """``p`` as a float in [0, 1]."""
    if not _is_real(p) or not 0.0 <= p <= 1.0:
        raise KmsrInputError(f"{name}: expected a probability in [0, 1], found {p!r}")
    return float(p)


def check_range(name: str, lo, hi, *, minimum: float = 0.0, strict_low: bool = False) -> tuple[float, float]:
    """``(lo, hi)`` as floats with ``minimum <= lo <= hi`` (``minimum < lo`` when ``strict_low``)."""
    for v in (lo, hi):
        if not _is_real(v) or not math.isfinite(v):
            raise KmsrInputError(f"{name}: expected finite numbers, found ({lo!r}, {hi!r})")
    lo, hi = float(lo), float(hi)
    if (lo <= minimum if strict_low else lo < minimum) or hi < lo:
        rel = "<" if strict_low else "<="
        raise KmsrInputError(f"{name}: expected {minimum} {rel} low <= high, found ({lo}, {hi})")
    return lo, hi
