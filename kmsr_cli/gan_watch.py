"""Catching a kernel GAN that collapses during training, and keeping its best weights.

A WGAN's losses do not say whether its samples are any good, and the kernel GAN sometimes
drifts late in a run to kernels further from its training set than a Gaussian guess
(benchmarks/gan_quality.py). :class:`CollapseWatch` scores the generator at regular
iterations by the MMD between a fixed draw of its kernels and the training kernels (one
bandwidth for the whole run, the median heuristic on the training kernels), keeps a copy of
the weights (batch-norm statistics included) that scored best, and at the end of the run
puts them back when the final weights score clearly worse: ``final > ratio * best``.

The score is against the training kernels, not held-out ones (a GAN on 100 kernels cannot
spare any): it cannot see over-fitting, only samples that wander away from the data, which is
what a collapse is. Its cost is one draw of at most 256 kernels and one 256 x 256 kernel
matrix per check, well under one training iteration's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kmsr_ops.mmd import median_bandwidth, mmd

# Final weights this much worse than the best ones count as a collapse.
COLLAPSE_RATIO = 1.5
# Checks per run when the caller does not choose, and the shortest run watched by default.
DEFAULT_CHECKS = 20
MIN_WATCHED_ITERS = 200
MAX_REFERENCE = 256


@dataclass
class CollapseWatch:
    """Scores at checkpoints; remembers the best weights in memory."""

    train_kernels: np.ndarray
    seed: int = 0
    ratio: float = COLLAPSE_RATIO
    history: list[dict] = field(default_factory=list)
    best_iteration: int | None = None
    best_mmd: float = float("inf")
    _best_state: dict | None = None

    def __post_init__(self) -> None:
        k = np.asarray(self.train_kernels, dtype=np.float64)
        if len(k) > MAX_REFERENCE:  # a fixed subset: the score's noise stays the same all run
            k = k[np.random.default_rng(self.seed).choice(len(k), MAX_REFERENCE, replace=False)]
        self.reference = k
        self.bandwidth = median_bandwidth(k)

    def score(self, gan) -> float:
        """MMD between a fixed draw of the generator's kernels and the reference kernels."""
        drawn = gan.draw(len(self.reference), rng=np.random.default_rng(self.seed + 7919))
        return mmd(drawn, self.reference, bandwidth=self.bandwidth)

    def observe(self, iteration: int, gan) -> float:
        value = self.score(gan)
        self.history.append({"iteration": int(iteration), "mmd": round(value, 6)})
        if value < self.best_mmd:
            self.best_mmd, self.best_iteration = value, int(iteration)
            self._best_state = {k: v.detach().clone() for k, v in gan.generator.state_dict().items()}
        return value

    def finish(self, iteration: int, gan) -> dict:
        """Score the final weights; put the best ones back if the final ones collapsed.

        Returns the JSON-friendly record of the watch (``restored`` says whether weights were
        put back, ``final_mmd`` is the score of the weights that are kept).
        """
        if not self.history or self.history[-1]["iteration"] != iteration:
            self.observe(iteration, gan)
        last = self.history[-1]["mmd"]
        restored = self._best_state is not None and last > self.ratio * self.best_mmd
        if restored:
            gan.generator.load_state_dict(self._best_state)
        return {"checks": len(self.history), "ratio": self.ratio, "bandwidth": round(self.bandwidth, 6),
                "best_iteration": self.best_iteration, "best_mmd": round(self.best_mmd, 6),
                "last_mmd": last, "restored": bool(restored),
                "kept_iteration": self.best_iteration if restored else int(iteration),
                "history": self.history}
