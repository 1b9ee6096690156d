"""The kmsr plugin hooks and the contracts of what they register: the one place that says what a
plugin can provide and what kmsr does with it.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose names are the hook
names below. It is found through the ``kmsr`` entry-point group, exactly like the built-in
plugins under ``plugins/``::

    [project.entry-points.kmsr]
    my_plugin = "my_package.kmsr_plugin"

Each hook receives a ``register`` callback and calls it once per backend it provides::

    from kmsr_cli.hookspecs import hookimpl

    @hookimpl
    def kmsr_register_generators(register):
        register("box", BoxGenerator, description="uniform box kernels")

``register(name, factory, *, description="", available=None, **info)``:

- ``factory(**keywords)`` builds the backend. Which keywords kmsr passes, and what the factory
  must return, is the hook's contract: :data:`FACTORY_KEYWORDS` lists the keywords, and the
  ``typing.Protocol`` classes below (:class:`Estimator`, :class:`KernelGenerator`,
  :class:`TrainableGenerator`, :class:`Backbone`, :class:`Degradation`) the returned objects.
- ``available`` is an optional zero-argument callable returning ``True``/``False``, or a
  ``(ok, reason)`` pair, or an object with ``ok`` and ``reason``; ``kmsr plugins`` shows
  the reason when a backend cannot run here (e.g. no CUDA device).
- ``info`` is metadata shown by ``kmsr plugins --json`` (it must be JSON-friendly). The keys
  kmsr itself reads are listed per kind in :data:`INFO_KEYS` and in each hook's docstring; any
  other key is only shown.

``kmsr plugins --check NAME`` (or :func:`kmsr_cli.plugin_check.check_backend`) builds a backend
the way the pipeline does and runs it on tiny inputs against these contracts.
``docs/write-a-plugin.md`` walks through a complete plugin; ``docs/architecture.md`` says where
each contract is used. :data:`API_VERSION` (in ``kmsr plugins --json``) changes when a contract
changes in a way that breaks existing plugins.

This module is imported by every plugin, so it imports nothing heavy.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import pluggy

PROJECT_NAME = "kmsr"
ENTRY_POINT_GROUP = "kmsr"
#: The version of the contracts below. Raised when kmsr starts passing, requiring or reading
#: something an existing plugin would not handle; additions that old plugins satisfy keep it.
API_VERSION = 1

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def kmsr_register_estimators(register):
    """Register blur-kernel estimators (stage 1: kernels from photos; ``kmsr estimate``, ``kmsr adapt``).

    The factory is called as ``factory(kernel_size=K, **options)``: ``kernel_size`` always (the
    run's ``--kernel-size``, odd), ``device="cuda"`` (or ``"cuda:N"``) as well when the run is on
    a GPU (never ``device="cpu"``), and the user's ``--option KEY=VALUE`` pairs (JSON values). It
    is called once in the main process and again in every worker process or Dask worker, from
    the backend's name and these keywords, so they must be JSON-friendly.

    It returns an :class:`Estimator`: ``estimate(patch, kernel_size=K, rng=rng)`` with ``patch``
    a float32 (H, W) greyscale array in [0, 1] (H, W >= 128, cut from a bicubic-upscaled photo),
    ``rng`` a ``numpy.random.Generator`` seeded per patch, returning a (K, K) kernel. kmsr
    clips negative entries and divides by the sum; a kernel of another shape, non-finite or
    with sum <= 0 is recorded as a failed patch. The same patch and seed must give the same
    kernel (a resumed run redoes only missing patches). An estimator that cannot use a patch
    raises ``kmsr_ops.errors.KmsrInputError``: the patch is reported and the run goes on.
    Optional: ``estimate_batch(patches, kernel_size=K, rng=rng)`` for an (N, H, W) stack,
    returning (N, K, K), each what ``estimate`` gives for that patch (:class:`BatchEstimator`);
    ``params()``, a JSON-friendly dict recorded as each kernel's provenance (else the factory
    keywords are).

    ``info`` keys read by kmsr: ``options`` (the factory's keyword defaults).

    :param register: ``register(name, factory, *, description="", available=None, **info)``.
    """


@hookspec
def kmsr_register_generators(register):
    """Register kernel generators (synthetic families, or learnt ones such as a kernel GAN).

    ``kmsr pool synth --family NAME`` calls ``factory(**options)`` with the user's ``--option``
    pairs only, and the result is a :class:`KernelGenerator`:
    ``sample(n, size=K, rng=rng) -> (n, K, K)`` with ``rng`` a ``numpy.random.Generator``; the
    kernels must be finite, non-negative and sum to 1 (as ``kmsr_ops.kernels.validate_kernels``
    checks), and the same seed must give the same kernels. Optional ``params()``: a
    JSON-friendly dict recorded as the kernels' provenance.

    A generator registered with ``trainable=True`` is a :class:`TrainableGenerator` too
    (``kmsr gan train --generator NAME``): its factory is also called as
    ``factory(device=DEV, width_mult=W, output=O)`` for untrained networks (the values of
    ``--width-mult`` and ``--kernel-output``, defaults 1.0 and ``"relu"``) and as
    ``factory(checkpoint=PATH, device=DEV)`` for a checkpoint that training wrote.

    ``info`` keys read by kmsr: ``origin`` (the provenance origin of sampled kernels,
    ``"synthetic"`` or ``"generated"``, the default), ``trainable`` (see above), ``options``
    (the factory's keyword defaults).

    :param register: ``register(name, factory, *, description="", available=None, **info)``.
    """


@hookspec
def kmsr_register_backbones(register):
    """Register super-resolution backbones (stage 3 networks).

    ``info`` must say how the backbone is fed: ``input`` (``"upsampled"``, the bicubic-upscaled
    image, or ``"lr"``), ``channels`` (``"rgb"`` or ``"y"``) and ``scales`` (a list of ints);
    optional: ``receptive_field`` (input pixels one output pixel depends on; sets the tile margin
    of ``kmsr sr``), ``size_multiple`` (input sides must divide by it; default 1), ``options``
    (the factory's keyword defaults), ``published_weights`` (the factory loads published weights
    from ``weights=PATH``, so ``NAME:PATH`` works in ``--model`` and ``--init``), ``init_allowed``
    (False: those weights are for comparison only and never start a training run),
    ``weights_licence`` (why, shown when refusing), ``global_context`` (True when the network
    pools over its whole input, so tiled output is close to, not equal to, untiled output).
    The factory is called as ``factory(scale=S, **options)`` and returns a ``torch.nn.Module``
    mapping a float (N, C, H, W) tensor in [0, 1] to its output; the module needs no attributes:
    every command feeds it as the registration says (``kmsr_cli.models.backbone_convention``).

    Which ``options`` arrive: ``kmsr train`` passes the user's ``--option`` pairs; loading a
    checkpoint passes the options it recorded (the module's ``options`` attribute when it has
    one, else the declared defaults updated with the user's), so the two builds must have the
    same tensors; ``NAME:PATH`` passes ``weights=PATH`` alone. The module may carry ``scale``,
    ``options``, ``receptive_field``, ``size_multiple`` (integers refining the registration's
    for its own options), ``input_kind`` and ``channels`` (which must agree with the
    registration). See :class:`Backbone`.

    :param register: ``register(name, factory, *, description="", available=None, **info)``.
    """


@hookspec
def kmsr_register_degradations(register):
    """Register training degradations (how an HR batch becomes a network input).

    The factory is called as ``factory(scale=s, input=..., channels=..., **options)``, with the
    backbone's ``input`` (``"upsampled"`` or ``"lr"``) and ``channels`` (``"rgb"`` or ``"y"``),
    and returns a callable ``degrade(hr, generator) -> (x, y)``: ``hr`` is a (B, 3, H, W) float
    batch in [0, 1] on the training device, ``generator`` a ``torch.Generator`` (draw every random
    choice from it, so runs resume exactly), ``x`` the network input in the backbone's convention
    and ``y`` the target. HR patch sides must divide by its ``hr_multiple`` attribute (the scale
    when it has none). ``info`` keys read by ``kmsr train``: ``needs_kernels`` (the pool's kernels are
    passed as ``kernels=``, an (N, K, K) array) and ``options`` (defaults, listed by
    ``kmsr plugins --json``). ``kmsr_degradations.base.Degradation`` implements this protocol.

    The ``options`` are the user's ``--degradation-option`` pairs. ``x`` and ``y`` have ``hr``'s
    dtype and device; ``x`` is (B, C, H, W) for ``input="upsampled"`` and (B, C, H/s, W/s) for
    ``"lr"``, ``y`` (B, C, H, W), C 3 for ``"rgb"`` and 1 for ``"y"``. Optional ``info`` keys
    read by the conformance checker: ``inputs`` and ``channels``, the lists of conventions the
    degradation supports (default: all). See :class:`Degradation`.

    :param register: ``register(name, factory, *, description="", available=None, **info)``.
    """


HOOK_KINDS = {
    "estimators": "kmsr_register_estimators",
    "generators": "kmsr_register_generators",
    "backbones": "kmsr_register_backbones",
    "degradations": "kmsr_register_degradations",
}

#: Every ``info`` key kmsr reads, per kind, and what it means. A key the pipeline reads must be
#: here (a test scans ``kmsr_cli/`` for reads), and each is in its hook's docstring.
INFO_KEYS: dict[str, dict[str, str]] = {
    "estimators": {
        "options": "dict, the factory's keyword defaults (listed by kmsr plugins --json)",
    },
    "generators": {
        "origin": "'synthetic' or 'generated' (default): the provenance origin of sampled kernels",
        "trainable": "True: also a TrainableGenerator, trained by kmsr gan train --generator NAME",
        "options": "dict, the factory's keyword defaults",
    },
    "backbones": {
        "input": "required: 'upsampled' (the bicubic-upscaled image) or 'lr' (the LR image)",
        "channels": "required: 'rgb' (3 channels) or 'y' (1 channel, BT.601 studio-range Y)",
        "scales": "required: list of the supported scale factors",
        "receptive_field": "int >= 0, input pixels one output pixel depends on (0: unknown); the tile margin",
        "size_multiple": "int >= 1, network-input sides must be multiples of it (default 1)",
        "global_context": "bool, the network pools over its whole input: tiles are close, not exact",
        "options": "dict, the factory's keyword defaults; recorded in checkpoints when the module has none",
        "published_weights": "str, present when weights=PATH loads published weights (NAME:PATH specs)",
        "init_allowed": "bool, False: the published weights never start a training run",
        "weights_licence": "str, why init_allowed is False (shown when refusing)",
    },
    "degradations": {
        "needs_kernels": "bool, True: kmsr train passes the pool's kernels as kernels=, an (N, K, K) array",
        "options": "dict, the factory's keyword defaults (kernels= among them is kmsr's to fill)",
        "inputs": "list of the supported backbone inputs (default both); read by the checker",
        "channels": "list of the supported channel conventions (default both); read by the checker",
    },
}

#: The keywords kmsr passes to each kind's factory, and when.
FACTORY_KEYWORDS: dict[str, dict[str, str]] = {
    "estimators": {
        "kernel_size": "always: the run's --kernel-size (odd)",
        "device": "only when the run is on a GPU: 'cuda' or 'cuda:N'",
        "**options": "the user's --option KEY=VALUE pairs (JSON values)",
    },
    "generators": {
        "**options": "kmsr pool synth: the user's --option pairs only",
        "device": "trainable generators: always, with width_mult and output or with checkpoint",
        "width_mult": "trainable generators, untrained networks: --width-mult (default 1.0)",
        "output": "trainable generators, untrained networks: --kernel-output (default 'relu')",
        "checkpoint": "trainable generators: a checkpoint written by kmsr gan train",
    },
    "backbones": {
        "scale": "always: the scale factor (one of info['scales']); None only for NAME:PATH without --scale",
        "**options": "kmsr train: the user's --option pairs; loading a checkpoint: the options it recorded",
        "weights": "NAME:PATH specs (backbones declaring published_weights): the weights file, alone",
    },
    "degradations": {
        "scale": "always: the training scale",
        "input": "always: the backbone's info['input']",
        "channels": "always: the backbone's info['channels']",
        "kernels": "when info['needs_kernels']: the pool's kernels, an (N, K, K) float array",
        "**options": "the user's --degradation-option pairs",
    },
}


# --------------------------------------------------------------------------- what factories return
# Members not listed here are optional and said so in the docstrings; the conformance checker
# (kmsr_cli.plugin_check) exercises both.


@runtime_checkable
class Estimator(Protocol):
    """What an estimator factory returns (see :func:`kmsr_register_estimators`).

    Optional: ``estimate_batch`` (:class:`BatchEstimator`) and ``params() -> dict`` (provenance).
    """

    def estimate(self, patch: Any, kernel_size: int, rng: Any) -> Any:
        """(K, K) kernel of a float32 (H, W) patch in [0, 1]; deterministic for a given ``rng`` seed."""


@runtime_checkable
class BatchEstimator(Estimator, Protocol):
    """An estimator that also takes a stack of patches at once (e.g. one GPU batch)."""

    def estimate_batch(self, patches: Any, kernel_size: int, rng: Any) -> Any:
        """(N, K, K) kernels of (N, H, W) patches, each what :meth:`estimate` gives for that patch."""


@runtime_checkable
class KernelGenerator(Protocol):
    """What a generator factory returns (see :func:`kmsr_register_generators`).

    Optional: ``params() -> dict`` (provenance of the sampled kernels).
    """

    def sample(self, n: int, *, size: int, rng: Any) -> Any:
        """(n, size, size) finite, non-negative kernels summing to 1, drawn with ``rng``."""


@runtime_checkable
class TrainableGenerator(KernelGenerator, Protocol):
    """A generator ``kmsr gan train`` can train (registered with ``trainable=True``).

    Built untrained by ``factory(device=, width_mult=, output=)``: the training loop
    (:class:`kmsr_cli.gan.GanTrainer`) optimises ``generator`` (z of shape (B, latent_dim) to
    (B, 1, K, K) kernels) against ``critic`` (kernels times ``critic_input_scale`` to a score
    per kernel) and saves ``state_tensors()`` with ``architecture()`` (plus its own keys:
    ``iteration``, ``scale``, ``loss``, ...) as safetensors metadata. Built from that file by
    ``factory(checkpoint=PATH, device=)``, it exposes the file's metadata as ``metadata``,
    the training kernels' scale as ``scale`` and samples as a :class:`KernelGenerator`.
    """

    generator: Any  # torch.nn.Module
    critic: Any  # torch.nn.Module
    latent_dim: int
    kernel_size: int
    critic_input_scale: float
    metadata: dict  # str -> str: the checkpoint's safetensors metadata ({} when untrained)

    @property
    def scale(self) -> int | None:
        """The SR scale of the training kernels, from the checkpoint's ``scale`` metadata."""

    def architecture(self) -> dict:
        """str -> str metadata that rebuilds the networks (written into the checkpoint)."""

    def state_tensors(self) -> dict:
        """Every weight and buffer as contiguous CPU tensors, named as the checkpoint stores them."""

    def draw(self, n: int, *, rng: Any) -> Any:
        """Like ``sample`` at ``kernel_size``, untrained weights allowed (progress grids)."""

    def params(self) -> dict:
        """JSON-friendly provenance of sampled kernels (checkpoint, its sha256, iteration)."""


@runtime_checkable
class Backbone(Protocol):
    """What a backbone factory returns: a ``torch.nn.Module`` (see :func:`kmsr_register_backbones`).

    ``module(x)`` maps a float (N, C, H, W) tensor in [0, 1] to (N, C, H*s, W*s) for
    ``input="lr"`` and (N, C, H, W) for ``input="upsampled"``, C 3 or 1 as ``channels`` says.
    Optional attributes: ``scale``, ``options`` (JSON-friendly, enough to rebuild it),
    ``receptive_field``, ``size_multiple``, ``global_context``, ``input_kind``, ``channels``.
    """

    def __call__(self, x: Any) -> Any: ...

    def parameters(self) -> Any: ...

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...


@runtime_checkable
class Degradation(Protocol):
    """What a degradation factory returns (see :func:`kmsr_register_degradations`).

    Optional: ``hr_multiple`` (int; HR sides must be multiples of it, default the scale).
    ``kmsr_degradations.base.Degradation`` is a full implementation to subclass.
    """

    def __call__(self, hr: Any, generator: Any) -> tuple[Any, Any]:
        """(network input, target) of an HR batch, every random draw from ``generator``."""


#: The protocol each kind's factory result must satisfy (trainable generators: also
#: :class:`TrainableGenerator`).
PROTOCOLS: dict[str, type] = {
    "estimators": Estimator,
    "generators": KernelGenerator,
    "backbones": Backbone,
    "degradations": Degradation,
}
