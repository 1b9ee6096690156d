"""`--device tpu`, and `--device cuda` where there is no GPU: one line, exit 1, for every long command."""

from __future__ import annotations

import pytest
import torch


def _commands(img, out, pairs=None):
    return {
        "sr": ["sr", str(img), "-o", str(out / "o.png"), "--model", "bicubic", "--scale", "2"],
        "train": ["train", "--backbone", "kmsr", "--degradation", "bicubic", "-o", str(out / "run")],
        "estimate": ["estimate", str(img), "-o", str(out / "k.h5")],
        "demo": ["demo", "--quick", "-o", str(out / "demo")],
        "bench quality": ["bench", "quality", "--hr", str(img), "--scales", "2", "--models", "bicubic"],
        "gan train": ["gan", "train", str(out / "none.h5"), "-o", str(out / "g.safetensors")],
        "pool build": ["pool", "build", "--estimated", str(out / "none.h5"), "-n", "10", "-o", str(out / "p.h5")],
        "adapt": ["adapt", str(img), "-o", str(out / "a.safetensors")],
        "bench real": ["bench", "real", "--pairs", str(pairs), "--scale", "2", "--models", "bicubic"],
    }


@pytest.fixture
def photo(tmp_path):
    from PIL import Image
    from skimage import data

    p = tmp_path / "a.png"
    Image.fromarray(data.astronaut()[:64, :64]).save(p)
    return p


@pytest.fixture
def pairs(tmp_path, photo):
    from PIL import Image

    folder = tmp_path / "pairs"
    folder.mkdir()
    hr = Image.open(photo)
    hr.save(folder / "a_HR.png")
    hr.resize((32, 32)).save(folder / "a_LR2.png")
    return folder


@pytest.mark.parametrize("device", ["tpu", "cuda"])
@pytest.mark.parametrize("command", ["sr", "train", "estimate", "demo", "bench quality", "bench real", "gan train",
                                     "pool build", "adapt"])
def test_unusable_device_is_one_line(run_kmsr, tmp_path, photo, pairs, command, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present here, so --device cuda is usable")
    out = tmp_path / "out"
    out.mkdir()
    r = run_kmsr(*_commands(photo, out, pairs)[command], "--device", device)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert "--device" in r.stderr and (device in r.stderr)
    assert list(out.iterdir()) == []
