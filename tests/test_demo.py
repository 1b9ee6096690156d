"""`kmsr demo --quick` runs every stage and leaves every output it announces."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import BROWSER, images_loaded
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
    # the comparison panel: LR nearest | bicubic | KMSR | HR, each 256x256, under a label band;
    # the KMSR panel is the SR output the demo wrote
    panel = np.asarray(Image.open(doc["outputs"]["side by side, synthetic (LR nearest | bicubic | KMSR | HR)"]))
    assert panel.shape[1] == 4 * 256 and 256 + 8 <= panel.shape[0] <= 256 + 40
    # (a 16-bit PNG: Pillow keeps the high byte, the panel rounds, so they differ by at most 1)
    sr = np.asarray(Image.open(tmp_path / "demo" / "sr" / "synthetic_kmsr_x2.png").convert("RGB")).astype(int)
    assert np.abs(panel[-256:, 512:768].astype(int) - sr).max() <= 1
    # one self-contained report: every image embedded, the PSNR rows in it
    page = (tmp_path / "demo" / "report.html").read_text()
    assert doc["outputs"]["report"] == str(tmp_path / "demo" / "report.html")
    assert page.count("<img src='data:image/png;base64,") == 3 and "src='http" not in page
    for row in doc["psnr"]:
        assert f"{row['psnr']:.2f}" in page
    if BROWSER is not None:  # and a browser shows every image (tests/test_report_browser.py says more)
        loaded, total, _ = images_loaded(tmp_path / "demo" / "report.html")
        assert loaded == total == 3
    assert [row["model"] for row in doc["psnr"]] == ["bicubic", "kmsr (shipped)"]
    assert all(15 < row["psnr"] < 60 for row in doc["psnr"])
    # every stage's command was printed for the user to reuse
    for cmd in ("$ kmsr estimate", "kmsr gan train", "$ kmsr pool build", "$ kmsr pool show", "$ kmsr sr"):
        assert cmd in r.stderr
