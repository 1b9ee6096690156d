"""A kernel GAN as the ``wgan-gp`` generator backend: networks, checkpoint format, sampling.

One :class:`KernelGan` object serves both uses of the backend:

- sampling (``kmsr gan sample``, ``kmsr pool build --generator``, ``kmsr pool synth --family
  wgan-gp --option checkpoint=...``): built from a checkpoint, ``sample(n, size=25, rng=...)``
  draws z from the NumPy generator, so the same seed gives the same kernels on any device;
- training (``kmsr gan train``): built untrained, it hands the training loop its
  ``generator`` and ``critic`` modules, the scale the critic sees kernels at, and the tensors
  and metadata to save.

Checkpoint format (safetensors): tensors ``generator.*`` and ``critic.*`` (weights and batch
norm buffers); string metadata with ``format`` = ``kmsr-gan`` and the keys of
:meth:`KernelGan.architecture` plus whatever the trainer adds (loss, iteration, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from kmsr_ops.errors import KmsrInputError
from kmsr_ops.files import file_sha256
from kmsr_ops.validate import check_choice

from .model import KERNEL_SIZE, LATENT_DIM, OUTPUTS, KernelCritic, KernelGenerator, init_weights

CHECKPOINT_FORMAT = "kmsr-gan"
ARCHITECTURE = "kmsr-wgan-gp"
ARCHITECTURE_VERSION = 1
#: Kernels are multiplied by this before the critic, and the gradient penalty is measured in
#: these units. Kernel entries are tiny (a 25x25 kernel sums to 1), and the critic's first
#: instance norm makes it blind to the overall scale, so without it the critic's input
#: gradients are ~1/||k|| (about 10) and the penalty (target norm 1) swamps the loss. With
#: it, kernel entries have the magnitude of image intensities, as in the WGAN-GP setting.
CRITIC_INPUT_SCALE = float(KERNEL_SIZE)
#: Metadata keys that must match for a checkpoint to load into this architecture.
_ARCH_KEYS = ("architecture", "architecture_version", "kernel_size", "latent_dim")


def _check_width(width_mult) -> float:
    try:
        w = float(width_mult)
    except (TypeError, ValueError):
        raise KmsrInputError(f"width_mult: expected a positive number, found {width_mult!r}") from None
    if not np.isfinite(w) or not 0 < w <= 4:
        raise KmsrInputError(f"width_mult: expected a number in (0, 4], found {width_mult!r}")
    return w


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a kernel-GAN checkpoint, checked to be one of this architecture."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise KmsrInputError(f"{path}: no such checkpoint file" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise KmsrInputError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise KmsrInputError(
            f"{path}: not a kmsr kernel-GAN checkpoint (metadata format={meta.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r}); make one with `kmsr gan train`"
        )
    found = {k: meta.get(k) for k in _ARCH_KEYS}
    expected = {"architecture": ARCHITECTURE, "architecture_version": str(ARCHITECTURE_VERSION),
                "kernel_size": str(KERNEL_SIZE), "latent_dim": str(LATENT_DIM)}
    bad = {k: v for k, v in found.items() if v != expected[k]}
    if bad:
        what = ", ".join(f"{k}={found[k]!r} (expected {expected[k]!r})" for k in bad)
        raise KmsrInputError(f"{path}: checkpoint of another architecture: {what}")
    if meta.get("output") not in OUTPUTS:
        raise KmsrInputError(f"{path}: metadata output={meta.get('output')!r}, expected one of {', '.join(OUTPUTS)}")
    _check_width(meta.get("width_mult"))
    return meta


class KernelGan:
    """The KMSR kernel GAN (see :mod:`kmsr_gan.model`): networks plus checkpoint I/O and sampling."""

    name = "wgan-gp"
    kernel_size = KERNEL_SIZE
    latent_dim = LATENT_DIM
    critic_input_scale = CRITIC_INPUT_SCALE

    def __init__(self, *, width_mult: float = 1.0, output: str = "relu", device: str = "cpu"):
        self.output = check_choice("output", output, OUTPUTS)
        self.width_mult = _check_width(width_mult)
        self.device = torch.device(device)
        self.generator = KernelGenerator(self.width_mult, output)
        self.critic = KernelCritic(self.width_mult)
        # Initialised on the CPU, so torch's CPU seed fixes the initial weights on any device.
        init_weights(self.generator)
        init_weights(self.critic)
        self.generator.to(self.device)
        self.critic.to(self.device)
        self.checkpoint: Path | None = None
        self.metadata: dict[str, str] = {}
        self._sha256: str | None = None

    # ------------------------------------------------------------------ description
    def architecture(self) -> dict[str, str]:
        """What a checkpoint must record to be rebuilt (safetensors metadata is all strings)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "architecture": ARCHITECTURE,
            "architecture_version": str(ARCHITECTURE_VERSION),
            "kernel_size": str(KERNEL_SIZE),
            "latent_dim": str(LATENT_DIM),
            "width_mult": repr(self.width_mult),
            "output": self.output,
            "critic_input_scale": repr(CRITIC_INPUT_SCALE),
        }

    def params(self) -> dict:
        """Provenance of sampled kernels: the checkpoint and its fingerprint."""
        out = {"architecture": ARCHITECTURE, "width_mult": self.width_mult, "output": self.output}
        if self.checkpoint is not None:
            if self._sha256 is None:
                self._sha256 = file_sha256(self.checkpoint)
            out.update(checkpoint=str(self.checkpoint), checkpoint_sha256=self._sha256)
            for key in ("iteration", "loss", "training_set_sha256"):
                if key in self.metadata:
                    out[key] = int(self.metadata[key]) if key == "iteration" else self.metadata[key]
        return out

    @property
    def scale(self) -> int | None:
        """SR scale of the kernels the checkpoint was trained on, when recorded."""
        s = self.metadata.get("scale")
        return int(s) if s is not None and s.isdigit() else None

    # ------------------------------------------------------------------ tensors
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every weight and buffer of both networks, prefixed, contiguous and on the CPU."""
        out = {}
        for prefix, module in (("generator", self.generator), ("critic", self.critic)):
            for key, value in module.state_dict().items():
                out[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], *, source: str, critic: bool = True) -> None:
        """Load tensors saved by :meth:`state_tensors`; mismatches name ``source`` and the tensor."""
        parts = [("generator", self.generator)] + ([("critic", self.critic)] if critic else [])
        for prefix, module in parts:
            own = module.state_dict()
            theirs = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            missing = sorted(set(own) - set(theirs))
            if missing:
                raise KmsrInputError(f"{source}: checkpoint lacks {prefix} tensors {missing[:3]}{'...' if len(missing) > 3 else ''}")
            unexpected = sorted(set(theirs) - set(own))
            if unexpected:
                raise KmsrInputError(f"{source}: checkpoint has unknown {prefix} tensors {unexpected[:3]}")
            for key, value in own.items():
                if tuple(theirs[key].shape) != tuple(value.shape):
                    raise KmsrInputError(
                        f"{source}: tensor {prefix}.{key} has shape {tuple(theirs[key].shape)}, this architecture "
                        f"(width_mult={self.width_mult}) expects {tuple(value.shape)}"
                    )
            module.load_state_dict(theirs, strict=True)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str = "cpu", critic: bool = True) -> KernelGan:
        """Rebuild the networks a checkpoint describes and load its weights."""
        from safetensors.torch import load_file

        path = Path(path)
        meta = read_checkpoint_metadata(path)
        gan = cls(width_mult=float(meta["width_mult"]), output=meta["output"], device=device)
        try:
            tensors = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged body
            raise KmsrInputError(f"{path}: cannot read the checkpoint's tensors ({type(exc).__name__}: {exc})") from None
        gan.load_state_tensors(tensors, source=str(path), critic=critic)
        gan.checkpoint = path
        gan.metadata = meta
        return gan

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, *, size: int = KERNEL_SIZE, rng: np.random.Generator, batch: int = 256) -> np.ndarray:
        """``n`` kernels (n, 25, 25) float64 from z ~ N(0, I) drawn with ``rng``."""
        if size != KERNEL_SIZE:
            raise KmsrInputError(
                f"size: the wgan-gp generator makes {KERNEL_SIZE}x{KERNEL_SIZE} kernels (its 32x32 map goes through "
                f"an 8x8 valid convolution), found size {size}"
            )
        if self.checkpoint is None:
            raise KmsrInputError(
                "wgan-gp: no checkpoint given, the networks are untrained; train one with "
                "`kmsr gan train KERNELS.h5 -o GAN.safetensors` and pass checkpoint=GAN.safetensors"
            )
        return self.draw(n, rng=rng, batch=batch)

    def draw(self, n: int, *, rng: np.random.Generator, batch: int = 256) -> np.ndarray:
        """Like :meth:`sample`, untrained weights allowed (progress grids during training, tests)."""
        out = np.empty((n, KERNEL_SIZE, KERNEL_SIZE), dtype=np.float64)
        was_training = self.generator.training
        self.generator.eval()  # batch norm from running statistics: each kernel depends on its z only
        try:
            with torch.no_grad():
                for start in range(0, n, batch):
                    m = min(batch, n - start)
                    z = torch.from_numpy(rng.standard_normal((m, LATENT_DIM)).astype(np.float32)).to(self.device)
                    out[start:start + m] = self.generator(z)[:, 0].double().cpu().numpy()
        finally:
            self.generator.train(was_training)
        # float32 division leaves sums 1 +- 1e-7; renormalise in float64 for the kernel-set writer.
        return out / out.sum(axis=(1, 2), keepdims=True)

