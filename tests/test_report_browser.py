"""The HTML reports open in a real browser (headless Chromium) and every image in them loads.

Chromium comes from Debian's `chromium` package (`.ci/run` installs it where it is missing and
apt-get can); without it these tests skip with that reason. The browser runs the page's own
check, which writes ``data-images="LOADED/TOTAL"`` on the body once the page has loaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import BROWSER, cli_in_process, images_loaded
from PIL import Image

from kmsr_cli.report import HtmlReport, labelled_strip
from kmsr_ops.image_io import write_png
from kmsr_ops.resize import imresize

pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")


def test_the_check_sees_a_missing_image(tmp_path):
    """A report whose linked image is gone: the browser counts it, and the page says so."""
    rep = HtmlReport("probe")
    rep.image(np.full((8, 8, 3), 200, np.uint8), "embedded")
    write_png(tmp_path / "beside.png", np.zeros((8, 8, 3), np.uint8))
    rep.image_link("beside.png", "beside")
    rep.image_link("gone.png", "gone")
    loaded, total, dom = images_loaded(rep.write(tmp_path / "index.html"))
    assert (loaded, total) == (2, 3)
    assert "1 of 3 images could not be shown" in dom


def test_bench_real_report_loads_every_strip(capsys, tmp_path):
    hr_dir, lr_dir = tmp_path / "pairs" / "HR", tmp_path / "pairs" / "LR"
    hr_dir.mkdir(parents=True)
    lr_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        hr = np.clip(rng.random((8, 8, 3)).repeat(8, 0).repeat(8, 1), 0, 1)  # 64x64, blocky
        write_png(hr_dir / f"p{i}.png", hr)
        write_png(lr_dir / f"p{i}.png", imresize(hr, 0.25))
    save = tmp_path / "strips"
    code, _, err = cli_in_process(capsys, "bench", "real", "--pairs", str(tmp_path / "pairs"), "--scale", "4",
                                  "--models", "bicubic", "--save", str(save), "--crop", "32", "--device", "cpu")
    assert code == 0, err
    loaded, total, _ = images_loaded(save / "index.html")
    assert (loaded, total) == (2, 2)


def test_labelled_strip_report_shows_its_panels(tmp_path):
    """An embedded labelled strip decodes in the browser at its own size (no scaling hides it)."""
    a, b = np.zeros((40, 30, 3), np.uint8), np.full((40, 50, 3), 255, np.uint8)
    strip = labelled_strip([("black", "", a), ("white", "1.00 dB", b)])
    assert strip.shape[1] == 80 and strip.shape[0] > 40
    np.testing.assert_array_equal(strip[-40:, :30], a)
    np.testing.assert_array_equal(strip[-40:, 30:], b)
    rep = HtmlReport("strip")
    rep.image(strip, "black | white")
    path = rep.write(tmp_path / "r.html")
    loaded, total, _ = images_loaded(path)
    assert (loaded, total) == (1, 1)
    with Image.open(_png_of(path)) as im:
        assert im.size == (strip.shape[1], strip.shape[0])


def _png_of(page: Path) -> Path:
    """The first embedded image of ``page``, decoded to a file."""
    import base64

    b64 = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page.read_text()).group(1)
    out = page.with_suffix(".png")
    out.write_bytes(base64.b64decode(b64))
    return out
