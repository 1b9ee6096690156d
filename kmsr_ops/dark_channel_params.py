"""Parameters of the dark-channel kernel estimator (:mod:`kmsr_ops.blind_kernel`) and its named
schedules. Kept apart from the numerics so that plugins can describe the estimator without
importing SciPy (every CLI start loads every plugin)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .errors import KmsrInputError
from .validate import check_choice, check_int

ASSIGN_MODES = ("sequential", "all")  # kmsr_ops.dark_channel.assign_dark_pixels modes


@dataclass(frozen=True)
class DarkChannelParams:
    """Every knob of the estimator; the defaults are those of the reference code (KMSR's run)."""

    kernel_size: int = 25
    lambda_dark: float = 4e-3
    lambda_grad: float = 4e-3
    gamma: float = 2.0  # kernel L2 weight
    iterations: int = 5  # alternations per pyramid level
    window: int = 35  # dark-channel window
    kappa: float = 2.0  # growth of β (gradient split) in the inner loop
    beta_max: float = 1e5
    kappa_dark: float = 2.0  # growth of β_u (dark-channel split) in the outer loop
    beta_dark_max: float = 8.0
    lambda_decay: float = 1.1
    lambda_min: float = 1e-4
    threshold_decay: float = 1.1
    cg_iterations: int = 20
    cg_tol: float = 1e-5
    kernel_threshold: float = 0.05  # relative, after each kernel solve
    component_mass: float = 0.1  # 8-connected components lighter than this are dropped
    final_threshold: float = 0.05  # relative, at the end (the reference's max/20)
    pyramid_ratio: float = math.sqrt(0.5)
    coarsest_kernel: int = 5  # the 5 of levels = floor(log(5/K)/log(ratio)) + 1
    dark_assign: str = "sequential"  # "sequential" (reference loop) or "all"
    warm_start: bool = False  # start each latent update from the previous one (reference: no)
    gamma_correct: float = 1.0

    def validate(self) -> DarkChannelParams:
        def positive(name, minimum=0.0, strict=True):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (
                v <= minimum if strict else v < minimum
            ):
                op = ">" if strict else ">="
                raise KmsrInputError(f"{name}: expected a number {op} {minimum}, found {v!r}")

        if not isinstance(self.kernel_size, (int, np.integer)) or self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise KmsrInputError(f"kernel_size: expected an odd integer >= 3, found {self.kernel_size!r}")
        for name in ("lambda_dark", "lambda_grad", "gamma", "cg_tol", "kernel_threshold", "component_mass",
                     "final_threshold", "lambda_min"):
            positive(name, strict=False)
        for name in ("beta_max", "beta_dark_max", "gamma_correct"):
            positive(name)
        for name in ("kappa", "kappa_dark", "lambda_decay", "threshold_decay"):
            positive(name, 1.0, strict=name in ("kappa", "kappa_dark"))
        for name in ("iterations", "cg_iterations"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise KmsrInputError(f"{name}: expected an integer >= 1, found {v!r}")
        if not 0 < self.pyramid_ratio < 1:
            raise KmsrInputError(f"pyramid_ratio: expected a number in (0, 1), found {self.pyramid_ratio!r}")
        check_int("window", self.window, odd=True)
        check_choice("dark_assign", self.dark_assign, ASSIGN_MODES)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: Named schedules. "reference" is the reference code's. "fast" runs the same algorithm with
#: coarser continuation: β ×4 per inner round and β_u ×8 per outer round (about 12 x 3 solves
#: per latent update instead of 24 x 9); on the Levin benchmark it is as accurate or better
#: (benchmarks/estimate_levin.py; figures in benchmarks/results/estimate.md).
SCHEDULES: dict[str, dict] = {
    "reference": {},
    "fast": {"kappa": 4.0, "kappa_dark": 8.0},
}


def make_params(schedule: str = "reference", **overrides) -> DarkChannelParams:
    if schedule not in SCHEDULES:
        raise KmsrInputError(f"schedule: expected one of {', '.join(SCHEDULES)}, found {schedule!r}")
    fields = {f.name for f in dataclasses.fields(DarkChannelParams)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise KmsrInputError(f"unknown estimator parameter(s): {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    return DarkChannelParams(**{**SCHEDULES[schedule], **overrides}).validate()
