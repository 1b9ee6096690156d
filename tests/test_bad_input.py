"""Bad input reported as the CLI promises (issue #14): one line ``error: ...`` (and maybe a
``try: ...`` hint) on stderr, exit 1, no traceback; usage errors exit 2.

The commands run in this process through the console entry point (``kmsr_cli.app.main``), so
an exception that escapes as a traceback fails the test with that traceback. Fixtures are tiny:
crops of scikit-image photos, one-block models, one training step.
"""

from __future__ import annotations

import numpy as np
import pytest

TINY_TRAIN = ["--backbone", "kmsr", "--option", "blocks=1", "--option", "filters=8", "--epochs", "1",
              "--iters-per-epoch", "1", "--patch", "32", "--batch", "2", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("KMSR_DEBUG", raising=False)


def cli(capsys, *args):
    """``kmsr ARGS`` in this process: (exit code, stdout, stderr)."""
    from kmsr_cli.app import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *needles):
    """Exit 1 with an ``error:`` line (plus at most a ``try:`` line) that holds every needle."""
    assert code == 1, err
    assert "Traceback" not in err and "Aborted." not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, err
    assert lines[-1].startswith(("error:", "try:")), err
    for needle in needles:
        assert str(needle) in errors[0], (needle, err)
    return errors[0]


def save_photo(path, size=64, name="astronaut", top=0, left=0):
    from PIL import Image
    from skimage import data

    a = getattr(data, name)()
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(a[top : top + size, left : left + size, :3])).save(path)
    return path


@pytest.fixture
def photo(tmp_path):
    return save_photo(tmp_path / "photo.png")


# --------------------------------------------------------------------------- 3: a file where a folder goes
@pytest.mark.parametrize("command", ["train", "demo", "bench quality", "sr"])
def test_output_folder_that_is_a_file(capsys, tmp_path, photo, command):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder\n")
    args = {
        "train": ["train", "--degradation", "bicubic", *TINY_TRAIN, "-o", blocker],
        "demo": ["demo", "--quick", "--device", "cpu", "-o", blocker],
        "bench quality": ["bench", "quality", "--hr", photo, "--scales", "2", "--kernels", "bicubic",
                          "--models", "bicubic", "--device", "cpu", "--out-images", blocker],
        "sr": ["sr", photo, photo.parent, "-o", blocker, "--model", "bicubic", "--device", "cpu"],
    }[command]
    code, out, err = cli(capsys, *args)
    one_line_error(code, err, str(blocker), "folder")
    assert blocker.read_text() == "not a folder\n"
    # A folder below the file cannot be made either, and says which path is in the way.
    code, out, err = cli(capsys, *[a if a is not blocker else blocker / "sub" for a in args])
    one_line_error(code, err, str(blocker / "sub"), "folder")
