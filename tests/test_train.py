"""`kmsr train`: loss goes down, resume is exact, DDP with 2 CPU processes, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from kmsr_cli.errors import CliError
from kmsr_cli.plugin_host import get_host
from kmsr_cli.train import PatchSampler, TrainConfig, run_training

TINY = {"blocks": 1, "filters": 8}


def _cfg(out, **kw):
    base = dict(backbone="kmsr", degradation="bicubic", scale=2, out=str(out), backbone_options=dict(TINY),
                patch=32, batch=4, epochs=1, iters_per_epoch=4, lr=1e-3, seed=3, val=[], data=[])
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory):
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("hr")
    Image.fromarray(data.astronaut()[:192, :192]).save(folder / "a.png")
    Image.fromarray(data.coffee()[:160, :200]).save(folder / "b.png")
    return folder


def test_training_lowers_the_loss_on_a_fixed_batch(tmp_path):
    # Overfit one fixed batch: the loss after 60 steps is well below the loss at the start.
    host = get_host()
    model = host.get("backbones", "kmsr").create(scale=2, **TINY)
    deg = host.get("degradations", "bicubic").create(scale=2, input="upsampled", channels="rgb")
    from skimage import data

    g = torch.Generator().manual_seed(0)
    imgs = [data.astronaut(), data.coffee()]
    hr = PatchSampler(imgs, 48, g)(8).float() / 255
    x, y = deg(hr, g)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.l1_loss(model(x), y)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.7 * first


def test_resume_is_bit_for_bit(tmp_path, hr_folder):
    host = get_host()
    straight = run_training(_cfg(tmp_path / "a", data=[str(hr_folder)], epochs=2), host)
    assert straight.steps == 8
    run_training(_cfg(tmp_path / "b", data=[str(hr_folder)], epochs=2, max_steps=4), host)  # "killed" after epoch 1
    resumed = run_training(_cfg(tmp_path / "b", data=[str(hr_folder)], epochs=2), host, resume=True)
    assert resumed.steps == 8
    assert resumed.losses == straight.losses[4:]  # the same next-step losses, exactly
    wa = load_file(str(tmp_path / "a" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "model.safetensors"))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_run_folder_contents(tmp_path):
    # Default data (scikit-image CC0 photos) and validation on chelsea.
    res = run_training(_cfg(tmp_path / "r", epochs=1), get_host())
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"model.safetensors", "best.safetensors", "state.pt", "config.json", "log.jsonl"} <= files
    log = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4 and log[-1]["val_psnr_y"] == pytest.approx(res.val_psnr[-1])
    state = torch.load(tmp_path / "r" / "state.pt", weights_only=True)  # tensors only: no pickled objects
    assert int(state["step"]) == 4
    from kmsr_cli.checkpoint import read_model_meta

    meta = read_model_meta(tmp_path / "r" / "model.safetensors")
    assert meta.backbone == "kmsr" and meta.scale == 2 and meta.extra["degradation"]["name"] == "bicubic"


def test_pool_degradation_needs_a_matching_pool(tmp_path, write_set, random_kernels):
    host = get_host()
    with pytest.raises(CliError, match="give --pool"):
        run_training(_cfg(tmp_path / "r", degradation="pool"), host)
    pool = write_set(tmp_path / "p3.h5", random_kernels(5, 9), scale=3)
    with pytest.raises(CliError, match="holds x3 kernels, but --scale is 2"):
        run_training(_cfg(tmp_path / "r", degradation="pool", pool=str(pool)), host)
    pool2 = write_set(tmp_path / "p2.h5", random_kernels(5, 9), scale=2)
    res = run_training(_cfg(tmp_path / "ok", degradation="pool", pool=str(pool2), max_steps=2), host)
    assert res.steps == 2


def test_existing_run_needs_resume_and_same_settings(tmp_path):
    host = get_host()
    run_training(_cfg(tmp_path / "r", max_steps=1), host)
    with pytest.raises(CliError, match="already holds a training run"):
        run_training(_cfg(tmp_path / "r"), host)
    with pytest.raises(CliError, match="started with patch=32"):
        run_training(_cfg(tmp_path / "r", patch=48), host, resume=True)
    with pytest.raises(CliError, match="nothing to resume"):
        run_training(_cfg(tmp_path / "empty"), host, resume=True)


def test_ddp_two_cpu_processes_take_the_single_process_steps(tmp_path):
    """Two gloo processes with global --batch 4 end with the weights of one process with --batch 4.

    Every rank draws the same global batch (same seed, data and augmentation) and trains on rows
    rank::2 of it; DDP averages the two half-batch gradients, which is the full-batch gradient. So
    after 3 Adam steps the weights agree to float rounding. The oracle is the plain single-process
    run; a DDP run whose ranks drew their own patches would differ by about the learning rate.
    """
    opts = ["--backbone", "kmsr", "--option", "blocks=1", "--option", "filters=8", "--degradation", "bicubic",
            "--patch", "32", "--batch", "4", "--epochs", "1", "--iters-per-epoch", "3", "--lr", "1e-3",
            "--seed", "5", "--device", "cpu", "--json"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "kmsr_cli", "train", *opts, "-o", str(tmp_path / "ddp")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMSR_")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr (start):\n{proc.stderr[:3000]}"
    doc = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert doc["steps"] == 3
    cfg = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert cfg["world_size"] == 2
    state = torch.load(tmp_path / "ddp" / "state.pt", weights_only=True)
    assert "g_data_1" in state  # both ranks' generators saved for resume

    single = run_training(_cfg(tmp_path / "one", iters_per_epoch=3, seed=5), get_host())  # the same run, 1 process
    assert single.steps == 3
    w_ddp = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    w_one = load_file(str(tmp_path / "one" / "model.safetensors"))
    torch.manual_seed(5)  # the weights both runs started from
    start = get_host().get("backbones", "kmsr").create(scale=2, **TINY).state_dict()
    assert w_ddp.keys() == w_one.keys() == start.keys()
    moved = max(float((w_one[k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-3  # 3 steps of Adam at lr 1e-3: far more than the tolerance below
    for k in w_one:
        torch.testing.assert_close(w_ddp[k], w_one[k], atol=1e-5, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
    assert doc["val_psnr_y"] == pytest.approx(single.val_psnr, abs=1e-3)  # validated on chelsea by both


def test_resume_refuses_a_pool_rebuilt_at_the_same_path(tmp_path, write_set, random_kernels):
    """--pool compares by content: other kernels written to the same file are another run."""
    import shutil

    host = get_host()
    pool = write_set(tmp_path / "pool.h5", random_kernels(5, 9), scale=2)
    shutil.copyfile(pool, tmp_path / "pool.bak")
    run_training(_cfg(tmp_path / "r", degradation="pool", pool=str(pool), max_steps=2), host)
    write_set(tmp_path / "other.h5", random_kernels(6, 9, seed=1), scale=2).replace(pool)  # rebuilt in place
    with pytest.raises(CliError, match="has changed since the run started"):
        run_training(_cfg(tmp_path / "r", degradation="pool", pool=str(pool), max_steps=3), host, resume=True)
    shutil.copyfile(tmp_path / "pool.bak", pool)  # the original file back: the run continues
    res = run_training(_cfg(tmp_path / "r", degradation="pool", pool=str(pool), max_steps=3), host, resume=True)
    assert res.steps > 2  # continued past the checkpoint
