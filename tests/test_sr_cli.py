"""`kmsr sr` from the command line: batches, bad files, bit depth, alpha, pipes."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
from conftest import cli_env
from PIL import Image

from kmsr_ops.resize import imresize


def _png(path, arr, mode=None):
    Image.fromarray(arr, mode=mode).save(path)
    return path


def test_batch_goes_on_past_a_corrupt_file(run_kmsr, tmp_path):
    rng = np.random.default_rng(0)
    _png(tmp_path / "a.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _png(tmp_path / "c.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    r = run_kmsr("sr", "a.png", "broken.png", "c.png", "-o", "out", "--model", "bicubic", "--scale", "2")
    assert r.returncode == 1
    assert "broken.png" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x2.png", "c_x2.png"]
    assert Image.open(tmp_path / "out" / "a_x2.png").size == (48, 40)


def test_sixteen_bit_grey_stays_sixteen_bit_and_is_matlab_bicubic(run_kmsr, tmp_path):
    rng = np.random.default_rng(1)
    g16 = rng.integers(0, 65536, (15, 13), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g.png")
    r = run_kmsr("sr", "g.png", "-o", "g_x3.png", "--model", "bicubic", "--scale", "3")
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(tmp_path / "g_x3.png")).astype(np.int64)
    assert out.shape == (45, 39)
    want = np.rint(np.clip(imresize(g16 / 65535.0, 3), 0, 1) * 65535)
    assert np.abs(out - want).max() <= 1  # float32 network pass: within one 16-bit level


def test_rgba_keeps_alpha(run_kmsr, tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = 120
    rgba[..., 3] = np.linspace(0, 255, 10).astype(np.uint8)[None, :]
    _png(tmp_path / "a.png", rgba)
    r = run_kmsr("sr", "a.png", "-o", "b.png", "--model", "bicubic", "--scale", "2")
    assert r.returncode == 0, r.stderr
    out = Image.open(tmp_path / "b.png")
    assert out.mode == "RGBA" and out.size == (20, 20)


def test_stdin_to_stdout(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 9, 3), 77, np.uint8)).save(buf, format="PNG")
    proc = subprocess.run([sys.executable, "-m", "kmsr_cli", "sr", "-", "-o", "-", "--model", "bicubic", "--scale", "2"],
                          input=buf.getvalue(), capture_output=True, env=cli_env(), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    img = Image.open(io.BytesIO(proc.stdout))
    assert img.size == (18, 16)
    assert np.asarray(img).min() == np.asarray(img).max() == 77  # a flat image stays flat


def test_unknown_model_lists_the_choices(run_kmsr, tmp_path):
    _png(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    r = run_kmsr("sr", "a.png", "-o", "b.png", "--model", "nonesuch", "--scale", "2")
    assert r.returncode == 1
    assert "unknown model 'nonesuch'" in r.stderr and "bicubic" in r.stderr and "kmsr" in r.stderr
    assert "Traceback" not in r.stderr


def test_fast_and_eager_paths_agree(run_kmsr, tmp_path):
    # The shipped x2 model through the CPU fast path and through eager PyTorch: same 8-bit output
    # within one level (the fast path is checked against eager to 1e-4 before it is used).
    from kmsr_cli.models import shipped_model_path

    if not shipped_model_path("kmsr", 2).exists():
        import pytest

        pytest.skip("the shipped x2 model is not in this checkout")
    rng = np.random.default_rng(3)
    _png(tmp_path / "a.png", rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))
    for flag in ("--fast", "--no-fast"):
        r = run_kmsr("sr", "a.png", "-o", f"out{flag}.png", "--scale", "2", flag, "--device", "cpu")
        assert r.returncode == 0, r.stderr
    a = np.asarray(Image.open(tmp_path / "out--fast.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "out--no-fast.png")).astype(int)
    assert a.shape == (48, 40, 3) and np.abs(a - b).max() <= 1
