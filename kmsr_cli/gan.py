"""Kernel-GAN pipeline: train a trainable generator backend on kernel sets, save and resume
checkpoints, and sample kernel sets from a checkpoint.

The networks come from the generator plugin (``wgan-gp`` by default) through the plugin host;
this module holds the training loop, which is architecture-agnostic: it needs an object with
``generator`` and ``critic`` modules, ``latent_dim``, ``kernel_size``, ``critic_input_scale``,
``architecture()``, ``state_tensors()``, ``load_state_tensors()`` and ``draw()``.

Losses (the paper's stage 2, kernel modelling):

- ``gp`` (default, the paper): WGAN-GP, critic loss ``D(fake) - D(real) + lambda * GP`` with
  ``GP = mean((||grad D(x_hat)|| - 1)^2)`` at random interpolates, lambda = 10, Adam 1e-4,
  betas (0.5, 0.999) (the GP variant of the release);
- ``clip``: the original WGAN as the release trains it: RMSprop 5e-5, critic weights clipped
  to [-0.01, 0.01] after each critic step.

Both use ``critic_steps`` (5) critic updates per generator update; an iteration is one
generator update. The Wasserstein estimate reported is ``mean D(real) - mean D(fake)``.

Files: ``OUT.safetensors`` (both networks, metadata: architecture, kernel size, loss, iteration,
training-set fingerprint, kmsr version) and ``OUT.state.pt`` beside it (optimisers, RNG state,
iteration; plain tensors and numbers, read with ``torch.load(weights_only=True)``). Both are
replaced atomically; ``--resume`` checks that they belong together. With ``--ema`` the generator
in ``OUT.safetensors`` is the moving average of its weights (what sampling and the collapse watch
use) and ``OUT.state.pt`` also holds the live generator and the average, from which a run resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from kmsr_ops.errors import KmsrError, KmsrInputError

from . import __version__
from .atomic import replace_atomically
from .kernelset import KernelSet, Provenance, write_kernel_set
from .plugin_host import PluginHost
from .progress import ProgressSink, emit, fan_out, on_stage

LOSSES = ("gp", "clip")
LR_DECAYS = ("none", "linear")
DEFAULT_LR = {"gp": 1e-4, "clip": 5e-5}
ADAM_BETAS = (0.5, 0.999)
STATE_FORMAT = "kmsr-gan-state"
# Batch-norm statistics of the averaged generator: this many batches of z from this seed.
STANDING_BATCHES = 16
STANDING_SEED = 20190802


# --------------------------------------------------------------------------- settings and data


@dataclass
class TrainSettings:
    """What defines a training run; saved with the state, and must match on ``--resume``."""

    loss: str = "gp"
    batch: int = 32
    critic_steps: int = 5
    lr: float | None = None  # None: 1e-4 for gp, 5e-5 for clip
    gp_lambda: float = 10.0
    clip_value: float = 0.01
    augment: bool = False
    width_mult: float = 1.0
    output: str = "relu"
    seed: int = 0
    generator: str = "wgan-gp"
    # "linear": both learning rates fall linearly from lr to 0 over the run's --iters (as in the
    # WGAN-GP paper's code). Not the default: it did not make every seed of
    # benchmarks/gan_quality.py meet its target (benchmarks/results/gan_quality.md, session 7).
    lr_decay: str = "none"
    # > 0: the saved generator is an exponential moving average of the trained one's weights
    # (decay min(ema, (1 + t) / (10 + t)) at update t), with batch-norm statistics recomputed for
    # the averaged weights; the critic trains against the live generator. 0: the live weights.
    # The default since session 8: with it every seed of benchmarks/gan_quality.py met its target
    # (benchmarks/results/gan_quality.md).
    ema: float = 0.999

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise KmsrInputError(f"loss: expected one of {', '.join(LOSSES)}, found {self.loss!r}")
        if self.lr_decay not in LR_DECAYS:
            raise KmsrInputError(f"lr_decay: expected one of {', '.join(LR_DECAYS)}, found {self.lr_decay!r}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.loss]
        try:
            ema = float(self.ema)
        except (TypeError, ValueError):
            ema = float("nan")
        if isinstance(self.ema, bool) or not (np.isfinite(ema) and 0.0 <= ema < 1.0):
            raise KmsrInputError(f"ema: expected a decay in [0, 1) (0: off), found {self.ema!r}")
        self.ema = ema
        for name in ("batch", "critic_steps"):
            if int(getattr(self, name)) < 1:
                raise KmsrInputError(f"{name}: expected an integer >= 1, found {getattr(self, name)}")
        for name in ("lr", "gp_lambda", "clip_value"):
            v = float(getattr(self, name))
            if not np.isfinite(v) or v <= 0:
                raise KmsrInputError(f"{name}: expected a positive number, found {getattr(self, name)}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainSettings:
        raw = json.loads(text)
        raw.setdefault("ema", 0.0)  # runs saved before --ema existed trained without an average
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class TrainingData:
    kernels: np.ndarray  # (N, K, K) float32
    scale: int
    sha256: str
    paths: list[str]


def kernels_fingerprint(kernels: np.ndarray) -> str:
    """sha256 of the kernels as float32 in their order, with the shape (the training-set id)."""
    a = np.ascontiguousarray(kernels, dtype=np.float32)
    h = hashlib.sha256(json.dumps(list(a.shape)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def load_training_kernels(paths: Sequence[str | os.PathLike], *, kernel_size: int) -> TrainingData:
    """Read and check the training sets: same scale, the architecture's kernel size, valid kernels."""
    if not paths:
        raise KmsrError("give at least one kernel set to train on")
    stacks, scale, first = [], None, None
    for p in paths:
        with KernelSet(p) as ks:
            if ks.kernel_size != kernel_size:
                raise KmsrError(
                    f"{p}: holds {ks.kernel_size}x{ks.kernel_size} kernels; the generator makes {kernel_size}x{kernel_size} "
                    f"kernels (fixed by its architecture)",
                    hint=f"bring them to {kernel_size}x{kernel_size} with `kmsr pool merge SET_{kernel_size}.h5 {p} --resample -o OUT.h5`",
                )
            if scale is None:
                scale, first = ks.scale, p
            elif ks.scale != scale:
                raise KmsrError(f"{p}: scale x{ks.scale} differs from {first} (x{scale}); train one GAN per scale")
            stacks.append(ks.kernels())
    kernels = np.concatenate(stacks).astype(np.float32)
    return TrainingData(kernels, int(scale), kernels_fingerprint(kernels), [str(p) for p in paths])


