"""``kmsr adapt``: kernels, pool rule, noise, fine-tuning, model metadata, report, resume.

Oracles: the dihedral pool is checked against numpy's own rotations and flips of the estimated
kernels; the pool rule's GAN check against analytic Gaussian kernels of known widths; the noise
level against Gaussian noise of a known sigma added to a nearly noise-free photo.
"""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from conftest import cli_in_process

from kmsr_cli import adapt as adapt_mod
from kmsr_cli.kernelset import KernelSet
from kmsr_cli.pool import width_check

SCALE = 2


def gaussian(k: int, sx: float, sy: float) -> np.ndarray:
    r = np.arange(k) - (k - 1) / 2
    g = np.exp(-r[None, :] ** 2 / (2 * sx * sx) - r[:, None] ** 2 / (2 * sy * sy))
    return g / g.sum()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two real CC0 photos, area-downscaled x2 (nearly noise free), then noise of sigma 3/255 added."""
    from kmsr_cli.sample_data import load_cc0
    from kmsr_ops.image_io import write_png

    d = tmp_path_factory.mktemp("camera")
    rng = np.random.default_rng(7)
    for name in ("camera", "coffee"):
        a = load_cc0(name).astype(np.float64) / 255
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
        a = a[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
        a = np.clip(a + rng.normal(0, 3 / 255, a.shape), 0, 1)
        write_png(d / f"{name}.png", np.rint(a * 255).astype(np.uint8))
    return d


ARGS = ("--scale", str(SCALE), "--patch", "128", "--per-image", "1", "--batch", "2", "--train-patch", "32",
        "--minutes", "5", "--device", "cpu")


def run(capsys, photos, out, *extra):
    return cli_in_process(capsys, "adapt", str(photos), "-o", str(out), *ARGS, *extra)


def test_end_to_end_then_resume(capsys, photos, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "cam_x2.safetensors"
    code, stdout, stderr = run(capsys, photos, out, "--steps", "2", "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    work = out.with_name(out.name + ".adapt")
    assert out.is_file() and doc["model"] == str(out)
    # ordinary artefacts: a kernel set, a pool, a run folder
    with KernelSet(work / "kernels.h5") as ks:
        est = ks.kernels()
    with KernelSet(work / "pool.h5") as ps:
        pool = ps.kernels()
        assert ps.scale == SCALE
    n = len(est)
    assert n == 2 and doc["kernels"] == n
    assert doc["pool"]["rule"] == "dihedral" and len(pool) == 8 * n
    expected = [np.rot90(np.flip(est, 2) if f else est, t, axes=(1, 2)) for f in (0, 1) for t in range(4)]
    np.testing.assert_array_equal(pool, np.concatenate(expected))
    assert (work / "run" / "state.pt").is_file()
    # metadata
    with safe_open(str(out), "pt") as f:
        meta = json.loads(f.metadata()["kmsr"])
    a = meta["extra"]["adapt"]
    assert a["kernels_estimated"] == n and a["train_steps"] == 2 and a["photos"] == 2
    assert a["base"].endswith("kmsr_x2.safetensors") and len(a["base_sha256"]) == 64
    assert a["degradation_options"]["jpeg_prob"] == 0.0  # PNG photos
    lo, hi = a["degradation_options"]["noise_min"], a["degradation_options"]["noise_max"]
    assert lo <= hi and 1.5 / 255 < a["noise"]["sigma_median"] < 5 / 255  # 3/255 added to a nearly clean photo
    # report: every embedded image decodes
    html = (out.with_name(out.name + ".report") / "index.html").read_text()
    from PIL import Image

    imgs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(imgs) == 3  # kernels + one crop per photo
    sizes = [Image.open(io.BytesIO(base64.b64decode(b))).size for b in imgs]
    # LR nearest | base | adapted, under a label band
    assert sizes[1][0] == 3 * 64 * SCALE and 64 * SCALE + 8 <= sizes[1][1] <= 64 * SCALE + 40
    # the other commands read what adapt made
    code, stdout, stderr = cli_in_process(capsys, "pool", "show", str(work / "pool.h5"), "--json")
    assert code == 0 and json.loads(stdout)["count"] == 8 * n
    lr = photos / "camera.png"
    code, _, stderr = cli_in_process(capsys, "sr", str(lr), "-o", str(tmp_path / "sr.png"), "--model", str(out), "--device", "cpu")
    assert code == 0, stderr
    # rerun with a larger step count: nothing re-estimated, training continues from step 2
    mtime = (work / "kernels.h5").stat().st_mtime_ns
    code, stdout, stderr = run(capsys, photos, out, "--steps", "3", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["train"]["steps"] == 3
    assert "resumed at step 2" in " ".join(stderr.split())  # rich wraps long lines
    assert (work / "kernels.h5").stat().st_mtime_ns == mtime
    # and with the same count, training is not repeated
    code, stdout, stderr = run(capsys, photos, out, "--steps", "3", "--json")
    assert code == 0 and json.loads(stdout)["train"]["steps"] == 3
    # the budget counts across reruns: spent already, no more steps whatever --steps says
    spent = json.loads((work / "progress.json").read_text())["train_seconds"]
    assert spent > 0
    code, stdout, stderr = cli_in_process(capsys, "adapt", str(photos), "-o", str(out), *ARGS[:-4],
                                          "--minutes", str(spent / 60 / 2), "--device", "cpu", "--steps", "10", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["train"]["steps"] == 3 and "budget spent" in " ".join(stderr.split())
    # --minutes 0: only --steps limits the run
    code, stdout, stderr = cli_in_process(capsys, "adapt", str(photos), "-o", str(out), *ARGS[:-4],
                                          "--minutes", "0", "--device", "cpu", "--steps", "4", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["train"]["steps"] == 4
    # other estimation settings than the work folder's: refused with what it was made with
    code, _, stderr = run(capsys, photos, out, "--per-image", "2")
    assert code == 1 and "--per-image 1" in " ".join(stderr.split())


def test_width_check_against_known_widths():
    rng = np.random.default_rng(0)
    widths = rng.uniform(1.0, 2.5, 60)
    est = np.stack([gaussian(25, w, w * rng.uniform(0.8, 1.2)) for w in widths])
    same = np.stack([gaussian(25, w, w) for w in rng.uniform(1.0, 2.5, 60)])
    wider = np.stack([gaussian(25, 1.5 * w, 1.5 * w) for w in rng.uniform(1.0, 2.5, 60)])
    collapsed = np.stack([gaussian(25, 1.75, 1.75)] * 60)
    assert width_check(est, same)["passed"]
    w = width_check(est, wider)
    assert not w["passed"] and "drift" in w["reason"]
    assert w["width_median_generated"] == pytest.approx(1.5 * w["width_median_estimated"], rel=0.15)
    c = width_check(est, collapsed)
    assert not c["passed"] and "spread" in c["reason"]


@pytest.mark.parametrize("passes", [True, False])
def test_gan_pool_follows_the_sample_check(capsys, photos, tmp_path, monkeypatch, passes):
    """With the GAN threshold lowered, a 2-iteration GAN runs; its check (forced either way) decides the pool."""
    import kmsr_cli.pool as pool_mod

    real = pool_mod.width_check
    monkeypatch.setattr(adapt_mod, "GAN_MIN_KERNELS", 2)
    monkeypatch.setattr(pool_mod, "width_check",
                        lambda a, b, **k: {**real(a, b, **k), "passed": passes, "reason": "" if passes else "forced"})
    out = tmp_path / "cam_x2.safetensors"
    code, stdout, stderr = run(capsys, photos, out, "--steps", "1", "--gan-iters", "2", "--json")
    assert code == 0, stderr
    pool = json.loads(stdout)["pool"]
    assert (out.with_name(out.name + ".adapt") / "gan.safetensors").is_file()
    with KernelSet(out.with_name(out.name + ".adapt") / "pool.h5") as ps:
        origins = set(ps.provenance().origin)
    if passes:
        assert pool["rule"] == "gan" and pool["kernels"] == 4 and origins == {"estimated", "generated"}
    else:
        assert pool["rule"] == "dihedral (GAN rejected)" and "do not match" in " ".join(stderr.split())
        assert origins == {"estimated"}
        assert pool["kernels"] == 16


@pytest.mark.parametrize("extra, match", [
    (("-o", "model.pt"), "expected a .safetensors model path"),
    (("--base", "nope.safetensors"), "no such model file"),
])
def test_bad_arguments(capsys, photos, tmp_path, extra, match):
    args = ["adapt", str(photos), "-o", str(tmp_path / "m.safetensors"), *ARGS, *extra]
    code, _, stderr = cli_in_process(capsys, *args)
    assert code == 1 and match in stderr
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "m.safetensors.adapt").exists()


def test_base_of_another_scale(capsys, photos, tmp_path):
    from kmsr_cli.models import shipped_model_path

    code, _, stderr = cli_in_process(capsys, "adapt", str(photos), "-o", str(tmp_path / "m.safetensors"), *ARGS,
                                     "--base", str(shipped_model_path("kmsr", 4)))
    assert code == 1 and "the model is x4, but --scale is 2" in stderr


def test_work_folder_of_other_photos_is_refused(capsys, photos, tmp_path):
    out = tmp_path / "m.safetensors"
    work = out.with_name(out.name + ".adapt")
    work.mkdir()
    (work / "progress.json").write_text(json.dumps({"photos_sha256": "0" * 64, "base": "x"}))
    code, _, stderr = cli_in_process(capsys, "adapt", str(photos), "-o", str(out), *ARGS)
    assert code == 1 and "was made from other photos" in stderr


@pytest.mark.slow
def test_sigkill_during_training_then_rerun_continues(photos, tmp_path):
    """`kill -9` while adapt is training: the rerun keeps the kernels, pool and noise it had
    and resumes training from the last checkpoint instead of starting again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "cam_x2.safetensors"
    work = out.with_name(out.name + ".adapt")
    cmd = [sys.executable, "-m", "kmsr_cli", "adapt", str(photos), "-o", str(out), *ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*cmd, "--steps", "100000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not (work / "run" / "state.pt").exists():  # the first training checkpoint
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no training checkpoint within 10 minutes"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    stamps = {n: (work / n).stat().st_mtime_ns for n in ("kernels.h5", "pool.h5", "noise.json")}
    import torch

    done = int(torch.load(work / "run" / "state.pt", weights_only=True)["step"])
    assert done >= 25  # at least one epoch of 25 steps was checkpointed
    rerun = subprocess.run([*cmd, "--steps", str(done + 10), "--json"], capture_output=True, text=True, env=env,
                           timeout=900, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed at step {done}" in " ".join(rerun.stderr.split())
    assert json.loads(rerun.stdout)["train"]["steps"] == done + 10
    assert {n: (work / n).stat().st_mtime_ns for n in stamps} == stamps  # nothing estimated or pooled again
    assert out.is_file() and not list(tmp_path.glob(".kmsr-*"))  # the model written, no temporary files left


def test_without_the_noise_model(capsys, photos, tmp_path):
    """--no-noise-model (the ablation): the noise is still measured (3/255 was added to the photos),
    but the training degradation has no noise and no JPEG, and the card says so."""
    from safetensors import safe_open

    out = tmp_path / "blur_only_x2.safetensors"
    code, stdout, stderr = run(capsys, photos, out, "--steps", "1", "--no-noise-model", "--json")
    assert code == 0, stderr
    with safe_open(str(out), "pt") as f:
        a = json.loads(f.metadata()["kmsr"])["extra"]["adapt"]
    assert a["noise_model"] is False
    deg = a["degradation_options"]
    assert deg["noise_min"] == deg["noise_max"] == 0.0 and deg["jpeg_prob"] == 0.0
    assert 1.5 / 255 < a["noise"]["sigma_median"] < 5 / 255
    config = json.loads((out.with_name(out.name + ".adapt") / "run" / "config.json").read_text())
    assert config["degradation_options"]["noise_max"] == 0.0
    # the same work folder with the noise model: refused, not mixed into the blur-only run
    code, _, stderr = run(capsys, photos, out, "--steps", "2")
    flat = " ".join(stderr.split())
    assert code == 1 and "trained without the camera's noise model" in flat and "add --no-noise-model" in flat, stderr
