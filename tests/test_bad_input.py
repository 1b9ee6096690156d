"""Bad input reported as the CLI promises (issue #14): one line ``error: ...`` (and maybe a
``try: ...`` hint) on stderr, exit 1, no traceback; usage errors exit 2.

The commands run in this process through the console entry point (``kmsr_cli.app.main``), so
an exception that escapes as a traceback fails the test with that traceback. Fixtures are tiny:
crops of scikit-image photos, one-block models, one training step.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cli_in_process

TINY_TRAIN = ["--backbone", "kmsr", "--option", "blocks=1", "--option", "filters=8", "--epochs", "1",
              "--iters-per-epoch", "1", "--patch", "32", "--batch", "2", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("KMSR_DEBUG", raising=False)


def cli(capsys, *args):
    """``kmsr ARGS`` in this process: (exit code, stdout, stderr)."""
    return cli_in_process(capsys, *args)


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


# --------------------------------------------------------------------------- 4: train --resume, damaged state.pt
class _Payload:
    """Unpickling this would create ``marker``: a pickle that is not tensors."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _damage(state, how, marker):
    import pickle

    import torch

    good = state.read_bytes()
    if how == "pickle":
        state.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    elif how == "torch-pickle":
        torch.save({"model": _Payload(marker)}, state)
    elif how == "truncated":
        state.write_bytes(good[: len(good) // 2])
    elif how == "empty":
        state.write_bytes(b"")
    elif how == "text":
        state.write_text("hello\n")
    elif how == "wrong-entries":
        torch.save({"step": torch.tensor(1)}, state)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One training step of a one-block model: a run folder with a state.pt."""
    from kmsr_cli.app import main

    root = tmp_path_factory.mktemp("tiny-run")
    photo = save_photo(root / "hr" / "a.png")
    args = ["train", "--degradation", "bicubic", *TINY_TRAIN, "--data", photo.parent, "-o", root / "run"]
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert (root / "run" / "state.pt").is_file()
    return {"run": root / "run", "args": args[:-2]}


@pytest.mark.parametrize("how", ["pickle", "torch-pickle", "truncated", "empty", "text", "wrong-entries"])
def test_train_resume_damaged_state(capsys, tmp_path, tiny_run, how):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run)
    state = run / "state.pt"
    marker = tmp_path / "unpickled"
    _damage(state, how, marker)
    code, out, err = cli(capsys, *tiny_run["args"], "-o", run, "--resume")
    one_line_error(code, err, str(state), "damaged")
    assert not marker.exists(), "the state was unpickled"


def test_gan_resume_damaged_state_same_words(tmp_path):
    """gan train --resume reads its state through the same loader."""
    from kmsr_cli.errors import CliError
    from kmsr_cli.gan import _load_state_file

    state = tmp_path / "g.state.pt"
    state.write_text("hello\n")  # torch raised KeyError here, which escaped as a traceback
    with pytest.raises(CliError, match="damaged") as info:
        _load_state_file(state)
    assert str(state) in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- 5: damaged parts in OUT.partial/
ESTIMATE_FAST = ["--scale", "2", "--patch", "128", "--per-image", "1", "--kernel-size", "9", "--workers", "1",
                 "--device", "cpu", "--option", 'schedule="fast"']


@pytest.fixture(scope="module")
def two_photos(tmp_path_factory):
    """Two 64x64 crops: one 128x128 patch each at x2."""
    folder = tmp_path_factory.mktemp("estimate-photos")
    save_photo(folder / "a.png", top=100, left=100)
    save_photo(folder / "b.png", name="coffee", top=100, left=200)
    return folder


def _by_unit(path):
    import json

    from kmsr_cli.kernelset import KernelSet

    with KernelSet(path) as ks:
        return dict(zip((json.loads(p)["unit"] for p in ks.provenance().params), ks.kernels()))


def test_estimate_resume_discards_damaged_parts(capsys, tmp_path, two_photos):
    code, out, err = cli(capsys, "estimate", two_photos, "-o", tmp_path / "full.h5", *ESTIMATE_FAST)
    assert code == 0, err
    full = _by_unit(tmp_path / "full.h5")
    assert len(full) == 2
    # A crash left one part empty and the other cut short.
    empty_key, cut_key = sorted(full)
    partial = tmp_path / "k.h5.partial"
    partial.mkdir()
    good = tmp_path / "good.npz"
    np.savez(good, kernel=full[cut_key], prov=np.array("{}"))
    (partial / f"{empty_key}.npz").write_bytes(b"")
    (partial / f"{cut_key}.npz").write_bytes(good.read_bytes()[:100])

    code, out, err = cli(capsys, "estimate", two_photos, "-o", tmp_path / "k.h5", *ESTIMATE_FAST)
    assert code == 0, err
    assert "Traceback" not in err and "Aborted." not in err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    for key in (empty_key, cut_key):  # one warning line each, naming the file
        assert any(str(partial / f"{key}.npz") in ln and "damaged" in ln for ln in warnings), err
    assert "2 new kernels" in " ".join(err.split()), err  # both patches estimated again
    again = _by_unit(tmp_path / "k.h5")
    assert again.keys() == full.keys()
    for key in full:
        np.testing.assert_array_equal(again[key], full[key])
    assert not partial.exists()


def test_estimate_partial_parts_are_fsynced(tmp_path, monkeypatch):
    import os

    from kmsr_cli.estimate import PartialStore, Unit

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    store = PartialStore(tmp_path / "k.h5", kernel_size=3)
    unit = Unit("p.png", "0" * 64, (0, 0, 8, 8), 0, "abc")
    prov = {"origin": "estimated", "source": "p.png", "method": "m", "params": {"unit": "abc"}, "box": [0, 0, 8, 8],
            "seed": 0, "index": 0}
    store.save(unit, np.full((3, 3), 1 / 9), prov)
    assert synced, "the part was not fsynced"
    assert store.done_keys() == {"abc"} and len(store.load()) == 1


# --------------------------------------------------------------------------- 6: the scale attribute of a kernel set
def _set_with_scale(path, value, write_set, random_kernels):
    import h5py

    write_set(path, random_kernels(4, 9))
    with h5py.File(path, "a") as f:
        if value is None:
            del f.attrs["scale"]
        else:
            f.attrs["scale"] = value
    return path


@pytest.mark.parametrize("value", ["two", -3, 0, 2.5, None])
def test_kernel_set_scale_is_validated(capsys, tmp_path, write_set, random_kernels, value):
    pool = _set_with_scale(tmp_path / "pool.h5", value, write_set, random_kernels)
    code, out, err = cli(capsys, "pool", "show", pool)
    one_line_error(code, err, str(pool), "scale")
    code, out, err = cli(capsys, "train", "--degradation", "pool", "--pool", pool, *TINY_TRAIN, "-o", tmp_path / "run")
    one_line_error(code, err, str(pool), "scale")
    assert not (tmp_path / "run").exists()


def test_kernel_set_integral_scale_still_reads(tmp_path, write_set, random_kernels):
    from kmsr_cli.kernelset import KernelSet

    assert KernelSet(_set_with_scale(tmp_path / "a.h5", np.int64(3), write_set, random_kernels)).scale == 3
    assert KernelSet(_set_with_scale(tmp_path / "b.h5", 2.0, write_set, random_kernels)).scale == 2


# --------------------------------------------------------------------------- 7: unknown training options
@pytest.mark.parametrize("flag, degradation, listed", [
    ("--degradation-option", "bicubic", "takes no options"),
    ("--degradation-option", "gaussian", "sigma_min, sigma_max"),
    ("--option", "bicubic", "blocks, filters"),
])
def test_train_unknown_option(capsys, tmp_path, flag, degradation, listed):
    code, out, err = cli(capsys, "train", "--degradation", degradation, *TINY_TRAIN, flag, "zz=1", "-o", tmp_path / "run")
    line = one_line_error(code, err, flag, "'zz'", listed)
    assert repr(degradation) in line or flag == "--option"
    assert not (tmp_path / "run").exists()


def test_train_option_of_an_undeclaring_plugin_is_one_line(fresh_host):
    """A backend registered without ``options=`` is checked by its factory's refusal."""
    from kmsr_cli.errors import CliError
    from kmsr_cli.train import check_options, create_with_options

    def factory(scale, input="upsampled", channels="rgb", sigma=1.0):  # noqa: A002
        return (scale, sigma)

    fresh_host._make_register("degradations", "mine")("blurry", factory)
    dg = fresh_host.get("degradations", "blurry")
    check_options(dg, {"zz": 1}, "--degradation-option")  # nothing declared: the factory decides
    assert create_with_options(dg, {"sigma": 2.0}, "--degradation-option", scale=2, sigma=2.0) == (2, 2.0)
    with pytest.raises(CliError, match=r"--degradation-option zz: the 'blurry' degradation has no option 'zz'"):
        create_with_options(dg, {"zz": 1}, "--degradation-option", scale=2, zz=1)


# --------------------------------------------------------------------------- 11: estimate that estimates nothing
def test_estimate_nothing_estimated_fails(capsys, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image\n")
    save_photo(folder / "tiny.png", size=20)
    out = tmp_path / "k.h5"
    code, stdout, err = cli(capsys, "estimate", folder, "-o", out, *ESTIMATE_FAST)
    line = one_line_error(code, err, "no kernel was estimated", "all 3 photos skipped", "2 unreadable", "1 too small")
    assert "None" not in err and stdout == ""
    assert not out.exists() and str(out) in line


def test_estimate_kernel_too_large_for_the_patches_fails(capsys, tmp_path, two_photos):
    out = tmp_path / "k.h5"
    code, stdout, err = cli(capsys, "estimate", two_photos, "-o", out, *ESTIMATE_FAST, "--kernel-size", "301")
    one_line_error(code, err, "no kernel was estimated", "2 patches failed", "301x301")
    assert not out.exists()


# --------------------------------------------------------------------------- 12: one unusable image in an sr batch
def test_sr_batch_goes_on_past_a_1x1_image(capsys, tmp_path):
    shots = tmp_path / "shots"
    save_photo(shots / "a.png", size=16)
    save_photo(shots / "one.png", size=1)
    save_photo(shots / "z.png", size=16, name="coffee")
    out = tmp_path / "sr"
    code, stdout, err = cli(capsys, "sr", shots, "-o", out, "--model", "bicubic", "--device", "cpu")
    assert code == 1 and "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(shots / "one.png") in errors[0] and "2x2" in errors[0], err
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "z_x2.png"]
    assert "2 images super-resolved" in err and "1 failed" in err


# --------------------------------------------------------------------------- 13: same names in sub-folders
def test_sr_keeps_sub_folders_apart(capsys, tmp_path):
    shots = tmp_path / "shots"
    save_photo(shots / "a" / "same.png", size=16)
    save_photo(shots / "b" / "same.png", size=16, name="coffee")
    save_photo(shots / "top.png", size=16)
    out = tmp_path / "sr"
    code, stdout, err = cli(capsys, "sr", shots, "-o", out, "--model", "bicubic", "--device", "cpu")
    assert code == 0, err
    a, b = out / "a" / "same_x2.png", out / "b" / "same_x2.png"
    assert a.is_file() and b.is_file() and (out / "top_x2.png").is_file()
    assert a.read_bytes() != b.read_bytes()  # neither overwrote the other
    assert stdout.split() == [str(a), str(b), str(out / "top_x2.png")]


def test_sr_refuses_two_inputs_for_one_output(capsys, tmp_path):
    save_photo(tmp_path / "x" / "same.png", size=16)
    save_photo(tmp_path / "y" / "same.jpg", size=16)
    out = tmp_path / "sr"
    code, stdout, err = cli(capsys, "sr", tmp_path / "x" / "same.png", tmp_path / "y" / "same.jpg", "-o", out,
                            "--model", "bicubic", "--device", "cpu")
    one_line_error(code, err, "same.png", "same.jpg", str(out / "same_x2.png"))
    assert not out.exists()


# --------------------------------------------------------------------------- 14: hints that fit the command
@pytest.mark.parametrize("command, fits", [
    (["sr", "{missing}", "-o", "{out}", "--model", "bicubic"], "super-resolved"),
    (["bench", "quality", "--hr", "{missing}", "--scales", "2", "--kernels", "bicubic", "--models", "bicubic"], "--hr"),
    (["estimate", "{missing}", "-o", "{out}"], "estimated"),
])
def test_missing_input_hint_fits_the_command(capsys, tmp_path, command, fits):
    missing = tmp_path / "nope.png"
    args = [a.format(missing=missing, out=tmp_path / "out") for a in command]
    code, out, err = cli(capsys, *args, "--device", "cpu")
    one_line_error(code, err, str(missing), "no such file")
    hint = [ln for ln in err.splitlines() if ln.startswith("try:")]
    assert len(hint) == 1 and fits in hint[0], err
    if command[0] != "estimate":
        assert "estimated" not in err


# --------------------------------------------------------------------------- 15: control characters in pool show
def test_pool_show_escapes_control_characters(capsys, tmp_path, write_set, random_kernels):
    import json

    evil = "nice\x1b]0;owned\x07 set\x1b[2J\r\u202etxt.exe\x9b"
    pool = write_set(tmp_path / "pool.h5", random_kernels(3, 9), description=evil, method="m\x1b[31m")
    code, out, err = cli(capsys, "pool", "show", pool)
    assert code == 0, err
    for ch in ("\x1b", "\x07", "\r", "\u202e", "\x9b"):
        assert ch not in out and ch not in err, repr(ch)
    flat = "".join(out.split())  # the table may wrap
    assert "nice\\x1b]0;owned\\x07set\\x1b[2J\\x0d\\u202etxt.exe\\x9b" in flat
    assert "m\\x1b[31m" in flat
    # --json keeps the value itself, escaped by JSON.
    code, out, err = cli(capsys, "pool", "show", pool, "--json")
    assert code == 0 and "\x1b" not in out and json.loads(out)["description"] == evil


# --------------------------------------------------------------------------- 16: a model with NaN weights
def test_sr_refuses_a_model_with_nan_weights(capsys, tmp_path, photo):
    import torch

    from kmsr_cli.checkpoint import save_model
    from kmsr_cli.plugin_host import get_host

    model = get_host().get("backbones", "kmsr").create(scale=2, blocks=1, filters=8)
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    ckpt = save_model(tmp_path / "nan.safetensors", model, backbone="kmsr", scale=2)
    out = tmp_path / "o.png"
    code, stdout, err = cli(capsys, "sr", photo, "-o", out, "--model", ckpt, "--device", "cpu")
    one_line_error(code, err, str(ckpt), "NaN")
    assert not out.exists()


def test_sr_refuses_non_finite_output(tmp_path):
    """Whatever the weights, a NaN output is an error, not a black image."""
    import torch

    from kmsr_cli.errors import CliError
    from kmsr_cli.infer import SRModel, super_resolve

    class Overflow(torch.nn.Module):
        def forward(self, x):
            return x * float("inf") - x * float("inf")

    srm = SRModel(Overflow(), scale=2, name="overflowing-model")
    with pytest.raises(CliError, match="overflowing-model: the network's output holds NaN"):
        super_resolve(srm, np.full((8, 8, 3), 0.5), tile=0, overlap=0, fast=False)


# --------------------------------------------------------------------------- minor: sr -o o.jpg
@pytest.mark.parametrize("name", ["o.jpg", "o.heic"])
def test_sr_output_is_png_only(capsys, tmp_path, photo, name):
    out = tmp_path / name
    code, stdout, err = cli(capsys, "sr", photo, "-o", out, "--model", "bicubic", "--device", "cpu")
    assert code == 2 and "Traceback" not in err, err
    flat = " ".join(err.split())
    assert "PNG only" in flat and str(out.with_suffix(".png")) in flat, err
    assert list(tmp_path.iterdir()) == [photo]


def test_sr_help_says_png_only(capsys):
    code, stdout, err = cli(capsys, "sr", "--help")
    assert code == 0 and "PNG only" in " ".join(stdout.split())
