"""Built-in plugin: the KMSR kernel GAN, registered as the generator ``wgan-gp``.

The factory takes ``checkpoint=PATH`` (a ``kmsr gan train`` output) to sample kernels, and
``device``; without a checkpoint it builds untrained networks (``width_mult``, ``output``) for
``kmsr gan train``, which reaches the torch modules through the returned object's
``generator`` and ``critic`` attributes (see :mod:`kmsr_gan.kernel_gan`). The pipeline never
imports this package by name: it asks the plugin host for the ``wgan-gp`` backend, so another
plugin can register a compatible trainable generator.

torch and safetensors are imported on first use, not when the plugin loads, so listing
plugins or reading pools stays fast.
"""

from __future__ import annotations

from kmsr_cli.hookspecs import hookimpl

KERNEL_SIZES = [25]


def _available():
    try:
        import safetensors  # noqa: F401 - probing only
        import torch  # noqa: F401
    except ImportError as exc:
        return False, f"needs torch and safetensors ({exc})"
    return True, ""


def create_wgan_gp(checkpoint=None, device: str = "cpu", width_mult: float | None = None, output: str | None = None):
    """The ``wgan-gp`` factory: a trained generator from ``checkpoint``, else untrained networks.

    ``width_mult`` (channel multiplier, 1.0 = the paper) and ``output`` (how the last map is
    made a kernel: ``relu``, ``clip`` as in the release, or ``softmax``; see
    :func:`kmsr_gan.model.to_kernel`) only apply without a checkpoint, which records its own.
    """
    from .kernel_gan import KernelGan

    if checkpoint is not None and checkpoint != "":
        if width_mult is not None or output is not None:
            from kmsr_ops.errors import KmsrInputError

            raise KmsrInputError("width_mult and output come from the checkpoint; give either a checkpoint or them")
        return KernelGan.from_checkpoint(checkpoint, device=device)
    return KernelGan(width_mult=1.0 if width_mult is None else width_mult, output=output or "relu", device=device)


@hookimpl
def kmsr_register_generators(register):
    register(
        "wgan-gp",
        create_wgan_gp,
        description="KMSR kernel GAN (WGAN-GP, DCGAN-like, 25x25); needs checkpoint=GAN.safetensors from `kmsr gan train`",
        available=_available,
        origin="generated",
        trainable=True,
        kernel_sizes=KERNEL_SIZES,
        latent_dim=100,
        options={"checkpoint": None, "device": "cpu", "width_mult": 1.0, "output": "relu"},
    )
