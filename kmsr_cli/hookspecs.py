"""The kmsr plugin hooks: the one place that says what a plugin can provide.

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

- ``factory(**options)`` builds the backend; what it must return depends on the hook.
- ``available`` is an optional zero-argument callable returning ``True``/``False``, or a
  ``(ok, reason)`` pair, or an object with ``ok`` and ``reason``; ``kmsr plugins`` shows
  the reason when a backend cannot run here (e.g. no CUDA device).
- ``info`` is free-form metadata shown by ``kmsr plugins --json`` (it must be JSON-friendly).

This module is imported by every plugin, so it imports nothing heavy.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "kmsr"
ENTRY_POINT_GROUP = "kmsr"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def kmsr_register_estimators(register):
    """Register blur-kernel estimators (stage 1: kernels from photos).

    The factory returns an object with
    ``estimate(patch: np.ndarray (H, W) float in [0, 1], kernel_size: int, rng) -> np.ndarray (K, K)``.

    :param register: ``register(name, factory, *, description="", available=None, **info)``.
    """


@hookspec
def kmsr_register_generators(register):
    """Register kernel generators (synthetic families, or learnt ones such as a kernel GAN).

    The factory returns an object with
    ``sample(n: int, *, size: int, rng: np.random.Generator) -> np.ndarray (n, size, size)``
    whose kernels are finite, non-negative and sum to 1.

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
    (False: those weights are for comparison only and never start a training run).
    The factory is called as ``factory(scale=S, **options)`` and returns a ``torch.nn.Module``
    mapping a float (N, C, H, W) tensor in [0, 1] to its output; the module needs no attributes:
    every command feeds it as the registration says (``kmsr_cli.models.backbone_convention``).

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

    :param register: ``register(name, factory, *, description="", available=None, **info)``.
    """


HOOK_KINDS = {
    "estimators": "kmsr_register_estimators",
    "generators": "kmsr_register_generators",
    "backbones": "kmsr_register_backbones",
    "degradations": "kmsr_register_degradations",
}
