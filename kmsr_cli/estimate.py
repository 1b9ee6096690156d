"""Stage 1 pipeline: blur kernels estimated from real photos, written as an HDF5 kernel set.

For each photo: greyscale in [0, 1] (MATLAB ``rgb2gray`` weights), bicubic upscaling by the SR
scale (MATLAB-compatible), random square patches, flat ones rejected, one kernel per accepted
patch from an estimator plugin.

Everything about a photo's patches follows from the photo's *content* and the seed (the patch
positions are drawn from a generator seeded with both), so a rerun, another shard, or another
machine cuts exactly the same patches. Each finished kernel is saved at once as a small file
in ``OUT.partial/`` (written atomically); a rerun of the same command skips every patch that is
already done, in the partial folder or in ``OUT`` itself, and the final kernel set is written
atomically when the run ends. A killed run loses at most the patches in flight.
"""

from __future__ import annotations

import concurrent.futures as cf
import glob
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kmsr_ops.errors import ImageReadError, KmsrError, KmsrInputError
from kmsr_ops.image_io import IMAGE_SUFFIXES, images_in
from kmsr_ops.resize import imresize

from .atomic import OutputLock, sidecar_path
from .kernelset import KernelSet, Provenance, path_bytes_hex, write_kernel_set
from .progress import ProgressSink, emit

# Smallest patch side (after upscaling) worth estimating a kernel from: below this a 25x25
# kernel has too few edges around it for the estimate to mean anything.
MIN_PATCH = 128
CRITERIA = ("texture", "paper", "none")
# MATLAB rgb2gray weights (the reference code converts with rgb2gray).
_GREY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


