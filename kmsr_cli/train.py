"""Stage 3 pipeline: train an SR backbone on HR patches degraded on the training device.

The data are HR images held in memory as uint8; each step cuts random patches (with flips and
90-degree turns), moves them to the device, and the degradation plugin turns them into
(network input, target) pairs there, per sample and batched, inside the step. All randomness
comes from two ``torch.Generator`` objects (patches, degradation) whose states are saved with
every checkpoint, so ``--resume`` continues exactly where the checkpoint left off.

Run folder (``-o RUN_DIR``):

- ``model.safetensors``: the latest weights with kmsr metadata (backbone, options, scale,
  degradation, pool fingerprint, step) — what ``kmsr sr --model`` takes;
- ``best.safetensors``: the weights with the best validation Y-PSNR so far;
- ``state.pt``: everything ``--resume`` needs (weights, optimiser, scheduler, generators,
  step), tensors only, loaded with ``weights_only=True``;
- ``config.json``: the resolved configuration; ``log.jsonl``: one line per epoch.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same command trains with DistributedDataParallel:
gloo on the CPU, NCCL on GPUs; ``--batch`` is the global batch: every process draws the same
global batch and trains on its share of the rows, so the steps are those of one process with the
same ``--batch`` and seed. Rank 0 writes the run folder. :class:`SRTrainer` is the run.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kmsr_ops.errors import KmsrError, KmsrInputError
from kmsr_ops.files import file_sha256

from .atomic import replace_atomically
from .models import backbone_convention
from .progress import ProgressSink, emit, fan_out, on_stage

# What every state.pt holds (the generator states are per rank: g_data_0, g_deg_0, ...).
_STATE_KEYS = ("model", "optimizer", "scheduler", "step", "best", "val_history", "config_json", "g_data_0", "g_deg_0")
# scikit-image's bundled photos that are public domain or CC0 (scikit-image's data docs):
# the default training and validation data, so training works offline out of the box.
SKIMAGE_TRAIN = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "camera", "brick", "grass", "gravel")
SKIMAGE_VAL = ("chelsea",)

PRESETS = {
    # the paper: L1, Adam 1e-4 halved every 10 epochs, batch 32, 128x128 patches
    "paper": {"loss": "l1", "lr": 1e-4, "lr_step_epochs": 10, "lr_gamma": 0.5, "batch": 32, "patch": 128},
    # the official release: MSE, lr 1e-3 x0.1 every 30 epochs, batch 16
    "release": {"loss": "mse", "lr": 1e-3, "lr_step_epochs": 30, "lr_gamma": 0.1, "batch": 16, "patch": 128},
}


@dataclass
class TrainConfig:
    backbone: str
    degradation: str
    scale: int
    out: str
    backbone_options: dict = field(default_factory=dict)
    degradation_options: dict = field(default_factory=dict)
    pool: str | None = None
    data: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    preset: str = "paper"
    patch: int | None = None
    batch: int | None = None
    epochs: int = 1
    iters_per_epoch: int = 1000
    lr: float | None = None
    lr_step_epochs: int | None = None
    lr_gamma: float | None = None
    loss: str | None = None
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    checkpoint_every: int = 0  # iterations; 0 = at the end of each epoch only
    val_crop: int = 256
    max_steps: int | None = None  # stop after this many steps (tests, smoke runs)
    time_budget: float | None = None  # seconds of training; stop (and checkpoint) when spent
    init: str | None = None  # starting weights: a kmsr checkpoint or NAME:WEIGHTS (published)

    def resolve(self) -> TrainConfig:
        if self.preset not in PRESETS:
            raise KmsrInputError(f"preset: expected one of {', '.join(PRESETS)}, found {self.preset!r}")
        p = PRESETS[self.preset]
        for key in ("loss", "lr", "lr_step_epochs", "lr_gamma", "batch", "patch"):
            if getattr(self, key) is None:
                setattr(self, key, p[key])
        if self.loss not in ("l1", "mse"):
            raise KmsrInputError(f"loss: expected l1 or mse, found {self.loss!r}")
        for key in ("batch", "patch", "epochs", "iters_per_epoch", "lr_step_epochs"):
            if int(getattr(self, key)) < 1:
                raise KmsrInputError(f"{key.replace('_', '-')}: expected at least 1, found {getattr(self, key)}")
        if not self.lr > 0:
            raise KmsrInputError(f"lr: expected a positive learning rate, found {self.lr}")
        if self.patch % self.scale:
            raise KmsrInputError(f"patch: {self.patch} is not a multiple of the scale {self.scale}")
        return self


def check_train_memory(cfg: TrainConfig) -> None:
    """Refuse, before anything is built, a --batch and --patch the machine's memory cannot hold."""
    from .limits import check_memory

    # HR patches, their inputs, the outputs and the gradients: at least 4 float32 RGB copies.
    check_memory(4 * 4 * 3 * float(cfg.batch) * cfg.patch * cfg.patch, f"train --batch {cfg.batch} --patch {cfg.patch}",
                 hint="a smaller --batch or --patch")


