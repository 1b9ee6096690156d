"""`kmsr demo --quick` runs every stage and leaves every output it announces."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from kmsr_cli.models import shipped_model_path


@pytest.mark.slow
def test_quick_demo_writes_everything(run_kmsr, tmp_path):
    if not shipped_model_path("kmsr", 2).exists():
        pytest.skip("the shipped x2 model is not in this checkout")
    r = run_kmsr("demo", "--quick", "--out", str(tmp_path / "demo"), "--device", "cpu", "--json", timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    doc = json.loads(r.stdout)
    for what, path in doc["outputs"].items():
        assert (tmp_path / "demo").exists() and __import__("os").path.exists(path), what
    # the comparison panel: LR nearest | bicubic | KMSR | HR, each 256x256, 6-pixel gaps
    panel = Image.open(doc["outputs"]["side by side, synthetic (LR nearest | bicubic | KMSR | HR)"])
    assert panel.size == (4 * 256 + 3 * 6, 256)
    assert [row["model"] for row in doc["psnr"]] == ["bicubic", "kmsr (shipped)"]
    assert all(15 < row["psnr"] < 60 for row in doc["psnr"])
    # every stage's command was printed for the user to reuse
    for cmd in ("$ kmsr estimate", "kmsr gan train", "$ kmsr pool build", "$ kmsr pool show", "$ kmsr sr"):
        assert cmd in r.stderr