def state_path_for(out: str | os.PathLike) -> Path:
    """``GAN.safetensors`` → ``GAN.state.pt`` (training state beside the weights)."""
    out = Path(out)
    return out.with_name(out.stem + ".state.pt")


# --------------------------------------------------------------------------- losses


def gradient_penalty(critic, real, fake, eps):
    """WGAN-GP penalty ``mean((||grad_x D(x_hat)||_2 - 1)^2)``, ``x_hat = eps real + (1 - eps) fake``.

    ``eps`` broadcasts against the batch (B, 1, 1, 1). The graph is kept so the penalty trains
    the critic (double backward).
    """
    import torch

    x_hat = (eps * real + (1.0 - eps) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def augment_batch(x, gen):
    """Random flips and transposes (the 8 symmetries of the square), one draw per kernel."""
    import torch

    b = x.shape[0]
    bits = torch.randint(0, 2, (3, b, 1, 1, 1), generator=gen, device=x.device).bool()
    x = torch.where(bits[0], x.flip(-1), x)
    x = torch.where(bits[1], x.flip(-2), x)
    return torch.where(bits[2], x.transpose(-1, -2), x)


# --------------------------------------------------------------------------- files


def save_weights(gan, path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    meta = {**gan.architecture(), **{k: str(v) for k, v in metadata.items()}}
    replace_atomically(path, lambda tmp: save_file(gan.state_tensors(), tmp, metadata=meta))


def _cloned_state(module) -> dict:
    """A copy of a module's state dict (weights and buffers), detached from the graph."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _rng_state_tensor(gen):
    return gen.get_state().clone()


# --------------------------------------------------------------------------- training


@dataclass
class IterationStats:
    iteration: int
    critic_loss: float
    wasserstein: float
    generator_loss: float
    penalty: float


class GanTrainer:
    """One training run: networks, optimisers, data on the device and the run's RNG."""

    def __init__(self, gan, data: TrainingData, settings: TrainSettings, device: str, *, total_iters: int | None = None):
        import torch

        self.torch = torch
        self.gan = gan
        self.settings = settings
        self.device = torch.device(device)
        self.data = torch.from_numpy(data.kernels).to(self.device).unsqueeze(1)
        self.scale = float(gan.critic_input_scale)
        G, D = gan.generator, gan.critic
        G.train()
        D.train()
        if settings.loss == "gp":
            self.opt_g = torch.optim.Adam(G.parameters(), lr=settings.lr, betas=ADAM_BETAS)
            self.opt_d = torch.optim.Adam(D.parameters(), lr=settings.lr, betas=ADAM_BETAS)
        else:
            self.opt_g = torch.optim.RMSprop(G.parameters(), lr=settings.lr)
            self.opt_d = torch.optim.RMSprop(D.parameters(), lr=settings.lr)
        # Every random draw of the loop (batches, z, interpolation weights, flips) comes from
        # this generator, whose state is saved: a resumed run continues the same stream.
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(settings.seed))
        self.iteration = 0
        self.total_iters = total_iters  # the length the "linear" decay spans
        # --ema: the averaged generator parameters, and the live generator's state while the
        # averaged weights are in the module (inside averaged_generator()).
        self.ema = {n: p.detach().clone() for n, p in G.named_parameters()} if settings.ema > 0 else None
        self._live: dict | None = None

    def learning_rate(self) -> float:
        """The learning rate of the next iteration under the run's decay."""
        s = self.settings
        if s.lr_decay == "linear" and self.total_iters:
            return float(s.lr) * max(0.0, 1.0 - self.iteration / self.total_iters)
        return float(s.lr)

    def _z(self, b: int):
        return self.torch.randn(b, self.gan.latent_dim, generator=self.gen, device=self.device)

    def critic_step(self) -> tuple[float, float, float]:
        torch, s, D, G = self.torch, self.settings, self.gan.critic, self.gan.generator
        idx = torch.randint(0, self.data.shape[0], (s.batch,), generator=self.gen, device=self.device)
        real = self.data[idx]
        if s.augment:
            real = augment_batch(real, self.gen)
        with torch.no_grad():
            fake = G(self._z(s.batch))
        real, fake = real * self.scale, fake * self.scale
        w = D(real).mean() - D(fake).mean()
        loss = -w
        penalty = torch.zeros((), device=self.device)
        if s.loss == "gp":
            eps = torch.rand(s.batch, 1, 1, 1, generator=self.gen, device=self.device)
            penalty = gradient_penalty(D, real, fake, eps)
            loss = loss + s.gp_lambda * penalty
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        if s.loss == "clip":
            with torch.no_grad():
                for p in D.parameters():
                    p.clamp_(-s.clip_value, s.clip_value)
        return float(loss.detach()), float(w.detach()), float(penalty.detach())

    def generator_step(self) -> float:
        D, G = self.gan.critic, self.gan.generator
        for p in D.parameters():
            p.requires_grad_(False)
        try:
            loss = -D(G(self._z(self.settings.batch)) * self.scale).mean()
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
        finally:
            for p in D.parameters():
                p.requires_grad_(True)
        if self.ema is not None:
            self._update_average()
        return float(loss.detach())

    # ---------------------------------------------------------------- weight averaging (--ema)
    def _update_average(self) -> None:
        """One step of the moving average; the decay ramps up from 0.1 so that the random initial
        weights do not linger (the ``num_updates`` rule of TensorFlow's ExponentialMovingAverage)."""
        t = self.iteration
        decay = min(float(self.settings.ema), (1.0 + t) / (10.0 + t))
        with self.torch.no_grad():
            for n, p in self.gan.generator.named_parameters():
                self.ema[n].lerp_(p.detach(), 1.0 - decay)

    def _standing_statistics(self) -> None:
        """Batch-norm running statistics recomputed for the weights now in the generator: the
        average over STANDING_BATCHES training-size batches of z from a fixed seed, so they are the
        same on every call and the training stream is not touched."""
        torch, G = self.torch, self.gan.generator
        norms = [m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        g = torch.Generator(device=self.device)
        g.manual_seed(STANDING_SEED)
        was_training = G.training
        try:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the batches below
            G.train()
            with torch.no_grad():
                for _ in range(STANDING_BATCHES):
                    G(torch.randn(self.settings.batch, self.gan.latent_dim, generator=g, device=self.device))
        finally:
            for m, mom in zip(norms, momenta):
                m.momentum = mom
            G.train(was_training)

    @contextmanager
    def averaged_generator(self) -> Iterator[None]:
        """Inside, the generator holds the averaged weights (with their batch-norm statistics);
        on leaving, the live weights are back. Without --ema, or when already inside, it does nothing."""
        if self.ema is None or self._live is not None:
            yield
            return
        G = self.gan.generator
        self._live = _cloned_state(G)
        try:
            with self.torch.no_grad():
                for n, p in G.named_parameters():
                    p.copy_(self.ema[n])
            self._standing_statistics()
            yield
        finally:
            G.load_state_dict(self._live)
            self._live = None

    def adopt_averaged(self) -> None:
        """Inside averaged_generator(): make the weights now in the generator (the average, or the
        collapse watch's restored best) the live weights and the average both, so a later --resume
        continues from them, as it does without --ema."""
        if self.ema is None or self._live is None:
            return
        G = self.gan.generator
        self._live = _cloned_state(G)
        self.ema = {n: p.detach().clone() for n, p in G.named_parameters()}

    def step(self) -> IterationStats:
        lr = self.learning_rate()
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        for _ in range(self.settings.critic_steps):
            c_loss, w, penalty = self.critic_step()
        g_loss = self.generator_step()
        self.iteration += 1
        return IterationStats(self.iteration, c_loss, w, g_loss, penalty)

    # ---------------------------------------------------------------- state
    def state(self, data: TrainingData) -> dict:
        return {
            "format": STATE_FORMAT,
            "iteration": self.iteration,
            "optimizer_generator": self.opt_g.state_dict(),
            "optimizer_critic": self.opt_d.state_dict(),
            "rng_state": _rng_state_tensor(self.gen),
            "rng_device": self.device.type,
            "settings": self.settings.to_json(),
            "training_set_sha256": data.sha256,
            # with --ema the weights file holds the averaged generator; the live one is kept here
            **({"generator_live": self._live if self._live is not None else
                _cloned_state(self.gan.generator),
                "generator_average": {k: v.detach().clone() for k, v in self.ema.items()}}
               if self.ema is not None else {}),
        }

    def load_state(self, state: dict, *, source: Path) -> str | None:
        """Restore optimisers, RNG and iteration (and with --ema the live generator and its
        average); returns a warning when the RNG cannot be restored."""
        self.opt_g.load_state_dict(state["optimizer_generator"])
        self.opt_d.load_state_dict(state["optimizer_critic"])
        self.iteration = int(state["iteration"])
        if self.ema is not None:
            if not isinstance(state.get("generator_live"), dict) or not isinstance(state.get("generator_average"), dict):
                raise KmsrError(f"{source}: the run averages its generator (--ema) but the state holds no live weights "
                                "or no average", hint="start a new run without --resume")
            try:
                self.gan.generator.load_state_dict(state["generator_live"])
                for n, p in self.gan.generator.named_parameters():
                    self.ema[n] = state["generator_average"][n].to(device=self.device, dtype=p.dtype).clone()
            except (KeyError, RuntimeError) as exc:
                raise KmsrError(f"{source}: the saved live or averaged generator does not fit the network ({exc})",
                                hint="start a new run without --resume") from None
        if state.get("rng_device") == self.device.type:
            self.gen.set_state(state["rng_state"])
            return None
        self.gen.manual_seed(int(self.settings.seed) * 1_000_003 + self.iteration)
        return (
            f"{source}: the random stream was saved on {state.get('rng_device')} and cannot continue on "
            f"{self.device.type}; reseeded, so the run is not bit-identical to an uninterrupted one"
        )


def save_training(trainer: GanTrainer, data: TrainingData, out: Path, *, kmsr_meta: dict) -> None:
    """State first, then weights: both carry the iteration, so resume detects a torn pair."""
    import torch

    state = trainer.state(data)
    replace_atomically(state_path_for(out), lambda tmp: torch.save(state, tmp))
    meta = {
        "loss": trainer.settings.loss,
        "iteration": str(trainer.iteration),
        "training_set_sha256": data.sha256,
        "training_kernels": str(len(data.kernels)),
        "scale": str(data.scale),
        "kmsr_version": __version__,
        "settings": trainer.settings.to_json(),
        **kmsr_meta,
    }
    if trainer.ema is not None:
        meta["averaged_weights"] = "ema"
    with trainer.averaged_generator():
        save_weights(trainer.gan, out, meta)


def _load_state_file(path: Path) -> dict:
    from .checkpoint import load_training_state

    if not path.is_file():
        raise KmsrError(f"{path}: training state not found; --resume needs the .state.pt written beside the checkpoint",
                       hint="start a new run without --resume")
    state = load_training_state(path, hint="start a new run without --resume")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise KmsrError(f"{path}: not a kmsr GAN training state (format {state.get('format') if isinstance(state, dict) else None!r})")
    return state


def _merge_resume_settings(saved: TrainSettings, asked: dict, source: Path) -> TrainSettings:
    """Explicit options must agree with the saved run; unspecified ones come from it."""
    conflicts = []
    for key, value in asked.items():
        if value is None:
            continue
        have = getattr(saved, key)
        if (isinstance(have, float) and not np.isclose(float(value), have, rtol=1e-12, atol=0)) or (
            not isinstance(have, float) and value != have
        ):
            conflicts.append(f"--{key.replace('_', '-')} {value} (the run used {have})")
    if conflicts:
        raise KmsrError(f"{source}: --resume continues the saved run, but " + "; ".join(conflicts),
                       hint="drop those options, or start a new run without --resume")
    return saved


def _gan_progress(progress: ProgressSink | None, on_iteration: Callable[[IterationStats], None] | None,
                  log: Callable[[str], None] | None) -> ProgressSink | None:
    """``progress`` plus train_gan's older ``on_iteration`` / ``log`` callbacks, as one sink."""
    return fan_out(progress, on_stage("gan.iteration", on_iteration and (lambda e: on_iteration(e.data))),
                   on_stage("gan.log", log and (lambda e: log(e.message))))


def train_gan(
    host: PluginHost,
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    iters: int,
    settings: dict,
    device: str = "cpu",
    resume: bool = False,
    checkpoint_every: int = 0,
    sample_every: int = 0,
    samples_png: str | os.PathLike | None = None,
    progress: ProgressSink | None = None,
    on_iteration: Callable[[IterationStats], None] | None = None,
    log: Callable[[str], None] | None = None,
    history_every: int | None = None,
    watch_every: int | None = None,
) -> dict:
    """Train (or continue) a kernel GAN; returns a JSON-friendly summary of the run.

    ``settings`` holds :class:`TrainSettings` fields; ``None`` values mean the default (or, with
    ``resume``, the saved run's value). ``iters`` is the total number of generator iterations.
    ``watch_every``: score the generator every so many iterations and keep its best weights if
    the final ones collapsed (:mod:`kmsr_cli.gan_watch`); default ``iters // 20`` for runs of at
    least 200 iterations (shorter ones are not watched), 0 turns it off.
    ``progress`` gets a ``gan.iteration`` event after each generator iteration (``done`` of
    ``total``; ``data``: the :class:`IterationStats`) and ``gan.log`` events (``message``: a line
    for the log); ``on_iteration(stats)`` and ``log(message)`` are the older form of those events.
    """
    out = Path(out)
    sink = _gan_progress(progress, on_iteration, log)

    def log(msg: str) -> None:
        emit(sink, "gan.log", message=msg)

    def on_iteration(st: IterationStats) -> None:
        emit(sink, "gan.iteration", done=st.iteration, total=iters, data=st)

    backend = _trainable_backend(host, settings, iters, sample_every, samples_png)
    gan, train_settings, state = _open_gan(backend, out, settings, device, resume)
    data = _training_data(paths, gan, state, out, train_settings, log)
    trainer = GanTrainer(gan, data, train_settings, device, total_iters=iters)
    start = _resume_trainer(trainer, state, out, log)
    kmsr_meta = {"training_sets": json.dumps(data.paths)}
    watch, watch_every = _collapse_watch(iters, watch_every, data, train_settings, trainer, start)
    plan = _LoopPlan(iters=iters, checkpoint_every=checkpoint_every, sample_every=sample_every,
                     samples_png=samples_png, watch_every=watch_every,
                     history_every=history_every or max(1, iters // 100),
                     preview_seed=int(train_settings.seed) + 1, on_iteration=on_iteration, log=log)
    t0 = time.perf_counter()
    last, history, checkpoints = _train_loop(trainer, data, out, plan, watch, kmsr_meta, start)
    seconds = time.perf_counter() - t0
    with trainer.averaged_generator():  # the watch's verdict and the saved weights are the average's
        watched = _finish_watch(watch, trainer, kmsr_meta, log)
        if trainer.iteration > start or not out.exists() or (watched and watched["restored"]):
            save_training(trainer, data, out, kmsr_meta=kmsr_meta)
            checkpoints += 1
    check = _sample_check(host, out, data, train_settings, trainer, backend.name, log)
    done = trainer.iteration - start
    return {
        "sample_check": check,
        "collapse_watch": watched,
        "path": str(out),
        "state": str(state_path_for(out)),
        "iterations": trainer.iteration,
        "start_iteration": start,
        "generator": backend.name,
        "settings": json.loads(train_settings.to_json()),
        "device": str(trainer.device),
        "training_sets": data.paths,
        "training_kernels": int(len(data.kernels)),
        "training_set_sha256": data.sha256,
        "scale": data.scale,
        "seconds": round(seconds, 3),
        "iterations_per_second": round(done / seconds, 3) if seconds > 0 and done else None,
        "critic_loss": last.critic_loss if last else None,
        "wasserstein": last.wasserstein if last else None,
        "checkpoints_written": checkpoints,
        "history": history,
    }


def _trainable_backend(host: PluginHost, settings: dict, iters: int, sample_every: int, samples_png):
    """The generator backend to train, after the checks of train_gan's own arguments."""
    if iters < 1:
        raise KmsrInputError(f"iters: expected at least 1, found {iters}")
    if samples_png is not None and sample_every < 1:
        raise KmsrError("--samples-png needs --sample-every N (write the grid every N iterations)")
    if sample_every > 0 and samples_png is None:
        raise KmsrError("--sample-every needs --samples-png PATH (where to write the kernel grid)")
    backend = host.get("generators", settings.get("generator") or "wgan-gp")
    if not backend.info.get("trainable"):
        raise KmsrError(f"generator {backend.name!r} (plugin {backend.plugin!r}) is not trainable")
    return backend


def _open_gan(backend, out: Path, settings: dict, device: str, resume: bool) -> tuple[object, TrainSettings, dict | None]:
    """The networks, the run's settings and (with ``resume``) the saved training state."""
    import torch

    if not resume:
        train_settings = TrainSettings(**{k: v for k, v in settings.items() if v is not None})
        # Initial weights from the run's seed, without disturbing the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(train_settings.seed))
            gan = backend.create(device=device, width_mult=train_settings.width_mult, output=train_settings.output)
        return gan, train_settings, None
    if not out.is_file():
        raise KmsrError(f"{out}: no checkpoint to resume", hint="start a new run without --resume")
    gan = backend.create(checkpoint=out, device=device)
    meta = gan.metadata
    state = _load_state_file(state_path_for(out))
    saved = TrainSettings.from_json(state["settings"])
    train_settings = _merge_resume_settings(saved, settings, out)
    if str(state["iteration"]) != meta.get("iteration"):
        raise KmsrError(
            f"{out}: weights are at iteration {meta.get('iteration')} but {state_path_for(out)} is at "
            f"{state['iteration']}; they do not belong together"
        )
    return gan, train_settings, state


def _training_data(paths, gan, state: dict | None, out: Path, train_settings: TrainSettings,
                   log: Callable[[str], None]) -> TrainingData:
    """The training kernels, checked against a resumed run's fingerprint."""
    data = load_training_kernels(paths, kernel_size=int(gan.kernel_size))
    if state is not None and state["training_set_sha256"] != data.sha256:
        raise KmsrError(
            f"{out}: was trained on another kernel set (fingerprint {state['training_set_sha256'][:12]}…, "
            f"these files give {data.sha256[:12]}…)",
            hint="resume with the same KERNELS.h5 files in the same order, or start a new run",
        )
    if len(data.kernels) < train_settings.batch:
        log(f"warning: {len(data.kernels)} training kernels, fewer than the batch size {train_settings.batch}; batches repeat kernels")
    return data


def _resume_trainer(trainer: GanTrainer, state: dict | None, out: Path, log: Callable[[str], None]) -> int:
    """Restore a saved state into ``trainer``; returns the iteration the run starts at."""
    if state is None:
        return 0
    warning = trainer.load_state(state, source=state_path_for(out))
    if warning:
        log(f"warning: {warning}")
    log(f"resuming {out} at iteration {trainer.iteration}")
    return trainer.iteration


def _collapse_watch(iters: int, watch_every: int | None, data: TrainingData, train_settings: TrainSettings,
                    trainer: GanTrainer, start: int):
    """The run's CollapseWatch (None when off) and how often it scores the generator."""
    from .gan_watch import DEFAULT_CHECKS, MIN_WATCHED_ITERS, CollapseWatch

    if watch_every is None:  # short runs (tests, smoke runs) are not watched unless asked
        watch_every = iters // DEFAULT_CHECKS if iters >= MIN_WATCHED_ITERS else 0
    if watch_every < 0:
        raise KmsrInputError(f"watch_every: expected 0 (off) or a positive number, found {watch_every}")
    watch = CollapseWatch(data.kernels, seed=int(train_settings.seed)) if watch_every else None
    if watch is not None and start:
        with trainer.averaged_generator():
            watch.observe(start, trainer.gan)  # the weights resumed from are a candidate too
    return watch, watch_every


@dataclass
class _LoopPlan:
    """What train_gan's loop does besides stepping, and how often."""

    iters: int
    checkpoint_every: int
    sample_every: int
    samples_png: str | os.PathLike | None
    watch_every: int
    history_every: int
    preview_seed: int
    on_iteration: Callable[[IterationStats], None] | None
    log: Callable[[str], None]


def _train_loop(trainer: GanTrainer, data: TrainingData, out: Path, plan: _LoopPlan, watch, kmsr_meta: dict,
                start: int) -> tuple[IterationStats | None, list[dict], int]:
    """Step up to ``plan.iters``: (last stats, history, checkpoints written). An interrupted run
    saves what it reached before the KeyboardInterrupt goes on."""
    history: list[dict] = []
    checkpoints = 0
    last: IterationStats | None = None
    try:
        while trainer.iteration < plan.iters:
            last = trainer.step()
            checkpoints += _after_step(last, trainer, data, out, plan, watch, kmsr_meta, history)
    except KeyboardInterrupt:
        if trainer.iteration > start:
            save_training(trainer, data, out, kmsr_meta=kmsr_meta)
            plan.log(f"interrupted: saved iteration {trainer.iteration} to {out}; continue with --resume")
        raise
    return last, history, checkpoints


def _after_step(last: IterationStats, trainer: GanTrainer, data: TrainingData, out: Path, plan: _LoopPlan,
                watch, kmsr_meta: dict, history: list[dict]) -> int:
    """Report, watch, record, save and preview after one iteration; returns 1 if it saved."""
    i, iters, gan = last.iteration, plan.iters, trainer.gan
    saved = 0
    if plan.on_iteration:
        plan.on_iteration(last)
    if watch is not None and i % plan.watch_every == 0 and i < iters:
        with trainer.averaged_generator():
            watch.observe(i, gan)
    if i % plan.history_every == 0 or i == iters:
        history.append({"iteration": i, "critic_loss": last.critic_loss, "wasserstein": last.wasserstein})
    if plan.checkpoint_every > 0 and i % plan.checkpoint_every == 0 and i < iters:
        save_training(trainer, data, out, kmsr_meta=kmsr_meta)
        saved = 1
        plan.log(f"iteration {i}/{iters}: critic loss {last.critic_loss:.4f}, Wasserstein estimate {last.wasserstein:.4f}; saved {out}")
    if plan.sample_every > 0 and i % plan.sample_every == 0:
        with trainer.averaged_generator():
            write_kernel_grid(plan.samples_png, gan.draw(64, rng=np.random.default_rng(plan.preview_seed)))
    return saved


def _finish_watch(watch, trainer: GanTrainer, kmsr_meta: dict, log: Callable[[str], None]) -> dict | None:
    """The watch's verdict; after a collapse the best weights are back in the generator and
    ``kmsr_meta`` records their iteration."""
    if watch is None:
        return None
    watched = watch.finish(trainer.iteration, trainer.gan)
    if watched["restored"]:
        trainer.adopt_averaged()  # with --ema, a resumed run continues from the restored weights too
        kmsr_meta["weights_from_iteration"] = str(watched["best_iteration"])
        log(f"warning: the generator collapsed: its kernels' MMD to the training kernels rose from "
            f"{watched['best_mmd']:.4f} at iteration {watched['best_iteration']} to {watched['last_mmd']:.4f} at "
            f"iteration {trainer.iteration}; kept the weights of iteration {watched['best_iteration']}")
    return watched


def _sample_check(host: PluginHost, out: Path, data: TrainingData, train_settings: TrainSettings,
                  trainer: GanTrainer, generator: str, log: Callable[[str], None]) -> dict:
    """Widths of kernels sampled from the saved checkpoint against the training kernels'."""
    from .pool import width_check

    sampled, _, _, _ = sample_from_checkpoint(host, out, len(data.kernels), seed=train_settings.seed,
                                              device=str(trainer.device), generator=generator)
    check = width_check(data.kernels, sampled)
    if not check["passed"]:
        log(f"warning: the generator's kernels do not look like its training kernels: {check['reason']}")
    return check


# --------------------------------------------------------------------------- previews and sampling


def kernel_grid(kernels: np.ndarray, *, cols: int = 8, zoom: int = 4, gap: int = 2) -> np.ndarray:
    """Tile kernels into one uint8 greyscale image, each scaled to its own maximum (Fig. 3 style)."""
    ks = np.asarray(kernels, dtype=np.float64)
    n, k, _ = ks.shape
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    cell = k * zoom
    img = np.full((rows * cell + (rows + 1) * gap, cols * cell + (cols + 1) * gap), 64, dtype=np.uint8)
    for i, kern in enumerate(ks):
        peak = kern.max()
        tile = np.clip(kern / peak, 0, 1) if peak > 0 else np.zeros_like(kern)
        tile = np.kron(tile, np.ones((zoom, zoom)))
        r, c = divmod(i, cols)
        y, x = gap + r * (cell + gap), gap + c * (cell + gap)
        img[y:y + cell, x:x + cell] = np.round(tile * 255).astype(np.uint8)
    return img


def write_kernel_grid(path: str | os.PathLike, kernels: np.ndarray) -> None:
    from kmsr_ops.image_io import write_png

    write_png(path, kernel_grid(kernels))


def sample_from_checkpoint(
    host: PluginHost,
    checkpoint: str | os.PathLike,
    n: int,
    *,
    seed: int,
    device: str = "cpu",
    generator: str = "wgan-gp",
    on_progress: Callable[[int], None] | None = None,
    chunk: int = 256,
) -> tuple[np.ndarray, Provenance, int, dict]:
    """``n`` kernels from a checkpoint, with per-kernel provenance; returns (kernels, provenance, scale, params)."""
    if n < 1:
        raise KmsrInputError(f"n: expected at least 1 kernel, found {n}")
    backend = host.get("generators", generator)
    try:
        gan = backend.create(checkpoint=Path(checkpoint), device=device)
    except KmsrInputError as exc:
        raise KmsrError(str(exc)) from None
    rng = np.random.default_rng(seed)
    size = int(gan.kernel_size)
    kernels = np.empty((n, size, size), dtype=np.float64)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        kernels[start:start + m] = gan.sample(m, size=size, rng=rng)
        if on_progress:
            on_progress(m)
    params = gan.params()
    prov = Provenance()
    for i in range(n):
        prov.append(origin="generated", source=str(checkpoint), method=backend.name, params=params, seed=seed, index=i)
    scale = gan.scale
    if scale is None:
        raise KmsrError(f"{checkpoint}: the checkpoint does not record the scale of its training kernels")
    return kernels, prov, scale, params


def sample_to_set(
    host: PluginHost,
    checkpoint: str | os.PathLike,
    n: int,
    out: str | os.PathLike,
    *,
    seed: int,
    device: str = "cpu",
    on_progress: Callable[[int], None] | None = None,
) -> tuple[Path, dict]:
    kernels, prov, scale, params = sample_from_checkpoint(host, checkpoint, n, seed=seed, device=device, on_progress=on_progress)
    path = write_kernel_set(
        out, kernels, prov, scale=scale,
        description=f"{n} kernels generated by {checkpoint} (iteration {params.get('iteration')}, seed {seed})",
        extra_attrs={"generator_params": json.dumps(params, sort_keys=True)},
    )
    return path, params