# --------------------------------------------------------------------------- data
def _load_rgb_uint8(path: Path) -> np.ndarray:
    from kmsr_ops.image_io import read_image

    img = read_image(path, channels="RGB")
    return np.rint(img.pixels * 255).astype(np.uint8)


def load_hr_images(specs: list[str], *, default: tuple[str, ...]) -> tuple[list[np.ndarray], list[str]]:
    """HR images as (H, W, 3) uint8: from files/folders, or scikit-image's CC0 photos."""
    if not specs:
        import skimage.data as skd

        imgs, names = [], []
        for name in default:
            a = getattr(skd, name)()
            if a.ndim == 2:
                a = np.repeat(a[..., None], 3, axis=2)
            imgs.append(np.ascontiguousarray(a[..., :3]))
            names.append(f"skimage:{name}")
        return imgs, names
    from .estimate import discover_photos  # the one discovery of files, folders, globs and -

    paths = discover_photos(specs, missing_hint="check --data; nothing was trained",
                            empty_hint="kmsr train --data IMAGE_OR_FOLDER... -o RUN")
    return [_load_rgb_uint8(p) for p in paths], [str(p) for p in paths]


class PatchSampler:
    """Random HR patches with flips and 90-degree turns, drawn from one generator."""

    def __init__(self, images: list[np.ndarray], patch: int, generator):
        import torch

        usable = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in images
                  if im.shape[0] >= patch and im.shape[1] >= patch]
        if not usable:
            raise KmsrError(f"no training image is at least {patch}x{patch} pixels; use a smaller --patch")
        self.images = usable
        self.patch = patch
        self.g = generator
        # Larger images are drawn more often: every pixel equally likely to be seen.
        areas = torch.tensor([float(im.shape[1] * im.shape[2]) for im in usable], dtype=torch.float64)
        self.weights = areas / areas.sum()

    def __call__(self, n: int):
        import torch

        p = self.patch
        idx = torch.multinomial(self.weights, n, replacement=True, generator=self.g)
        out = torch.empty((n, 3, p, p), dtype=torch.uint8)
        for i, j in enumerate(idx.tolist()):
            im = self.images[j]
            top = int(torch.randint(0, im.shape[1] - p + 1, (1,), generator=self.g))
            left = int(torch.randint(0, im.shape[2] - p + 1, (1,), generator=self.g))
            crop = im[:, top : top + p, left : left + p]
            aug = int(torch.randint(0, 8, (1,), generator=self.g))
            if aug & 1:
                crop = crop.flip(-1)
            if aug & 2:
                crop = crop.flip(-2)
            if aug & 4:
                crop = crop.transpose(-1, -2)
            out[i] = crop
        return out


# --------------------------------------------------------------------------- distributed
def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


# --------------------------------------------------------------------------- the run
@dataclass
class TrainResult:
    run_dir: str
    steps: int
    epochs_done: int
    final_loss: float
    best_val_psnr: float | None
    val_psnr: list[float]
    seconds: float
    losses: list[float]


def _y_psnr(out, target, scale: int) -> float:
    from kmsr_ops.metrics import psnr

    a = out.clamp(0, 1).double().cpu().numpy()
    b = target.double().cpu().numpy()
    vals = []
    for i in range(a.shape[0]):
        x = a[i].transpose(1, 2, 0) * 255
        y = b[i].transpose(1, 2, 0) * 255
        vals.append(psnr(x, y, crop_border=scale, test_y_channel=x.shape[2] == 3))
    return float(np.mean(vals))


def _refuse_comparison_only(bb, what: str) -> None:
    """A backbone whose published weights are for comparison only (``init_allowed=False``) never starts a run."""
    if bb.info.get("init_allowed", True) is False:
        why = bb.info.get("weights_licence") or "comparison only"
        raise KmsrError(f"{what}: kmsr does not train from the published {bb.name!r} weights: {why}",
                       hint=f"train {bb.name!r} from scratch (no --init), or start from weights whose licence allows it")


