"""``kmsr adapt``: a model for one camera from a folder of its photos (no HR images of it).

Stages, each leaving an ordinary kmsr artefact in the work folder ``OUT.adapt/`` so that a killed
run continues where it stopped and every other command can read what it made:

1. ``kernels.h5``: blur kernels estimated from the photos (``kmsr estimate``'s machinery, resumed
   from ``kernels.h5.partial/``).
2. ``pool.h5``: the kernel pool. The rule: with at least :data:`GAN_MIN_KERNELS` estimated kernels
   a kernel GAN is trained (``gan.safetensors``) and the pool is the estimated kernels plus as many
   generated ones, *if* the generated kernels pass a distribution check (median width within
   20 % of the estimated kernels' and at least half their spread: a GAN that
   drifted wider or collapsed onto one kernel is not used). Otherwise (few kernels, or a GAN that
   failed the check) the pool is the estimated kernels with their eight flips and quarter turns,
   which a camera's blur has no reason to prefer.
3. ``noise.json``: the camera's noise, measured on flat blocks of the same photos
   (:func:`kmsr_ops.noise.estimate_noise`: a high-pass residual whose white-noise gain is known,
   robust per channel); training draws the noise level per sample between the 10th and the 90th
   percentile of the per-photo levels, so photos taken at different ISO are all covered.
   JPEG photos add JPEG compression (quality 70-95) to a share of the training samples: half the
   fraction of the photos that are JPEG files.
4. ``run/``: ``kmsr train`` fine-tuning ``--base`` (default: the shipped model for the scale) on
   HR images degraded with the pool and the noise (``realistic``; a quarter of the samples from
   MATLAB-bicubic LR, as for the shipped models), for the time budget. The budget counts across
   reruns (``progress.json``); the run resumes from its last checkpoint.
5. The model (``-o``, safetensors with the adaptation in its metadata) and ``OUT.report/index.html``:
   the kernels found, the noise level and before/after crops (base | adapted) on a few photos.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kmsr_ops.errors import KmsrError, KmsrInputError
from kmsr_ops.files import file_sha256

from .atomic import OutputLock, replace_atomically
from .progress import ProgressSink, message_logger

GAN_MIN_KERNELS = 100
JPEG_SUFFIXES = (".jpg", ".jpeg")


@dataclass
class AdaptSettings:
    scale: int = 4
    base: str | None = None  # a model spec; None = the shipped model for the scale
    minutes: float = 30.0
    data: list[str] = field(default_factory=list)  # HR images; [] = train's default (scikit-image CC0 photos)
    patch: int = 512  # estimation patch, in upscaled pixels
    per_image: int = 5
    gan_iters: int = 1000
    train_patch: int | None = None  # HR training patch; None = 48 LR pixels
    batch: int = 16
    lr: float = 1e-4
    steps: int | None = None  # stop after this many training steps in all (None: the budget decides)
    bicubic_fraction: float = 0.25
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    noise_model: bool = True  # False: train without the camera's noise and JPEG (the ablation)


@dataclass
class AdaptResult:
    model: str
    work: str
    report: str
    kernels: int
    pool: dict
    noise: dict
    train: dict
    seconds: float = 0.0


def work_dir_for(out: Path) -> Path:
    return out.with_name(out.name + ".adapt")


def report_dir_for(out: Path) -> Path:
    return out.with_name(out.name + ".report")


def _write_json(path: Path, doc: dict) -> None:
    replace_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n"))


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise KmsrError(f"{path}: unreadable ({exc})", hint=f"delete {path} and rerun: that stage is redone") from None
    return doc if isinstance(doc, dict) else None


def photos_fingerprint(photos: list[Path]) -> str:
    """SHA-256 over the sorted SHA-256s of the photos' bytes (names and order do not matter)."""
    digests = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in photos)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def dihedral(kernels: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The eight flips and quarter turns of each kernel, labelled, the identity first."""
    out = []
    for flip in (False, True):
        for turns in range(4):
            k = np.flip(kernels, axis=2) if flip else kernels
            out.append((f"rot{90 * turns}{'-flip' if flip else ''}", np.rot90(k, turns, axes=(1, 2)).copy()))
    return out


def build_augmented_pool(kernels_path: Path, out: Path) -> dict:
    from .kernelset import KernelSet, Provenance, write_kernel_set

    with KernelSet(kernels_path) as ks:
        k, prov, scale = ks.kernels(), ks.provenance(), ks.scale
    stack, new = [], Provenance()
    for label, ka in dihedral(k):
        stack.append(ka)
        for i in range(len(k)):
            row = prov.row(i)
            new.append(origin=row["origin"], source=row["source"], method=f"{row['method']}+{label}",
                       params=row["params"], box=row["box"], seed=row["seed"], index=row["index"])
    write_kernel_set(out, np.concatenate(stack), new, scale=scale,
                     description=f"{len(k)} estimated kernels of {kernels_path.name} with their 8 flips and quarter turns")
    return {"path": str(out), "rule": "dihedral", "estimated": len(k), "kernels": 8 * len(k)}


def measure_noise(photos: list[Path]) -> dict:
    from kmsr_ops.image_io import read_image
    from kmsr_ops.noise import estimate_noise

    per_photo = []
    for p in photos:
        try:
            est = estimate_noise(np.asarray(read_image(p, channels="RGB").pixels, dtype=np.float64))
        except KmsrInputError as exc:  # ImageReadError too: estimate has warned about that photo already  # too small, or clipped everywhere: that photo is reported, the others count
            per_photo.append({"photo": str(p), "error": str(exc)})
            continue
        per_photo.append({"photo": str(p), "sigma": list(est.sigma), "sigma_mean": est.sigma_mean,
                          "blocks": est.blocks_used})
    levels = np.array([r["sigma_mean"] for r in per_photo if "sigma_mean" in r])
    if levels.size == 0:
        raise KmsrError("the noise could not be measured on any photo: " + per_photo[0]["error"],
                       hint="photos need flat regions of at least 16x16 pixels")
    sig = np.array([r["sigma"] for r in per_photo if "sigma" in r])
    lo, hi = (float(v) for v in np.percentile(levels, [10, 90]))
    return {"method": "flat-block high-pass residual, robust per channel (kmsr_ops.noise)",
            "sigma_per_channel": [float(v) for v in np.median(sig, axis=0)], "sigma_median": float(np.median(levels)),
            "train_noise_min": lo, "train_noise_max": max(hi, lo), "photos_measured": int(levels.size),
            "jpeg_photos": sum(p.suffix.lower() in JPEG_SUFFIXES for p in photos), "per_photo": per_photo}


def _lr_crop(px: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left of the ``side`` square with the most gradient energy (where SR differences show)."""
    g = px.mean(axis=2)
    e = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    h, w = e.shape
    if h < side or w < side:
        return 0, 0
    ii = np.pad(e.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, side // 4)
    best, at = -1.0, (0, 0)
    for y in range(0, h - side + 1, step):
        for x in range(0, w - side + 1, step):
            s = ii[y + side, x + side] - ii[y, x + side] - ii[y + side, x] + ii[y, x]
            if s > best:
                best, at = s, (y, x)
    return at


def write_report(folder: Path, *, photos: list[Path], base_spec: str, model_path: Path, pool_path: Path,
                 noise: dict, pool_info: dict, scale: int, host, device: str, n_photos: int = 3, side: int = 64) -> Path:
    """``folder/index.html`` (images embedded) and the same panels as PNGs beside it."""
    from kmsr_ops.image_io import read_image, write_png

    from .gan import kernel_grid
    from .infer import super_resolve
    from .kernelset import KernelSet
    from .models import resolve_model
    from .report import HtmlReport, labelled_strip

    folder.mkdir(parents=True, exist_ok=True)
    with KernelSet(pool_path) as ks:
        k = ks.kernels()
        est = np.array([o == "estimated" for o in ks.provenance().origin])
    shown = k[: min(len(k), 32)] if str(pool_info.get("rule")).startswith("dihedral") else np.concatenate([k[est][:16], k[~est][:16]])
    grid = kernel_grid(shown)
    write_png(folder / "kernels.png", grid)
    base = resolve_model(base_spec, scale=scale, host=host)
    adapted = resolve_model(str(model_path), scale=scale, host=host)
    crops = []
    for p in photos:
        if len(crops) == n_photos:
            break
        try:
            px = np.asarray(read_image(p, channels="RGB").pixels, dtype=np.float64)
        except KmsrInputError:  # unreadable: estimate and the noise stage have said so
            continue
        y, x = _lr_crop(px, side)
        lr = px[y:y + side, x:x + side]
        near = np.repeat(np.repeat(np.rint(lr * 255).astype(np.uint8), scale, 0), scale, 1)
        a = super_resolve(base, lr, device=device)
        b = super_resolve(adapted, lr, device=device)
        panel = labelled_strip([(f"LR (nearest x{scale})", "", near), ("base", "", a), ("adapted", "", b)])
        name = f"crop_{len(crops)}_{p.stem}.png"
        write_png(folder / name, panel)
        crops.append((p.name, name, panel))
    sig = ", ".join(f"{c}: {v * 255:.2f}" for c, v in zip("RGB", noise["sigma_per_channel"]))
    rule = pool_info.get("rule")
    check = pool_info.get("gan_check", {}).get("reason")
    rep = HtmlReport(f"kmsr adapt: {model_path.name} (x{scale})")
    rep.facts([("photos", len(photos)), ("estimated kernels", pool_info.get("estimated")),
               ("pool", f"{pool_info.get('kernels')} kernels, rule: {rule}" + (f" ({check})" if check else "")),
               ("noise sigma (8-bit levels)",
                f"{sig}; trained on {noise['train_noise_min'] * 255:.2f} to {noise['train_noise_max'] * 255:.2f}"),
               ("base model", base_spec)])
    rep.heading("Kernels" + (" (estimated, then generated)" if rule == "gan" else ""))
    rep.image(grid, "the camera's kernels as the pool holds them", alt="kernels")
    rep.heading("Before / after")
    for photo, name, panel in crops:
        rep.image(panel, f"{photo}: LR (nearest) | base model | adapted model", alt=name)
    return rep.write(folder / "index.html")


def run_adapt(photos: list[Path], out: Path, settings: AdaptSettings, *, host, say: Callable[[str], None] | None = None,
              warn: Callable[[str], None] | None = None, progress: ProgressSink | None = None) -> AdaptResult:
    """All the stages; each one done already (its artefact in the work folder) is skipped.

    ``progress`` gets every log line as a ``ProgressEvent`` of stage ``adapt.log`` (``message``)
    and every warning as ``adapt.warning``; ``say``/``warn`` are the older keywords for the same."""
    from .checkpoint import read_model_meta
    from .models import shipped_model_path

    warn = message_logger("adapt.warning", progress, warn or say)  # without warn=, warnings go to say as before
    say = message_logger("adapt.log", progress, say)
    t0 = time.perf_counter()
    s = settings
    if s.minutes <= 0 and s.steps is None:
        raise KmsrError("--minutes: expected a positive training budget")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise KmsrError(f"-o {out}: expected a .safetensors model path")
    base = os.path.abspath(s.base or str(shipped_model_path("kmsr", s.scale)))
    if not Path(base).is_file():
        raise KmsrError(f"--base {s.base or base}: no such model file",
                       hint=f"the shipped models are x2 and x4; pass --base MODEL.safetensors for x{s.scale}")
    base_meta = read_model_meta(base)
    if base_meta.scale not in (None, s.scale):
        raise KmsrError(f"--base {base}: the model is x{base_meta.scale}, but --scale is {s.scale}")
    photos = sorted(photos, key=lambda p: os.path.abspath(p))  # the order a folder or glob gave does not matter
    fingerprint = photos_fingerprint(photos)
    work = work_dir_for(out)
    work.mkdir(parents=True, exist_ok=True)
    with OutputLock(work, "kmsr adapt"):
        return _run_adapt_locked(photos, out, s, work=work, base=base, base_meta=base_meta, fingerprint=fingerprint,
                                 host=host, say=say, warn=warn, t0=t0)


def _run_adapt_locked(photos, out, s, *, work, base, base_meta, fingerprint, host, say, warn, t0) -> AdaptResult:
    from .checkpoint import save_model

    state_path = work / "progress.json"
    state = _check_progress(state_path, work, s, base=base, fingerprint=fingerprint)
    kernels, n_est = _stage_kernels(photos, work, s, host=host, say=say, warn=warn)
    pool, pool_info = _stage_pool(work, kernels, n_est, s, host=host, say=say, warn=warn)
    noise = _stage_noise(photos, work, say)
    run = work / "run"
    deg = degradation_options(noise, len(photos), s.bicubic_fraction, noise_model=s.noise_model)
    if not s.noise_model:
        say("  --no-noise-model: the training LR images get the camera's blur only (no noise, no JPEG)")
    train_summary = _stage_train(run, state, state_path, s, base=base, base_meta=base_meta, pool=pool, deg=deg,
                                 host=host, say=say)
    # 5. the model and the report
    say(f"[5/5] the model -> {out}, the report -> {report_dir_for(out) / 'index.html'}")
    module, meta = _trained_model(run, host=host)
    adapt_meta = {"photos": len(photos), "photos_sha256": fingerprint, "kernels_estimated": n_est,
                  "pool": {k: v for k, v in pool_info.items() if k != "path"},
                  "noise": {k: v for k, v in noise.items() if k != "per_photo"},
                  "degradation_options": deg, "base": base,
                  "base_sha256": hashlib.sha256(Path(base).read_bytes()).hexdigest(),
                  "noise_model": s.noise_model, "budget_minutes": s.minutes, "train_steps": train_summary["steps"],
                  "train_seconds": round(float(train_summary["seconds"]), 1)}
    save_model(out, module, backbone=meta.backbone, scale=meta.scale, options=meta.options,
               extra={**meta.extra, "adapt": adapt_meta})
    report = write_report(report_dir_for(out), photos=photos, base_spec=base, model_path=out, pool_path=pool,
                          noise=noise, pool_info=pool_info, scale=s.scale, host=host, device=s.device)
    return AdaptResult(model=str(out), work=str(work), report=str(report), kernels=n_est, pool=pool_info,
                       noise={k: v for k, v in noise.items() if k != "per_photo"}, train=train_summary,
                       seconds=round(time.perf_counter() - t0, 1))


def _check_progress(state_path: Path, work: Path, s: AdaptSettings, *, base: str, fingerprint: str) -> dict:
    """The work folder's ``progress.json``, checked against this run's photos, base and estimation
    settings, then updated with them (a rerun with other inputs is refused, not mixed in)."""
    state = _read_json(state_path) or {}
    again = f"use another -o, or delete {work} to start over"
    if state and state.get("photos_sha256") != fingerprint:
        raise KmsrError(f"{work} was made from other photos", hint=again)
    if state and state.get("base") != base:
        raise KmsrError(f"{work} fine-tunes {state.get('base')}, not {base}", hint=again)
    estimation = {"scale": s.scale, "patch": s.patch, "per_image": s.per_image, "seed": s.seed}
    if state.get("estimation", estimation) != estimation:
        was = state["estimation"]
        raise KmsrError(f"{work} estimated its kernels with --patch {was.get('patch')} --per-image {was.get('per_image')} "
                       f"--seed {was.get('seed')}, not --patch {s.patch} --per-image {s.per_image} --seed {s.seed}",
                       hint=f"rerun with those, or delete {work / 'kernels.h5'} and {work / 'pool.h5'} to estimate again")
    if state and state.get("noise_model", True) != s.noise_model:
        made = "with" if state.get("noise_model", True) else "without"
        raise KmsrError(f"{work} was trained {made} the camera's noise model; this run asks for the other",
                        hint=f"{'add' if made == 'without' else 'drop'} --no-noise-model, or use another -o")
    state.update({"photos_sha256": fingerprint, "base": base, "scale": s.scale, "estimation": estimation,
                  "noise_model": s.noise_model})
    state.setdefault("train_seconds", 0.0)
    _write_json(state_path, state)
    return state


def _stage_kernels(photos: list[Path], work: Path, s: AdaptSettings, *, host, say, warn) -> tuple[Path, int]:
    """1. ``kernels.h5`` (resumed from an earlier run's partial file); returns it and its kernel count."""
    from .estimate import Settings, run_estimate
    from .kernelset import KernelSet

    kernels = work / "kernels.h5"
    say(f"[1/5] blur kernels from {len(photos)} photos (x{s.scale}, {s.per_image} patches each) -> {kernels}")
    est_settings = Settings(scale=s.scale, patch=s.patch, per_image=s.per_image, seed=s.seed)
    photos_read = [0]

    def on_progress(event) -> None:
        if event.stage == "estimate.photo":
            photos_read[0] = event.done
        elif event.stage == "estimate.kernel":
            say(f"  kernel {event.done} of {event.total} planned ({photos_read[0]} of {len(photos)} photos read)")

    summary = run_estimate(host, photos, kernels, est_settings, device=s.device, warn=warn, progress=on_progress)
    if summary.kernels_total == 0:
        why, hint = summary.why_nothing()
        raise KmsrError(f"no kernel could be estimated: {why}", hint=hint)
    with KernelSet(kernels) as ks:
        n_est = len(ks.kernels())
    say(f"  {n_est} kernels ({summary.kernels_resumed} from an earlier run)")
    return kernels, n_est


def _stage_pool(work: Path, kernels: Path, n_est: int, s: AdaptSettings, *, host, say, warn) -> tuple[Path, dict]:
    """2. ``pool.h5`` and its record ``pool.json``: reused while both still match ``kernels``."""
    pool = work / "pool.h5"
    pool_info = _read_json(work / "pool.json")
    kernels_sha = file_sha256(kernels)
    if pool_info is not None and (pool_info.get("kernels_sha256") != kernels_sha or ("gan_check" in pool_info and pool_info.get("gan_iters") != s.gan_iters)
                                  or not pool.exists() or pool_info.get("pool_sha256") != file_sha256(pool)):
        if (work / "run" / "state.pt").exists():
            raise KmsrError(f"{pool} no longer matches {kernels} (or its record is gone), and {work / 'run'} trained on it",
                           hint=f"delete {work / 'run'} and {work / 'progress.json'} to train again on a new pool")
        pool_info = None
    if pool_info is None:
        pool_info = _build_pool(work, kernels, pool, n_est, s, host=host, say=say, warn=warn)
        pool_info.update({"kernels_sha256": kernels_sha, "gan_iters": s.gan_iters, "pool_sha256": file_sha256(pool)})
        _write_json(work / "pool.json", pool_info)
    else:
        say(f"[2/5] pool from an earlier run: {pool} ({pool_info['kernels']} kernels, {pool_info['rule']})")
    return pool, pool_info


def _build_pool(work: Path, kernels: Path, pool: Path, n_est: int, s: AdaptSettings, *, host, say, warn) -> dict:
    """The pool rule (module docstring, stage 2): a kernel GAN from :data:`GAN_MIN_KERNELS` kernels on,
    used only if its samples pass the check; otherwise the estimated kernels' flips and turns."""
    from .gan import state_path_for, train_gan
    from .pool import build_pool

    if n_est < GAN_MIN_KERNELS:
        say(f"[2/5] {n_est} kernels < {GAN_MIN_KERNELS}: pool = the estimated kernels with their 8 flips and quarter turns")
        return build_augmented_pool(kernels, pool)
    gan = work / "gan.safetensors"
    say(f"[2/5] {n_est} kernels >= {GAN_MIN_KERNELS}: a kernel GAN ({s.gan_iters} iterations) -> {gan}")
    gan_run = train_gan(host, [kernels], gan, iters=s.gan_iters, resume=state_path_for(gan).exists(),
                        settings={"width_mult": 0.0625, "lr": 1e-3, "seed": s.seed}, device=s.device,
                        checkpoint_every=100, log=say)
    check = gan_run["sample_check"]  # its samples, the same ones the pool below draws (same seed, count)
    if check["passed"]:
        info = build_pool(kernels, pool, generator_checkpoint=gan, host=host, n_estimated=n_est,
                          n_generated=n_est, seed=s.seed, device=s.device, warn=warn)
        pool_info = {"path": str(pool), "rule": "gan", "estimated": n_est, "kernels": int(info.get("count", 2 * n_est))}
    else:
        warn(f"the kernel GAN's samples do not match the estimated kernels ({check['reason']}); "
             "the pool is the estimated kernels with flips and turns instead")
        pool_info = {**build_augmented_pool(kernels, pool), "rule": "dihedral (GAN rejected)"}
    pool_info["gan_check"] = check
    return pool_info


def _stage_noise(photos: list[Path], work: Path, say) -> dict:
    """3. ``noise.json``: the camera's noise, measured once."""
    noise = _read_json(work / "noise.json")
    if noise is None:
        say("[3/5] the camera's noise, from flat regions of the photos")
        noise = measure_noise(photos)
        _write_json(work / "noise.json", noise)
    say(f"  noise sigma {noise['sigma_median'] * 255:.2f} (8-bit levels), trained on "
        f"{noise['train_noise_min'] * 255:.2f}-{noise['train_noise_max'] * 255:.2f}; "
        f"{noise['jpeg_photos']} of {len(photos)} photos are JPEG")
    return noise


def degradation_options(noise: dict, n_photos: int, bicubic_fraction: float, *, noise_model: bool = True) -> dict:
    """The ``realistic`` degradation's options for the camera: its noise range, and JPEG compression
    (quality 70-95) on half the fraction of the photos that are JPEG files. Without the noise model
    (``noise_model=False``, the ablation) the training LR images get the camera's blur only."""
    if not noise_model:
        return {"noise_min": 0.0, "noise_max": 0.0, "jpeg_prob": 0.0, "jpeg_min": 70, "jpeg_max": 95,
                "bicubic_fraction": bicubic_fraction}
    jpeg_fraction = noise["jpeg_photos"] / n_photos
    return {"noise_min": noise["train_noise_min"], "noise_max": noise["train_noise_max"],
            "jpeg_prob": round(0.5 * jpeg_fraction, 4), "jpeg_min": 70, "jpeg_max": 95, "bicubic_fraction": bicubic_fraction}


def _stage_train(run: Path, state: dict, state_path: Path, s: AdaptSettings, *, base: str, base_meta, pool: Path,
                 deg: dict, host, say) -> dict:
    """4. Fine-tune ``base`` in ``run/`` for what is left of the budget (counted across reruns in
    ``state``, saved at each epoch's end); returns the training summary."""
    from .train import run_training

    budget = s.minutes * 60.0
    left = budget - float(state["train_seconds"]) if s.minutes > 0 else None  # None: only --steps limits it
    resume = (run / "state.pt").exists()
    steps_done = 0
    if resume:
        from .checkpoint import load_training_state

        steps_done = int(load_training_state(run / "state.pt")["step"])
    steps_left = None if s.steps is None else s.steps - steps_done
    if not ((left is None or left > 1) and (steps_left is None or steps_left > 0)):
        say(f"[4/5] training budget spent in an earlier run ({state['train_seconds'] / 60:.1f} minutes)")
        return {"steps": steps_done, "seconds": state["train_seconds"]}
    more = f"{left / 60:.1f} more minutes" if left is not None else f"{steps_left} more steps"
    say(f"[4/5] fine-tuning {base} for {more}{' (resumed at step ' + str(steps_done) + ')' if resume else ''} -> {run}")
    cfg = _train_config(run, s, base=base, base_meta=base_meta, pool=pool, deg=deg, steps_left=steps_left, left=left)
    t_run = time.perf_counter()
    last = [t_run]

    def on_step(info: dict) -> None:
        now = time.perf_counter()
        if now - last[0] >= 30 or info.get("step", 0) % 25 == 0:
            last[0] = now
            spent = float(state["train_seconds"]) + now - t_run
            say(f"  step {info.get('step')}: loss {info.get('loss', float('nan')):.4f}, "
                f"{spent / 60:.1f} of {s.minutes:g} minutes")

    def on_epoch(info: dict) -> None:  # at each epoch's end, just before its checkpoint: the time so far
        _write_json(state_path, {**state, "train_seconds": float(state["train_seconds"]) + time.perf_counter() - t_run})

    result = run_training(cfg, host, on_step=on_step, on_epoch=on_epoch, resume=resume, log=say)
    state["train_seconds"] = float(state["train_seconds"]) + time.perf_counter() - t_run
    _write_json(state_path, state)
    return {"steps": result.steps, "seconds": state["train_seconds"], "final_loss": result.final_loss}


def _train_config(run: Path, s: AdaptSettings, *, base: str, base_meta, pool: Path, deg: dict,
                  steps_left: int | None, left: float | None):
    """``kmsr train``'s settings for the fine-tuning: ``realistic`` degradation with the pool and ``deg``."""
    from .train import TrainConfig

    return TrainConfig(backbone=base_meta.backbone, degradation="realistic", scale=s.scale, out=str(run),
                       backbone_options=dict(base_meta.options), degradation_options=deg, pool=str(pool),
                       data=list(s.data), patch=s.train_patch or 48 * s.scale, batch=s.batch, epochs=100000,
                       iters_per_epoch=25, lr=s.lr, lr_step_epochs=1000000, lr_gamma=0.5, loss="l1", seed=s.seed,
                       device=s.device, amp=s.amp, max_steps=steps_left, time_budget=left, init=base)


def _trained_model(run: Path, *, host):
    """The network ``run/`` trained and its metadata; an error when no checkpoint was written yet."""
    from .checkpoint import load_model

    if not (run / "model.safetensors").is_file():
        raise KmsrError(f"{run} holds no trained model: the budget was spent before a checkpoint was written",
                       hint="rerun with a larger --minutes (counted across reruns), or with --steps N")
    return load_model(run / "model.safetensors", host=host)