# --------------------------------------------------------------------------- photos
def discover_photos(specs: Iterable[str], *, stdin: Iterable[str] | None = None,
                    missing_hint: str = "check the photo list; nothing was estimated",
                    empty_hint: str = "kmsr estimate PHOTO_OR_FOLDER... -o kernels.h5") -> list[Path]:
    """Files, folders (searched recursively for images), globs, or ``-`` (paths on stdin).

    ``missing_hint`` and ``empty_hint`` are the next steps shown when a file is missing or no
    file is given: each command that lists images passes its own (these are estimate's).
    """
    found: list[Path] = []
    for spec in specs:
        if spec == "-":
            lines = stdin if stdin is not None else sys.stdin
            found.extend(Path(line.strip()) for line in lines if line.strip())
            continue
        if any(ch in spec for ch in "*?["):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise KmsrError(f"{spec}: the pattern matches no file")
            found.extend(Path(m) for m in matches if Path(m).is_file())
            continue
        p = Path(spec)
        if p.is_dir():
            imgs = images_in(p, recursive=True)
            if not imgs:
                raise KmsrError(f"{p}: the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found.extend(imgs)
        else:
            found.append(p)
    missing = [p for p in found if not p.exists()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise KmsrError(f"{missing[0]}: no such file{more}", hint=missing_hint)
    unique: list[Path] = []
    seen: set[str] = set()
    for p in found:
        key = os.path.normpath(str(p))
        if key not in seen:
            seen.add(key)
            unique.append(p)
    if not unique:
        raise KmsrError("no photos given", hint=empty_hint)
    return unique


def parse_shard(text: str | None) -> tuple[int, int]:
    """``i/N`` (0-based i) → (i, N); None → (0, 1)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise KmsrInputError(f"shard: expected i/N such as 0/4, found {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise KmsrInputError(f"shard: expected 0 <= i < N, found {text!r}")
    return i, n


def to_grey(pixels: np.ndarray) -> np.ndarray:
    """(H, W, C) float in [0, 1] → (H, W) float64 grey, MATLAB rgb2gray weights; alpha ignored."""
    if pixels.ndim == 2:
        return pixels.astype(np.float64)
    if pixels.shape[2] == 1:
        return pixels[..., 0].astype(np.float64)
    return pixels[..., :3].astype(np.float64) @ _GREY


# --------------------------------------------------------------------------- flat patches
def patch_is_textured(patch: np.ndarray, criterion: str, *, omega: float = 0.003,
                      edge_threshold: float = 0.02, min_edge_fraction: float = 0.05,
                      min_std: float = 0.03) -> bool:
    """Whether a patch has the structure a kernel can be estimated from.

    ``paper``: the test as the paper writes it, ``|mean - var| >= omega * mean`` (omega 0.003).
    It holds for nearly every natural patch, sky and walls included.
    ``texture`` (default): at least ``min_edge_fraction`` of the pixels have a gradient of
    magnitude ``edge_threshold`` or more, and the intensities vary (std >= ``min_std``):
    blind deblurring needs salient edges, which flat sky, walls and smooth gradients lack.
    ``none``: accept everything.
    """
    if criterion == "none":
        return True
    if criterion == "paper":
        mean = float(patch.mean())
        return abs(mean - float(patch.var())) >= omega * mean
    if criterion == "texture":
        if float(patch.std()) < min_std:
            return False
        gx = np.diff(patch, axis=1)[:-1, :]
        gy = np.diff(patch, axis=0)[:, :-1]
        edges = np.hypot(gx, gy) >= edge_threshold
        return float(edges.mean()) >= min_edge_fraction
    raise KmsrInputError(f"criterion: expected one of {', '.join(CRITERIA)}, found {criterion!r}")


# --------------------------------------------------------------------------- units of work
@dataclass(frozen=True)
class Unit:
    """One patch of one photo: the unit that is estimated, saved and skipped on resume."""

    photo: str
    photo_sha256: str
    box: tuple[int, int, int, int]  # top, left, height, width in the upscaled image
    index: int  # patch number within the photo
    key: str


@dataclass
class Settings:
    scale: int = 2
    patch: int = 512
    per_image: int = 5
    kernel_size: int = 25
    estimator: str = "dark-channel"
    criterion: str = "texture"
    seed: int = 0
    options: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.scale < 1:
            raise KmsrInputError(f"scale: expected an integer >= 1, found {self.scale}")
        if self.patch < MIN_PATCH:
            raise KmsrInputError(f"patch: expected at least {MIN_PATCH} pixels, found {self.patch}")
        if self.per_image < 1:
            raise KmsrInputError(f"per-image: expected at least 1, found {self.per_image}")
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise KmsrInputError(f"kernel-size: expected an odd size >= 3, found {self.kernel_size}")
        if self.criterion not in CRITERIA:
            raise KmsrInputError(f"criterion: expected one of {', '.join(CRITERIA)}, found {self.criterion!r}")


def unit_key(sha: str, box, settings: Settings, est_params: dict) -> str:
    doc = json.dumps(
        {"photo": sha, "box": list(box), "scale": settings.scale, "k": settings.kernel_size,
         "estimator": settings.estimator, "params": est_params},
        sort_keys=True,
    )
    return hashlib.sha256(doc.encode()).hexdigest()[:24]


def plan_patches(grey_up: np.ndarray, sha: str, photo: str, settings: Settings, est_params: dict
                 ) -> tuple[list[tuple[Unit, np.ndarray]], int, str | None]:
    """Patches of one upscaled photo: (units with their pixels, rejected count, skip reason)."""
    h, w = grey_up.shape
    d = min(settings.patch, h, w)
    if d < MIN_PATCH:
        return [], 0, f"too small: {w}x{h} after x{settings.scale} upscaling, patches need {MIN_PATCH}x{MIN_PATCH}"
    # Seeded by the content and the seed only: the same photo gives the same patches anywhere.
    rng = np.random.default_rng([settings.seed, int(sha[:15], 16)])
    tries = settings.per_image * 10
    out: list[tuple[Unit, np.ndarray]] = []
    seen: set[tuple[int, int]] = set()
    rejected = 0
    for _ in range(tries):
        if len(out) >= settings.per_image:
            break
        top = int(rng.integers(0, h - d + 1))
        left = int(rng.integers(0, w - d + 1))
        if (top, left) in seen:
            if (h - d + 1) * (w - d + 1) <= len(seen):
                break  # every position has been tried
            continue
        seen.add((top, left))
        patch = grey_up[top : top + d, left : left + d]
        if not patch_is_textured(patch, settings.criterion):
            rejected += 1
            continue
        box = (top, left, d, d)
        unit = Unit(photo, sha, box, len(out), unit_key(sha, box, settings, est_params))
        out.append((unit, np.ascontiguousarray(patch, dtype=np.float32)))
    reason = None
    if not out:
        reason = f"no textured patch among {len(seen)} tried (criterion {settings.criterion})"
    return out, rejected, reason


def load_photo(path: Path, scale: int) -> tuple[np.ndarray, str]:
    """Grey, upscaled photo and the SHA-256 of its file."""
    from kmsr_ops.image_io import read_image_bytes

    data = path.read_bytes()  # read once: the pixels are those of the bytes hashed
    sha = hashlib.sha256(data).hexdigest()
    pixels = read_image_bytes(data, str(path)).pixels
    grey = to_grey(pixels)
    if scale != 1:
        grey = np.clip(imresize(grey, scale), 0.0, 1.0)
    return grey, sha


# --------------------------------------------------------------------------- partial results
_PROV_FIELDS = ("origin", "source", "method", "params", "box", "seed", "index")


class PartialStore:
    """``OUT.partial/``: one small .npz per finished kernel, each written atomically and fsynced.

    A part that cannot be read back whole (empty or truncated after a crash, another file) is
    never trusted: it is deleted with a warning naming it, and its patch is estimated again.
    """

    def __init__(self, out: Path, *, kernel_size: int | None = None, warn: Callable[[str], None] | None = None):
        self.folder = sidecar_path(out, ".partial")
        self.kernel_size = kernel_size
        self.warn = warn or (lambda msg: None)

    def _read(self, path: Path) -> tuple[np.ndarray, dict] | None:
        """The part at ``path``, or None after discarding it when it is damaged."""
        try:
            with np.load(path, allow_pickle=False) as z:
                kernel = np.array(z["kernel"], dtype=np.float32)
                prov = json.loads(str(z["prov"]))
            k = self.kernel_size
            if kernel.ndim != 2 or (k is not None and kernel.shape != (k, k)) or not np.isfinite(kernel).all():
                raise ValueError(f"a kernel of shape {kernel.shape}")
            if not isinstance(prov, dict) or any(f not in prov for f in _PROV_FIELDS) \
                    or not isinstance(prov["params"], dict) or prov["params"].get("unit") != path.stem:
                raise ValueError("its provenance does not belong to it")
        except Exception as exc:  # noqa: BLE001 - EOFError, BadZipFile, ValueError, KeyError...: all mean damaged
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            why = f"{type(exc).__name__}: {why}" if why else ("the file is empty" if _size(path) == 0 else type(exc).__name__)
            self.warn(f"discarding damaged partial result {path} ({why}); its patch will be estimated again")
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            return None
        return kernel, prov

    def claim(self, fingerprint: dict, existing: str = "resume") -> None:
        """Mark the folder as this run's (``run.json``). The unfinished parts of another run
        (other settings or photos) are refused, or discarded with ``existing="overwrite"``."""
        from .atomic import replace_atomically

        marker = self.folder / _RUN_FILE
        if marker.is_file():
            try:
                made_by = json.loads(marker.read_text())
            except (OSError, ValueError):
                made_by = None
            if made_by != fingerprint:
                if existing != "overwrite":
                    diff = _fingerprint_differences(made_by, fingerprint) if isinstance(made_by, dict) else "unknown settings"
                    raise KmsrError(f"{self.folder} holds the unfinished kernels of another estimate run ({diff})",
                                   hint="rerun that command to finish it, choose another -o, "
                                        "or add --overwrite to discard them")
                self.clear()
        elif existing == "overwrite":
            self.clear()
        self.folder.mkdir(parents=True, exist_ok=True)
        replace_atomically(marker, lambda tmp: Path(tmp).write_text(json.dumps(fingerprint, sort_keys=True)))

    def done_keys(self) -> set[str]:
        """Unit keys of the parts that read back whole; damaged ones are discarded here."""
        if not self.folder.is_dir():
            return set()
        return {p.stem for p in sorted(self.folder.glob("*.npz")) if self._read(p) is not None}

    def save(self, unit: Unit, kernel: np.ndarray, prov: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, kernel=kernel.astype(np.float32), prov=np.array(json.dumps(prov)))
                f.flush()
                os.fsync(f.fileno())  # on disk before it is renamed into place: a crash leaves no empty part
            os.replace(tmp, self.folder / f"{unit.key}.npz")
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def load(self) -> list[tuple[np.ndarray, dict]]:
        if not self.folder.is_dir():
            return []
        return [item for p in sorted(self.folder.glob("*.npz")) if (item := self._read(p)) is not None]

    def clear(self) -> None:
        if self.folder.is_dir():
            shutil.rmtree(self.folder)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# --------------------------------------------------------------------------- estimator workers
_WORKER_EST = None


def _die_with_parent(parent: int) -> None:
    """End this worker when the process that started it is gone, even after a ``kill -9``.

    On Linux the kernel sends SIGKILL at once (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon
    thread also checks once a second that the parent is still ours (an orphan is re-parented).
    """
    import threading
    import time

    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError) as exc:  # no prctl: the thread below still does it
            __import__("logging").getLogger(__name__).debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)
    if os.getppid() != parent:  # the parent died before we got here
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="kmsr-parent-watch", daemon=True).start()


def _init_worker(name: str, options: dict, parent: int | None = None) -> None:
    global _WORKER_EST
    from .plugin_host import get_host

    if parent is not None:
        _die_with_parent(parent)

    _WORKER_EST = get_host().get("estimators", name).create(**options)


def _worker_estimate(patch: np.ndarray, kernel_size: int, seed: int) -> np.ndarray:
    return np.asarray(_WORKER_EST.estimate(patch, kernel_size=kernel_size, rng=np.random.default_rng(seed)))


_DASK_EST: dict = {}

# glibc's mallopt parameter numbers (malloc.h: M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for it on 64-bit (HEAP_MAX_SIZE / 2)


def keep_large_blocks_in_heap() -> bool:
    """Serve blocks of up to 32 MiB from the heap instead of a fresh ``mmap`` each, and keep up to
    64 MiB of freed heap instead of returning it at once (glibc only; the values glibc's own
    self-adjusting thresholds reach on an estimate).

    Dask's nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``, and setting any malloc
    tunable turns glibc's self-adjusting thresholds off: every array over 128 KiB is then mapped
    and unmapped again, and an estimate takes ~960k page faults instead of ~8k (+70 % time,
    measured by ``benchmarks/estimate_scaling.py``). Setting them here fixes it on any cluster,
    including one whose workers kmsr did not start. Returns whether it was applied."""
    import ctypes
    import platform

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False  # macOS, Windows, musl: no such tunables
    libc = ctypes.CDLL(None)  # this process's own symbols, glibc's among them
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD))


def _dask_estimate(name: str, options_json: str, patch: np.ndarray, kernel_size: int, seed: int) -> np.ndarray:
    """One patch on a Dask worker: the estimator is built once per worker process and kept."""
    est = _DASK_EST.get((name, options_json))
    if est is None:
        from .plugin_host import get_host

        keep_large_blocks_in_heap()

        est = _DASK_EST[(name, options_json)] = get_host().get("estimators", name).create(**json.loads(options_json))
    return np.asarray(est.estimate(patch, kernel_size=kernel_size, rng=np.random.default_rng(seed)))


def parse_dask(spec: str) -> tuple[str, int | str]:
    """``local:N`` (a LocalCluster of N worker processes) or a scheduler address (``tcp://host:8786``)."""
    if spec.startswith("local:"):
        n = spec.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise KmsrInputError(f"--dask {spec}: expected local:N with N >= 1 worker processes")
        return "local", int(n)
    if "://" not in spec and ":" not in spec:
        raise KmsrInputError(f"--dask {spec}: expected local:N or a scheduler address such as tcp://host:8786")
    return "address", spec


class DaskPool:
    """A ``concurrent.futures`` executor over a Dask cluster (``Client.get_executor``), with the
    cluster it started, if any; patches are the tasks. A worker that dies mid-task has its task
    rerun elsewhere by the scheduler (up to its ``allowed-failures``)."""

    def __init__(self, spec: str, estimator: str, options: dict):
        try:
            import dask.distributed  # noqa: F401
        except ImportError:
            raise KmsrError("--dask needs dask.distributed, which is not installed",
                           hint="pip install 'kmsr[dask]'") from None
        kind, what = parse_dask(spec)
        self.cluster = None
        try:
            self._connect(kind, what, spec)
        except BaseException:
            if self.cluster is not None:
                self.cluster.close()  # its worker processes must not outlive a failed start
            raise
        self._args = (estimator, json.dumps(options, sort_keys=True))

    def _connect(self, kind: str, what, spec: str) -> None:
        from dask.distributed import Client, LocalCluster

        if kind == "local":
            import dask  # noqa: PLC0415

            # Dask's statistical profiler samples each worker's stacks every 10 ms, in the process
            # that does the estimate: on this 2-core machine it cost a quarter of the task's CPU
            # time under load (benchmarks/results/estimate.md). Nobody reads it here (no dashboard).
            with dask.config.set({"distributed.worker.profile.enabled": False}):
                self.cluster = LocalCluster(n_workers=what, threads_per_worker=1, processes=True,
                                            dashboard_address=None,
                                            env={v: "1" for v in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
                                                                     "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(what, timeout="10s")
            except OSError as exc:
                raise KmsrError(f"--dask {spec}: no Dask scheduler answers there ({exc})") from None
        self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        self.executor = self.client.get_executor(pure=False)

    def submit(self, fn, patch: np.ndarray, kernel_size: int, seed: int) -> cf.Future:
        """Like ``ProcessPoolExecutor.submit(_worker_estimate, ...)``: the same patch on a Dask worker."""
        if fn is not _worker_estimate:
            raise TypeError(f"DaskPool runs _worker_estimate only, not {fn!r}")
        return self.executor.submit(_dask_estimate, *self._args, patch, kernel_size, seed)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def _estimator_options(settings: Settings, device: str) -> dict:
    opts = dict(settings.options)
    opts.setdefault("kernel_size", settings.kernel_size)
    if device != "cpu":
        opts.setdefault("device", device)
    return opts


# --------------------------------------------------------------------------- the run
@dataclass
class EstimateSummary:
    output: str | None
    kernels_written: int = 0
    kernels_resumed: int = 0
    kernels_total: int = 0
    photos: int = 0
    photos_in_shard: int = 0
    photos_skipped: list[dict] = field(default_factory=list)
    patches_rejected: int = 0
    failed_patches: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    shard: str = "0/1"
    estimator: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def why_nothing(self) -> tuple[str, str | None]:
        """Why no kernel came out of the run, with the count per reason, and what to try."""
        from collections import Counter

        if not self.photos_in_shard:
            return (f"shard {self.shard} holds none of the {self.photos} photos",
                    "use fewer shards than photos")
        parts, hints = [], []
        kinds = Counter(s.get("kind", "skipped") for s in self.photos_skipped)
        if kinds:
            n = len(self.photos_skipped)
            counts = ", ".join(f"{c} {kind}" for kind, c in kinds.most_common())
            total = self.photos_in_shard
            which = ("the only photo" if total == 1 else f"all {n} photos") if n == total else f"{n} of {total} photos"
            parts.append(f"{which} skipped ({counts})")
            if "too small" in kinds:
                hints.append(f"patches need {MIN_PATCH}x{MIN_PATCH} pixels after upscaling: larger photos, or a larger --scale")
            if "without a textured patch" in kinds:
                hints.append("--criterion paper accepts flatter patches")
            if "unreadable" in kinds:
                hints.append("check the unreadable files named above")
        if self.failed_patches:
            n = len(self.failed_patches)
            parts.append(f"{n} patch{'es' if n != 1 else ''} failed ({self.failed_patches[0]['reason']})")
            hints.append("see the warnings above")
        return "; ".join(parts) or "no patch was estimated", "; ".join(hints) or None


def _skip_kind(reason: str) -> str:
    """The category of a plan_patches skip reason, for the summary's counts."""
    return "too small" if reason.startswith("too small") else "without a textured patch"


EXISTING = ("resume", "append", "overwrite")
# Root attribute of the kernel sets estimate writes: the run that made them (run_fingerprint).
RUN_ATTR = "estimate_run"
_RUN_FILE = "run.json"
_EXISTING_HINT = ("choose another -o, add --append to add this run's kernels to it, "
                  "or --overwrite to replace it")
_WHAT = {"scale": "--scale", "patch": "--patch", "per_image": "--per-image", "kernel_size": "--kernel-size",
         "estimator": "--estimator", "criterion": "--criterion", "seed": "--seed",
         "estimator_params": "estimator parameters (--option, --device)", "shard": "--shard"}


def run_fingerprint(settings: Settings, est_params: dict, photos: list[Path], shard: tuple[int, int]) -> dict:
    """What makes a run of estimate the same command: its settings and its photo list (absolute
    paths, in order, as bytes so that any file name counts). Rerunning it resumes; anything
    else on the same output is refused unless --append or --overwrite says what to do."""
    listing = hashlib.sha256()
    for p in photos:
        listing.update(os.fsencode(os.path.abspath(p)) + b"\0")
    return {"scale": settings.scale, "patch": settings.patch, "per_image": settings.per_image,
            "kernel_size": settings.kernel_size, "estimator": settings.estimator, "criterion": settings.criterion,
            "seed": settings.seed, "estimator_params": json.loads(json.dumps(est_params, sort_keys=True, default=str)),
            "shard": f"{shard[0]}/{shard[1]}", "photo_count": len(photos), "photos_sha256": listing.hexdigest()}


def _fingerprint_differences(old: dict, new: dict) -> str:
    """``--seed 0, not 1; other photos (3, not 2)``: how the run that made ``old`` differs."""
    parts = []
    for key, what in _WHAT.items():
        if old.get(key) != new.get(key):
            parts.append(f"{what} {old.get(key)!r}, not {new.get(key)!r}" if key != "estimator_params" else what)
    if old.get("photos_sha256") != new.get("photos_sha256"):
        n_old, n_new = old.get("photo_count"), new.get("photo_count")
        parts.append(f"other photos ({n_old}, not {n_new})" if n_old != n_new else "other photos")
    return "; ".join(parts) or "other settings"


def _check_existing_output(out: Path, settings: Settings, fingerprint: dict, existing: str = "resume"
                           ) -> tuple[np.ndarray | None, Provenance | None]:
    if existing == "overwrite" or not (out.exists() or out.is_symlink()):
        return None, None
    link = f" (a link to {os.readlink(out)})" if out.is_symlink() else ""
    ks = KernelSet(out)
    if ks.scale != settings.scale or ks.kernel_size != settings.kernel_size:
        raise KmsrError(
            f"{out} already holds x{ks.scale} kernels of size {ks.kernel_size}, not x{settings.scale} size {settings.kernel_size}",
            hint="write to another -o file, or delete the old one",
        )
    with ks:
        if existing == "resume":
            raw = ks.attrs.get(RUN_ATTR)
            try:
                made_by = json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw is not None else None
            except (TypeError, ValueError):
                made_by = None
            if not isinstance(made_by, dict):
                from collections import Counter

                origins = ", ".join(f"{c} {o}" for o, c in Counter(ks.provenance().origin).most_common())
                raise KmsrError(f"{out}{link} already exists and was not written by this estimate command "
                               f"(it holds {origins} kernels): refusing to add this run's kernels to it",
                               hint=_EXISTING_HINT)
            if made_by != fingerprint:
                raise KmsrError(f"{out}{link} already holds the kernels of another estimate run "
                               f"({_fingerprint_differences(made_by, fingerprint)}): refusing to add this run's to them",
                               hint=_EXISTING_HINT)
        return ks.kernels(), ks.provenance()


def shard_photos(photos: list[Path], shard: tuple[int, int]) -> list[Path]:
    """Shard ``(i, N)``'s share of ``photos``: every N-th photo from the i-th (0-based)."""
    si, sn = shard
    return [p for i, p in enumerate(photos) if i % sn == si]


def run_estimate(host, photos: list[Path], out: Path, settings: Settings, **kwargs) -> EstimateSummary:
    """Estimate kernels for ``photos`` (this shard's share) and write/extend ``out`` atomically.

    Keywords: ``device``, ``workers``, ``shard`` (i, N), ``progress``, ``warn``, ``existing``.
    ``existing`` says what to do with an ``out`` that exists: ``resume`` (default) only when the
    same settings and photos made it (its ``estimate_run`` attribute), else refused; ``append``
    adds this run's kernels to any kernel set of the scale and size; ``overwrite`` replaces it
    (and discards another run's ``OUT.partial/``).
    ``progress`` is a :data:`kmsr_cli.progress.ProgressSink`; it gets ``ProgressEvent``s of stage
    ``estimate.photo`` (after each photo: ``done`` of ``total`` photos of this shard),
    ``estimate.planned`` (a photo's new patches are queued: ``done`` kernels of ``total`` planned
    so far, ``data`` how many this photo added) and ``estimate.kernel`` (after each kernel: ``done``
    of ``total`` planned so far).

    In this process (no ``workers`` > 1 on the CPU, no ``dask``), an estimator with
    ``estimate_batch`` gets a photo's new patches as one stack (``rng`` seeded as the first
    patch's would be); the others get one ``estimate`` call per patch.

    The run holds an exclusive lock on ``OUT.lock`` from start to end: a second run on the same
    output fails at once instead of sharing (and deleting) ``OUT.partial/``.
    """
    settings.validate()
    with OutputLock(out, "kmsr estimate"):
        return _run_estimate_locked(host, photos, out, settings, **kwargs)


def _run_estimate_locked(
    host,
    photos: list[Path],
    out: Path,
    settings: Settings,
    *,
    device: str = "cpu",
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    progress: ProgressSink | None = None,
    warn: Callable[[str], None] | None = None,
    existing: str = "resume",
    dask: str | None = None,
) -> EstimateSummary:
    if existing not in EXISTING:
        raise KmsrInputError(f"existing: expected one of {', '.join(EXISTING)}, found {existing!r}")
    t0 = time.perf_counter()
    backend = host.get("estimators", settings.estimator)
    opts = _estimator_options(settings, device)
    est = backend.create(**opts)
    est_params = est.params() if hasattr(est, "params") else dict(opts)
    mine = shard_photos(photos, shard)
    summary = EstimateSummary(output=str(out), photos=len(photos), photos_in_shard=len(mine),
                              shard=f"{shard[0]}/{shard[1]}", estimator=settings.estimator)

    fingerprint = run_fingerprint(settings, est_params, photos, shard)
    old_kernels, old_prov = _check_existing_output(out, settings, fingerprint, existing)
    store = PartialStore(out, kernel_size=settings.kernel_size, warn=warn)
    store.claim(fingerprint, existing)
    done = store.done_keys() | _units_of(old_prov)

    pool, window = _start_pool(settings, opts, device, workers, dask)
    run = _PatchRun(settings, est, est_params, store, summary, pool, window, progress, warn or (lambda msg: None))
    try:
        for photo in mine:
            run.photo(photo, done)
        run.drain(0)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    parts = store.load()
    kernels, prov = _assemble(old_kernels, old_prov, parts)
    summary.kernels_total = len(kernels)
    if kernels and (parts or old_kernels is None):
        write_kernel_set(out, np.stack(kernels), prov, scale=settings.scale,
                         description=f"kernels estimated by {settings.estimator} from photos (x{settings.scale})",
                         extra_attrs={RUN_ATTR: json.dumps(fingerprint, sort_keys=True)})
    if not kernels:
        summary.output = None  # the caller reports it: summary.why_nothing() says why
    store.clear()
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def _units_of(prov: Provenance | None) -> set[str]:
    """Unit keys recorded in the provenance of the kernels an output already holds."""
    keys: set[str] = set()
    if prov is None:
        return keys
    for p in prov.params:
        try:
            key = json.loads(p).get("unit")
        except json.JSONDecodeError:
            key = None
        if key:
            keys.add(key)
    return keys


def _start_pool(settings: Settings, opts: dict, device: str, workers: int, dask: str | None):
    """The executor patches are submitted to (None: estimated in this process) and how many
    may be in flight at once."""
    if dask is not None:
        if device != "cpu":
            raise KmsrError("--dask runs the estimator on the workers' CPUs; drop --device or use --device cpu")
        pool = DaskPool(dask, settings.estimator, opts)
        return pool, 4 * pool.workers  # enough queued per worker to hide the scheduler's round trips
    if workers > 1 and device == "cpu":
        # Spawned workers, one estimator each; one thread per worker so N workers use N cores.
        for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                      initargs=(settings.estimator, opts, os.getpid()))
        return pool, 2 * workers
    return None, 2 * workers


def _unit_provenance(photo: Path, unit: Unit, sha: str, settings: Settings, est_params: dict) -> dict:
    """The provenance row saved with a patch's kernel."""
    return {
        "origin": "estimated",
        "source": str(photo),
        "box": list(unit.box),
        "method": settings.estimator,
        "params": {"estimator": est_params, "unit": unit.key, "photo_sha256": sha,
                   "scale": settings.scale, "criterion": settings.criterion,
                   # A name that is not UTF-8: its exact bytes (source holds it escaped).
                   **({"source_bytes_hex": raw} if (raw := path_bytes_hex(photo)) else {})},
        "seed": settings.seed,
        "index": unit.index,
    }


def _patch_seed(unit: Unit) -> int:
    """The seed of the ``rng`` a patch is estimated with: a function of its unit key."""
    return int(unit.key[:12], 16)


class _PatchRun:
    """The patches of one run: planned per photo, estimated here or in a pool, saved as they finish."""

    def __init__(self, settings: Settings, est, est_params: dict, store: PartialStore, summary: EstimateSummary,
                 pool, window: int, progress: ProgressSink | None, warn: Callable[[str], None]):
        self.settings, self.est, self.est_params = settings, est, est_params
        self.store, self.summary, self.pool, self.window = store, summary, pool, window
        self.sink, self.warn = progress, warn
        self.counts = {"photos": 0, "planned": 0}
        self.batched = pool is None and callable(getattr(est, "estimate_batch", None))
        self.in_flight: dict[cf.Future, tuple[Unit, dict]] = {}

    def photo(self, photo: Path, done: set[str]) -> None:
        """Plan one photo's patches and estimate (or submit) those not ``done``."""
        settings, summary = self.settings, self.summary
        try:
            grey, sha = load_photo(photo, settings.scale)
        except (ImageReadError, OSError) as exc:
            summary.photos_skipped.append({"photo": str(photo), "reason": str(exc), "kind": "unreadable"})
            self.warn(f"skipping {photo}: {exc}")
            self.photo_done()
            return
        planned, rejected, reason = plan_patches(grey, sha, str(photo), settings, self.est_params)
        summary.patches_rejected += rejected
        if reason:
            summary.photos_skipped.append({"photo": str(photo), "reason": reason, "kind": _skip_kind(reason)})
            self.warn(f"skipping {photo}: {reason}")
        todo = [(u, p) for u, p in planned if u.key not in done]
        summary.kernels_resumed += len(planned) - len(todo)
        self.counts["planned"] += len(todo)
        emit(self.sink, "estimate.planned", done=self.summary.kernels_written, total=self.counts["planned"], data=len(todo))
        jobs = [(unit, patch, _unit_provenance(photo, unit, sha, settings, self.est_params)) for unit, patch in todo]
        if self.pool is not None:
            for unit, patch, prov in jobs:
                fut = self.pool.submit(_worker_estimate, patch, settings.kernel_size, _patch_seed(unit))
                self.in_flight[fut] = (unit, prov)
                self.drain(self.window)
        elif self.batched and jobs:
            self.estimate_batch(photo, jobs)
        else:
            for unit, patch, prov in jobs:
                self.estimate_one(photo, unit, patch, prov)
        self.photo_done()

    def photo_done(self) -> None:
        self.counts["photos"] += 1
        emit(self.sink, "estimate.photo", done=self.counts["photos"], total=self.summary.photos_in_shard)

    def estimate_one(self, photo: Path, unit: Unit, patch: np.ndarray, prov: dict) -> None:
        k = self.settings.kernel_size
        try:
            self.finish(unit, prov, self.est.estimate(patch, kernel_size=k, rng=np.random.default_rng(_patch_seed(unit))))
        except KmsrInputError as exc:
            self.failed(unit, str(exc))
            self.warn(f"{photo} patch {unit.box}: {exc}")

    def estimate_batch(self, photo: Path, jobs: list[tuple[Unit, np.ndarray, dict]]) -> None:
        """A photo's patches (all of one size) in one ``estimate_batch`` call; one patch it
        cannot use sends them all through ``estimate``, which names that patch."""
        rng = np.random.default_rng(_patch_seed(jobs[0][0]))
        try:
            kernels = self.est.estimate_batch(np.stack([patch for _, patch, _ in jobs]),
                                              kernel_size=self.settings.kernel_size, rng=rng)
        except KmsrInputError:
            for unit, patch, prov in jobs:
                self.estimate_one(photo, unit, patch, prov)
            return
        kernels = np.asarray(kernels)
        if kernels.ndim < 1 or kernels.shape[0] != len(jobs):
            for unit, _, _ in jobs:
                self.failed(unit, f"estimate_batch returned an invalid result (shape {kernels.shape} "
                                  f"for {len(jobs)} patches)")
            return
        for (unit, _, prov), kernel in zip(jobs, kernels):
            self.finish(unit, prov, kernel)

    def failed(self, unit: Unit, reason: str) -> None:
        self.summary.failed_patches.append({"photo": unit.photo, "box": list(unit.box), "reason": reason})

    def finish(self, unit: Unit, prov: dict, kernel) -> None:
        size = self.settings.kernel_size
        kernel = np.asarray(kernel, dtype=np.float64)
        if kernel.shape != (size, size) or not np.isfinite(kernel).all() or kernel.sum() <= 0:
            self.failed(unit, f"estimator returned an invalid kernel (shape {kernel.shape})")
            return
        kernel = np.clip(kernel, 0, None)
        kernel /= kernel.sum()
        self.store.save(unit, kernel, prov)
        self.summary.kernels_written += 1
        emit(self.sink, "estimate.kernel", done=self.summary.kernels_written, total=self.counts["planned"])

    def drain(self, block_until: int) -> None:
        """Wait until at most ``block_until`` patches are in flight, saving those that finish."""
        while len(self.in_flight) > block_until:
            finished, _ = cf.wait(list(self.in_flight), return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                unit, prov = self.in_flight.pop(fut)
                try:
                    self.finish(unit, prov, fut.result())
                except Exception as exc:  # noqa: BLE001 - one bad patch must not lose the others; it is reported
                    self.failed(unit, f"{type(exc).__name__}: {exc}")
                    self.warn(f"{unit.photo} patch {unit.box}: estimation failed: {exc}")


def _assemble(old_kernels: np.ndarray | None, old_prov: Provenance | None, parts: list[tuple[np.ndarray, dict]]
              ) -> tuple[list[np.ndarray], Provenance]:
    """What the output already had, plus every finished partial kernel not already in it."""
    kernels: list[np.ndarray] = []
    prov = Provenance()
    have: set[str] = set()
    if old_kernels is not None:
        kernels.extend(old_kernels)
        prov.extend(old_prov)
        for p in old_prov.params:
            have.add(json.loads(p).get("unit", "") if p else "")
    for kernel, row in parts:
        key = row["params"].get("unit")
        if key in have:
            continue
        have.add(key)
        kernels.append(kernel)
        prov.append(origin=row["origin"], source=row["source"], method=row["method"], params=row["params"],
                    box=row["box"], seed=row["seed"], index=row["index"])
    return kernels, prov