def initialise_from(model, spec: str, *, backbone: str, scale: int, host) -> dict:
    """Load starting weights into ``model`` from ``spec``: a kmsr checkpoint (``.safetensors``) or
    ``NAME:WEIGHTS`` (a backbone's published weights, e.g. ``carn_m:carn_m_state_dict.npz``).

    The weights must be for the same backbone and fit ``model`` tensor for tensor; otherwise a
    :class:`KmsrError` names the first tensor that is missing, unexpected or of another shape.
    Published weights of a backbone registered with ``init_allowed=False`` (IMDN's: no licence,
    comparison only) are refused. Returns ``{"spec", "backbone", "tensors"}``.
    """
    import torch

    from .checkpoint import _check_finite, read_model_meta

    path = Path(spec)
    named = ":" in spec and not path.is_file() and spec.split(":", 1)[0] in host.names("backbones")
    if not named and (spec.endswith(".safetensors") or path.is_file()):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        meta = read_model_meta(path)  # names the file when it is missing, damaged or not kmsr's
        if meta.backbone != backbone:
            raise KmsrError(f"--init {spec}: the checkpoint is a {meta.backbone!r} model, but --backbone is {backbone!r}",
                           hint=f"use --backbone {meta.backbone}, or weights for {backbone!r}")
        if meta.scale is not None and meta.scale != scale:
            raise KmsrError(f"--init {spec}: the checkpoint is for x{meta.scale}, but --scale is {scale}")
        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise KmsrError(f"--init {spec}: the weights cannot be read ({exc})") from None
        _check_finite(state, path)
        source, saved_options = meta.backbone, meta.options
    elif ":" in spec:
        name, weights = spec.split(":", 1)
        if name != backbone:
            raise KmsrError(f"--init {spec}: weights for backbone {name!r}, but --backbone is {backbone!r}",
                           hint=f"use --backbone {name}")
        bb = host.get("backbones", name)
        _refuse_comparison_only(bb, f"--init {spec}")
        if not Path(weights).is_file():
            raise KmsrError(f"--init {spec}: {weights}: no such weights file")
        if bb.info.get("published_weights") is None:
            raise KmsrError(f"--init {spec}: backbone {name!r} has no published-weights loader; "
                           "give a kmsr checkpoint (.safetensors) instead")
        src = bb.create(scale=scale, weights=weights)  # the loader validates the file and names it
        state = src.state_dict()
        _check_finite(state, Path(weights))
        source, saved_options = name, None
    else:
        raise KmsrError(f"--init {spec}: expected a kmsr checkpoint (.safetensors) or NAME:WEIGHTS "
                       "(e.g. carn_m:carn_m_state_dict.npz)")
    expected = model.state_dict()
    for k, v in expected.items():
        if k not in state:
            raise KmsrError(f"--init {spec}: the weights lack tensor {k!r} {tuple(v.shape)} of this {backbone} model; "
                           "they are for another architecture or other options")
        if tuple(state[k].shape) != tuple(v.shape):
            raise KmsrError(f"--init {spec}: tensor {k!r} has shape {tuple(state[k].shape)}, this {backbone} model "
                           f"needs {tuple(v.shape)}; the weights are for another architecture, options or scale")
    extra = [k for k in state if k not in expected]
    if extra:
        raise KmsrError(f"--init {spec}: tensor {extra[0]!r} is not part of this {backbone} model "
                       f"({len(extra)} such); the weights are for another architecture or options")
    # Options that change the forward pass without changing any tensor (variant, res_scale) must
    # match too: the shapes alone would accept them.
    own = getattr(model, "options", None)
    if saved_options and isinstance(own, dict):
        wrong = sorted(k for k, v in own.items() if k in saved_options and saved_options[k] != v)
        if wrong:
            k = wrong[0]
            raise KmsrError(f"--init {spec}: the checkpoint was built with {k}={saved_options[k]!r}, this run has "
                           f"{k}={own[k]!r}", hint=f"add --option {k}={saved_options[k]}")
    with torch.no_grad():
        model.load_state_dict({k: state[k].to(torch.float32) for k in expected}, strict=True)
    return {"spec": spec, "backbone": source, "tensors": len(expected)}


def _unknown_option(backend, key: str, flag: str, known) -> KmsrError:
    kind = backend.kind[:-1]
    listing = f"its options: {', '.join(known)}" if known else "it takes no options"
    return KmsrError(f"{flag} {key}: the {backend.name!r} {kind} has no option {key!r}; {listing}",
                    hint="kmsr plugins --json  (lists the options of every backend)")


