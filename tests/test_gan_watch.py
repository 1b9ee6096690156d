"""The kernel GAN's collapse watch: scores by MMD, keeps the best weights, puts them back.

Oracles: kernels drawn from the training distribution against far wider ones (whose MMD to the
training set is known to be larger), and the generator's own tensors captured at the iteration
the watch should keep.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kmsr_cli.gan import train_gan
from kmsr_cli.gan_watch import CollapseWatch
from kmsr_cli.plugin_host import PluginHost
from kmsr_ops.kernels import gaussian_kernel


def gaussians(sigmas) -> np.ndarray:
    return np.stack([gaussian_kernel(25, float(s)) for s in sigmas])


class FakeGan:
    """A generator whose one parameter says what it draws: 1 = like the data, 0 = much wider."""

    def __init__(self):
        self.generator = torch.nn.Linear(1, 1, bias=False)
        self.set(1.0)

    def set(self, good: float) -> None:
        with torch.no_grad():
            self.generator.weight.fill_(good)

    def draw(self, n, *, rng):
        good = float(self.generator.weight.detach()) > 0.5
        return gaussians(rng.uniform(1.0, 2.0, n) if good else rng.uniform(4.0, 6.0, n))


@pytest.fixture
def data():
    return gaussians(np.random.default_rng(0).uniform(1.0, 2.0, 120))


def test_the_score_separates_like_from_unlike(data):
    watch, gan = CollapseWatch(data), FakeGan()
    like = watch.score(gan)
    gan.set(0.0)
    assert watch.score(gan) > 3 * like


def test_a_collapse_puts_the_best_weights_back(data):
    watch, gan = CollapseWatch(data), FakeGan()
    gan.set(0.0)
    watch.observe(10, gan)  # bad start
    gan.set(1.0)
    watch.observe(20, gan)  # the good weights
    gan.set(0.0)
    record = watch.finish(30, gan)  # collapsed at the end
    assert record["restored"] and record["best_iteration"] == 20 and record["kept_iteration"] == 20
    assert float(gan.generator.weight.detach()) == 1.0  # the iteration-20 weights are back
    assert [h["iteration"] for h in record["history"]] == [10, 20, 30]


def test_no_collapse_keeps_the_final_weights(data):
    watch, gan = CollapseWatch(data), FakeGan()
    gan.set(0.0)
    watch.observe(10, gan)
    gan.set(1.0)
    record = watch.finish(20, gan)
    assert not record["restored"] and record["kept_iteration"] == 20 and float(gan.generator.weight.detach()) == 1.0


@pytest.fixture(scope="module")
def host():
    h = PluginHost()
    h.load_entry_points()
    h.check()
    h.collect()
    return h


def test_train_gan_saves_the_kept_weights(host, tmp_path, write_set, monkeypatch):
    """A run whose scores fall then rise: the saved checkpoint holds the best iteration's generator."""
    path = write_set(tmp_path / "k.h5", gaussians(np.random.default_rng(1).uniform(1.0, 2.0, 40)).astype(np.float32))
    scores = iter([0.5, 0.2, 0.9, 0.95])  # iterations 2, 4, 6 and the end (8)
    monkeypatch.setattr(CollapseWatch, "score", lambda self, gan: next(scores))
    captured = {}

    def on_iteration(st):
        if st.iteration == 4:
            captured.update({k: v.detach().clone() for k, v in gan_ref["gan"].generator.state_dict().items()})

    gan_ref = {}
    real_observe = CollapseWatch.observe

    def observe(self, iteration, gan):
        gan_ref["gan"] = gan
        return real_observe(self, iteration, gan)

    monkeypatch.setattr(CollapseWatch, "observe", observe)
    # iteration 4's weights are captured from the trainer's own generator, reached through the first check (2)
    summary = train_gan(host, [path], tmp_path / "g.safetensors", iters=8, settings={"width_mult": 1 / 32, "seed": 0, "ema": 0.0},
                        device="cpu", watch_every=2, on_iteration=on_iteration)
    w = summary["collapse_watch"]
    assert w["restored"] and w["best_iteration"] == 4 and [h["iteration"] for h in w["history"]] == [2, 4, 6, 8]
    saved = load_file(str(tmp_path / "g.safetensors"))
    for k, v in captured.items():
        if v.is_floating_point():
            torch.testing.assert_close(saved[f"generator.{k}"], v, rtol=0, atol=0, msg=k)
    assert summary["iterations"] == 8  # the run's counter is the real one; only the weights are older


def test_short_runs_are_not_watched_by_default(host, tmp_path, write_set):
    path = write_set(tmp_path / "k.h5", gaussians(np.random.default_rng(1).uniform(1.0, 2.0, 40)).astype(np.float32))
    summary = train_gan(host, [path], tmp_path / "g.safetensors", iters=3, settings={"width_mult": 1 / 32, "seed": 0, "ema": 0.0},
                        device="cpu")
    assert summary["collapse_watch"] is None