def check_options(backend, given: dict, flag: str, *, internal: tuple[str, ...] = ()) -> None:
    """Refuse options the backend's registration does not declare (``options=``), listing those it does.

    ``internal`` are declared options kmsr fills in itself (the pool's ``kernels``): not the user's to give.
    A backend that declares no options is left to :func:`create_with_options`.
    """
    declared = backend.info.get("options")
    if not isinstance(declared, dict):
        return
    known = [k for k in declared if k not in internal]
    for key in given:
        if key in internal:
            raise KmsrError(f"{flag} {key}: kmsr sets {key!r} of the {backend.name!r} {backend.kind[:-1]} itself "
                           f"(from --pool); its other options: {', '.join(known) or 'none'}")
        if key not in known:
            raise _unknown_option(backend, key, flag, known)


def create_with_options(backend, given: dict, flag: str, **kwargs):
    """``backend.create(**kwargs)``; a factory refusing one of the user's ``given`` options is a one-line error."""
    import re

    try:
        return backend.create(**kwargs)
    except TypeError as exc:
        m = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
        if m and m.group(1) in given:
            declared = backend.info.get("options")
            raise _unknown_option(backend, m.group(1), flag, list(declared) if isinstance(declared, dict) else []) from None
        raise


def _group_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _comparable(key: str, value):
    """A saved or given --pool / --data value in a form that compares equal for the same files."""
    def norm(p):
        return os.path.normpath(os.path.abspath(str(p)))

    if key == "pool":
        return norm(value) if value else None
    if key == "data":
        return [norm(p) for p in (value or [])]
    return value or {}


def _shown(value) -> str:
    if value is None or value == [] or value == {}:
        return "(none)"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def _init_sha256(init: str | None) -> str | None:
    """SHA-256 of the --init file (a checkpoint, or the WEIGHTS of NAME:WEIGHTS); None without one."""
    if not init:
        return None
    init_file = init.split(":", 1)[1] if (":" in init and not Path(init).exists()) else init
    return file_sha256(init_file) if Path(init_file).is_file() else None


class SRTrainer:
    """One SR training run: network, degradation, data, optimiser, random streams and run folder.

    Built from a :class:`TrainConfig` in the order its checks should fail (options, scale, the
    backbone's convention, ``--init``, the pool, the patch size, the data), then, with
    ``resume=True``, restored from the run folder's ``state.pt`` (:meth:`load_state`, after the
    saved configuration, data and pool fingerprint are checked against this one). :meth:`run`
    trains to the end of the schedule, ``--max-steps`` or the time budget; it is made of
    :meth:`step`, :meth:`validate` (each epoch) and :meth:`save` (checkpoints).

    Under torchrun (world size > 1) every rank draws the same global batch of ``cfg.batch``
    patches from the same random streams (rank 0's seeds), degrades all of it, and trains on rows
    ``rank::world`` of it; DDP averages the gradients. So N processes take the steps one process
    takes with the same ``--batch`` and seed, up to the rounding of the gradient all-reduce.
    """

    def __init__(self, cfg: TrainConfig, host, *, resume: bool = False, log: Callable[[str], None] | None = None):
        self.cfg = cfg.resolve()
        self.log = log or (lambda msg: None)
        self._setup_distributed()
        self.run_dir = Path(cfg.out)
        self.state_path = self.run_dir / "state.pt"
        self._build_model(host, resume=resume)
        self._build_degradation(host)
        self._load_data()
        self._build_optimiser()
        self.iteration, self.best, self.history = 0, None, []
        self.t0 = time.perf_counter()
        if resume:
            self.load_state(self._read_state())
            self.log(f"resuming {self.run_dir} at step {self.iteration}")
        elif self.state_path.exists():
            raise KmsrError(f"{self.run_dir} already holds a training run",
                           hint="add --resume to continue it, or choose another -o")
        if self.rank == 0:
            self._write_config()
        self.init_sha = _init_sha256(cfg.init)

    # ---------------------------------------------------------------- building
    def _setup_distributed(self) -> None:
        import torch

        cfg = self.cfg
        self.rank, self.world, self.local_rank = dist_info()
        self.distributed = self.world > 1
        device = cfg.device
        if self.distributed:
            import torch.distributed as dist

            if cfg.batch % self.world:
                raise KmsrInputError(f"batch: {cfg.batch} does not split over {self.world} processes")
            if device.startswith("cuda"):
                device = f"cuda:{self.local_rank}"
                torch.cuda.set_device(self.local_rank)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        self.device = torch.device(device)

    def _build_model(self, host, *, resume: bool) -> None:
        import torch

        cfg = self.cfg
        bb = host.get("backbones", cfg.backbone)
        self.dg = dg = host.get("degradations", cfg.degradation)
        # Unknown options fail here, before anything is built, naming the options there are.
        check_options(bb, cfg.backbone_options, "--option")
        check_options(dg, cfg.degradation_options, "--degradation-option",
                      internal=("kernels",) if dg.info.get("needs_kernels") else ())
        scales = bb.info.get("scales")
        if scales and cfg.scale not in scales:
            raise KmsrError(f"backbone {cfg.backbone!r} supports scales {scales}, not x{cfg.scale}")
        if cfg.backbone_options.get("weights") is not None:
            _refuse_comparison_only(bb, f"--option weights={cfg.backbone_options['weights']}")
        backbone_convention(bb, scale=cfg.scale)  # the registration is complete, before anything is built
        torch.manual_seed(cfg.seed)
        # What the model is built with; saved with it when the module does not carry its own options.
        build_options = {**bb.info.get("options", {}), **cfg.backbone_options}
        self.model = create_with_options(bb, cfg.backbone_options, "--option", scale=cfg.scale,
                                         **cfg.backbone_options).to(self.device)
        self.conv = backbone_convention(bb, self.model, scale=cfg.scale)
        own = getattr(self.model, "options", None)
        self.save_options = dict(own) if isinstance(own, dict) else build_options
        self.init_info = None
        if cfg.init and not resume:
            self.init_info = initialise_from(self.model, cfg.init, backbone=cfg.backbone, scale=cfg.scale, host=host)
            self.log(f"initialised from {cfg.init} ({self.init_info['tensors']} tensors)")

    def _build_degradation(self, host) -> None:
        """The degradation, with the pool's kernels when it needs them, and the HR patch multiple."""
        from .kernelset import KernelSet

        cfg, dg, conv = self.cfg, self.dg, self.conv
        dopts = dict(cfg.degradation_options)
        self.pool_fp = None
        if dg.info.get("needs_kernels"):
            if not cfg.pool:
                raise KmsrError(f"degradation {cfg.degradation!r} draws kernels from a pool: give --pool POOL.h5",
                               hint="kmsr pool synth --family motion -o pool.h5  (a synthetic pool to start with)")
            with KernelSet(cfg.pool) as ks:
                if ks.scale != cfg.scale:
                    raise KmsrError(f"{cfg.pool}: the pool holds x{ks.scale} kernels, but --scale is {cfg.scale}; "
                                   "kernels are specific to the scale they were estimated at")
                dopts["kernels"] = ks.kernels()
            self.pool_fp = file_sha256(cfg.pool)
        elif cfg.pool:
            raise KmsrError(f"degradation {cfg.degradation!r} does not use a pool; drop --pool or use --degradation pool")
        self.degradation_options = {k: v for k, v in dopts.items() if k != "kernels"}  # for the metadata
        self.degrade = create_with_options(dg, cfg.degradation_options, "--degradation-option",
                                           scale=cfg.scale, input=conv.input, channels=conv.channels, **dopts)
        multiple = int(getattr(self.degrade, "hr_multiple", cfg.scale))
        # The network input (LR for "lr" backbones) must have sides that are multiples of size_multiple.
        multiple = math.lcm(multiple, conv.size_multiple * (cfg.scale if conv.input == "lr" else 1))
        if cfg.patch % multiple:
            raise KmsrInputError(f"patch: the {cfg.degradation} degradation and backbone {cfg.backbone!r} at x{cfg.scale} "
                                 f"need HR patches that are multiples of {multiple}, found {cfg.patch}; "
                                 f"try --patch {cfg.patch - cfg.patch % multiple}")
        self.multiple = multiple

    def _load_data(self) -> None:
        import torch

        cfg = self.cfg
        images, self.train_names = load_hr_images(cfg.data, default=SKIMAGE_TRAIN)
        self.val_images, self.val_names = (load_hr_images(cfg.val, default=SKIMAGE_VAL) if (cfg.val or not cfg.data)
                                           else ([], []))
        # The same seeds on every rank: each rank draws the whole global batch and keeps its rows (see step()).
        self.g_data = torch.Generator().manual_seed(cfg.seed * 1000 + 1)
        self.g_deg = torch.Generator().manual_seed(cfg.seed * 1000 + 2)
        self.sampler = PatchSampler(images, cfg.patch, self.g_data)

    def _build_optimiser(self) -> None:
        import torch

        cfg, dev = self.cfg, self.device
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.model, device_ids=[self.local_rank] if dev.type == "cuda" else None)
        else:
            self.net = self.model
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        step_size = cfg.lr_step_epochs * cfg.iters_per_epoch
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=step_size, gamma=cfg.lr_gamma)
        self.loss_fn = torch.nn.L1Loss() if cfg.loss == "l1" else torch.nn.MSELoss()
        self.use_amp = bool(cfg.amp)
        self.amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and dev.type == "cuda")

    # ---------------------------------------------------------------- resume
    @property
    def _resume_hint(self) -> str:
        return (f"start a new run with another -o (--init {self.run_dir / 'model.safetensors'} keeps the last saved "
                "weights), or put back a good copy of state.pt")

    def _damaged(self, why: str) -> KmsrError:
        return KmsrError(f"{self.state_path}: the training state is damaged ({why}); it cannot be resumed",
                        hint=self._resume_hint)

    def _read_state(self) -> dict:
        """state.pt, checked to be whole and to belong to this configuration."""
        from .checkpoint import load_training_state, short_reason

        if not self.state_path.exists():
            raise KmsrError(f"{self.state_path}: nothing to resume (no state.pt in the run folder)",
                           hint="drop --resume to start a new run")
        state = load_training_state(self.state_path, hint=self._resume_hint)
        if not isinstance(state, dict):
            raise self._damaged(f"it holds a {type(state).__name__}, not the state's entries")
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise self._damaged(f"no {missing[0]!r} entry")
        try:
            saved_cfg = json.loads(bytes(state["config_json"].tolist()).decode())
            if not isinstance(saved_cfg, dict):
                raise ValueError(f"a JSON {type(saved_cfg).__name__}, not an object")
        except Exception as exc:  # noqa: BLE001 - any failure here is a damaged file
            raise self._damaged(f"its configuration cannot be read: {short_reason(str(exc)) or type(exc).__name__}") from None
        self._check_saved_config(saved_cfg)
        return state

    def _check_saved_config(self, saved_cfg: dict) -> None:
        """Refuse a resume with other settings, data or pool; the run keeps its original --init."""
        cfg, where = self.cfg, self.state_path
        for key in ("backbone", "degradation", "scale", "backbone_options", "patch", "batch"):
            if saved_cfg.get(key) != getattr(cfg, key):
                raise KmsrError(f"{where}: the run was started with {key}={saved_cfg.get(key)!r}, "
                               f"not {getattr(cfg, key)!r}; resume with the same settings")
        # The starting weights belong to the run: a resume keeps the original --init in the metadata.
        if cfg.init and cfg.init != saved_cfg.get("init"):
            raise KmsrError(f"{where}: the run was started with --init {saved_cfg.get('init')!r}, not {cfg.init!r}; "
                           "a resume continues from the checkpoint (drop --init)")
        cfg.init = saved_cfg.get("init")
        # The data too: resuming on another pool or other images would silently change the run.
        for key, flag in (("pool", "--pool"), ("data", "--data"), ("degradation_options", "--degradation-option")):
            was, now = _comparable(key, saved_cfg.get(key)), _comparable(key, getattr(cfg, key))
            if was != now:
                raise KmsrError(f"{where}: the run was started with {flag} {_shown(saved_cfg.get(key))}, "
                               f"not {_shown(getattr(cfg, key))}; resume with the same {flag}",
                               hint="drop --resume and choose another -o to train on other data")
        # The same pool path holding other kernels (rebuilt, or replaced by another file) is another run.
        was_fp = saved_cfg.get("pool_fingerprint")
        if was_fp is not None and was_fp != self.pool_fp:
            raise KmsrError(f"{where}: the pool {cfg.pool} has changed since the run started "
                           f"(SHA-256 {str(was_fp)[:12]}…, now {str(self.pool_fp)[:12]}…); resume with the pool it "
                           "was started on", hint="drop --resume and choose another -o to train on the new pool")

    def load_state(self, state: dict) -> None:
        """Restore weights, optimiser, schedule, this rank's random streams, step, best and validation history."""
        from .checkpoint import short_reason

        r = self.rank
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.g_data.set_state(state[f"g_data_{r}"] if f"g_data_{r}" in state else state["g_data_0"])
            self.g_deg.set_state(state[f"g_deg_{r}"] if f"g_deg_{r}" in state else state["g_deg_0"])
            self.iteration = int(state["step"])
            best = float(state["best"])
            self.best = None if math.isnan(best) else best
            self.history = [float(v) for v in state["val_history"].tolist()]
        except Exception as exc:  # noqa: BLE001 - wrong shapes, types or entries: the file does not fit this run
            raise self._damaged(f"{type(exc).__name__}: {short_reason(str(exc))}") from None

    # ---------------------------------------------------------------- state and files
    def _generator_states(self) -> dict:
        """Every rank's random streams, ``g_data_R`` and ``g_deg_R``; collective under DDP."""
        if not self.distributed:
            return {"g_data_0": self.g_data.get_state(), "g_deg_0": self.g_deg.get_state()}
        import torch.distributed as dist

        states = [None] * self.world
        dist.all_gather_object(states, (self.g_data.get_state(), self.g_deg.get_state()))
        gens = {}
        for r, (a, b) in enumerate(states):
            gens[f"g_data_{r}"], gens[f"g_deg_{r}"] = a, b
        return gens

    def state_dict(self) -> dict:
        """What state.pt holds: tensors only (read back with ``weights_only=True``). Collective under DDP."""
        import torch

        gens = self._generator_states()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "step": torch.tensor(self.iteration),
            "best": torch.tensor(float("nan") if self.best is None else self.best),
            "val_history": torch.tensor(self.history, dtype=torch.float64),
            "config_json": torch.tensor(list(json.dumps({**asdict(self.cfg), "pool_fingerprint": self.pool_fp}).encode()),
                                        dtype=torch.uint8),
            **gens,
        }

    def meta_extra(self) -> dict:
        """The ``extra`` metadata of model.safetensors and best.safetensors."""
        cfg = self.cfg
        return {"degradation": {"name": cfg.degradation, "options": self.degradation_options}, "pool": cfg.pool,
                "init": cfg.init, "init_sha256": self.init_sha,
                "pool_fingerprint": self.pool_fp, "step": self.iteration, "preset": cfg.preset, "loss": cfg.loss,
                "val_psnr_y": self.history[-1] if self.history else None}

    def save(self, kind: str = "latest") -> None:
        """``latest``: state.pt, then model.safetensors; ``best``: best.safetensors; ``both``.

        Every rank calls it (the random streams are gathered collectively); rank 0 writes, each file
        through :func:`replace_atomically`.
        """
        import torch

        from .checkpoint import save_model

        latest = kind in ("latest", "both")
        state = self.state_dict() if latest else None
        if self.rank != 0:
            return
        extra = self.meta_extra()
        model_args = {"backbone": self.cfg.backbone, "scale": self.cfg.scale, "options": self.save_options, "extra": extra}
        if latest:
            replace_atomically(self.state_path, lambda tmp: torch.save(state, tmp), fsync=True)
            save_model(self.run_dir / "model.safetensors", self.model, **model_args)
        if kind in ("best", "both"):
            save_model(self.run_dir / "best.safetensors", self.model, **model_args)

    def _write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config_text = json.dumps({**asdict(self.cfg), "train_images": self.train_names, "val_images": self.val_names,
                                  "world_size": self.world, "pool_fingerprint": self.pool_fp}, indent=2)
        replace_atomically(self.run_dir / "config.json", lambda tmp: Path(tmp).write_text(config_text), fsync=True)

    def _append_log(self, record: dict) -> None:
        """One line of log.jsonl: an append (the earlier lines stay), flushed to disk."""
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    # ---------------------------------------------------------------- training
    def validate(self) -> float | None:
        """Mean Y-PSNR of the validation images' centre crops, degraded with a fixed seed; None without images."""
        if not self.val_images:
            return None
        import torch

        from kmsr_ops.resize import modcrop

        cfg = self.cfg
        g_val = torch.Generator().manual_seed(12345)
        vals = []
        self.model.eval()
        with torch.no_grad():
            for im in self.val_images:
                im = modcrop(im, cfg.scale)
                c = min(cfg.val_crop, im.shape[0], im.shape[1])
                c -= c % self.multiple
                top, left = (im.shape[0] - c) // 2, (im.shape[1] - c) // 2
                hr = torch.from_numpy(np.ascontiguousarray(im[top : top + c, left : left + c].transpose(2, 0, 1)))
                hr = hr[None].to(self.device, torch.float32) / 255
                x, y = self.degrade(hr, g_val)
                vals.append(_y_psnr(self.model(x), y, cfg.scale))
        self.model.train()
        return float(np.mean(vals))

    def step(self) -> float:
        """One optimisation step; returns this rank's loss.

        Every rank draws and degrades the whole global batch with the shared streams and trains on
        rows ``rank::world`` of it: the global batch is the one a single process would train on.
        """
        import torch

        hr = self.sampler(self.cfg.batch).to(self.device, non_blocking=True).float().div_(255)
        with torch.no_grad():
            x, y = self.degrade(hr, self.g_deg)
        if self.distributed:
            x, y = x[self.rank :: self.world].contiguous(), y[self.rank :: self.world].contiguous()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            out = self.net(x)
            loss = self.loss_fn(out.float(), y)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        self.sched.step()
        self.iteration += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise KmsrError(f"training diverged at step {self.iteration} (loss {value}); lower --lr", hint=None)
        return value

    def _budget_spent(self) -> bool:
        """Whether the time budget is spent; under DDP, on any rank (every rank must stop at the same step)."""
        if self.cfg.time_budget is None:
            return False
        import torch

        spent = torch.tensor([float(time.perf_counter() - self.t0 >= self.cfg.time_budget)])
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(spent, op=dist.ReduceOp.MAX)
        return bool(spent.item())

    def _end_epoch(self, loss: float, on_epoch: Callable[[dict], None] | None) -> None:
        """Validate, keep the best weights, log the epoch, report it, checkpoint."""
        cfg = self.cfg
        v = self.validate()
        if v is not None:
            self.history.append(v)
            if self.best is None or v > self.best:
                self.best = v
                self.save("best")
        epoch = self.iteration // cfg.iters_per_epoch
        if self.rank == 0:
            self._append_log({"epoch": epoch, "step": self.iteration, "loss": loss, "lr": self.sched.get_last_lr()[0],
                              "val_psnr_y": v, "seconds": round(time.perf_counter() - self.t0, 2)})
            if on_epoch:
                on_epoch({"epoch": epoch, "val_psnr": v, "loss": loss})
        self.save("latest")

    def run(self, *, on_step: Callable[[dict], None] | None = None,
            on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
        """Train to the end of the schedule (or ``max_steps`` more steps, or the time budget), checkpointing
        each epoch, every ``checkpoint_every`` steps and at the end. ``on_step`` / ``on_epoch`` on rank 0."""
        cfg = self.cfg
        total_steps = cfg.epochs * cfg.iters_per_epoch
        if cfg.max_steps is not None:
            total_steps = min(total_steps, self.iteration + cfg.max_steps)
        losses: list[float] = []
        self.t0 = time.perf_counter()
        self.model.train()
        loss = float("nan")
        while self.iteration < total_steps:
            if self._budget_spent():
                self.log(f"time budget of {cfg.time_budget:.0f} s spent at step {self.iteration}; stopping")
                break
            loss = self.step()
            losses.append(loss)
            if on_step and self.rank == 0:
                on_step({"step": self.iteration, "total": total_steps, "loss": loss, "lr": self.sched.get_last_lr()[0]})
            if self.iteration % cfg.iters_per_epoch == 0:
                self._end_epoch(loss, on_epoch)
            elif cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0:
                self.save("latest")
        if self.iteration % cfg.iters_per_epoch:
            self.save("latest")
        return TrainResult(str(self.run_dir), self.iteration, self.iteration // cfg.iters_per_epoch, loss, self.best,
                           self.history, round(time.perf_counter() - self.t0, 2), losses)


def run_training(cfg: TrainConfig, host, *, progress: ProgressSink | None = None,
                 on_step: Callable[[dict], None] | None = None,
                 on_epoch: Callable[[dict], None] | None = None, resume: bool = False,
                 log: Callable[[str], None] | None = None) -> TrainResult:
    """Train with an :class:`SRTrainer`; returns a summary.

    ``progress`` gets (on rank 0) a ``train.step`` event after each step (``done`` of ``total``
    steps, ``data``: step, total, loss, lr), a ``train.epoch`` event at each epoch's end (``data``:
    epoch, loss, val_psnr) and ``train.log`` events whose ``message`` is a line for the log.
    ``on_step(data)``, ``on_epoch(data)`` and ``log(message)`` are the older form of those events.

    Under torchrun the process group is created here when the caller has not made one, and torn down
    here too after a successful run: every rank waits for the others, then destroys the group before
    the interpreter exits. Left to interpreter shutdown, gloo's worker threads abort the process
    ("terminate called without an active exception", pytorch/pytorch#190489). After a failure the
    group is left alone: destroying it while other ranks sit in a collective can hang.
    """
    owned = not _group_active()
    sink = fan_out(progress, on_stage("train.step", on_step and (lambda e: on_step(e.data))),
                   on_stage("train.epoch", on_epoch and (lambda e: on_epoch(e.data))),
                   on_stage("train.log", log and (lambda e: log(e.message))))
    result = SRTrainer(cfg, host, resume=resume, log=lambda m: emit(sink, "train.log", message=m)).run(
        on_step=lambda d: emit(sink, "train.step", done=d["step"], total=d["total"], data=d),
        on_epoch=lambda d: emit(sink, "train.epoch", done=d["epoch"], data=d))
    if owned and _group_active():
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return result
