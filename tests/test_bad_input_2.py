"""More bad input from issue #14, in the style of test_bad_input.py: one line ``error: ...``
on stderr, exit 1 (2 for usage errors), no traceback; tiny fixtures."""

from __future__ import annotations

import pytest
from test_bad_input import ESTIMATE_FAST, TINY_TRAIN, cli, one_line_error, save_photo  # noqa: F401

TINY_GAN = 1 / 32


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("KMSR_DEBUG", raising=False)


@pytest.fixture(scope="module")
def two_photos(tmp_path_factory):
    """Two 64x64 crops: one 128x128 patch each at x2."""
    folder = tmp_path_factory.mktemp("estimate-photos-2")
    save_photo(folder / "a.png", top=100, left=100)
    save_photo(folder / "b.png", name="coffee", top=100, left=200)
    return folder


@pytest.fixture(scope="module")
def tiny_gan(tmp_path_factory):
    """A GAN checkpoint trained for one iteration at 1/32 width."""
    import torch
    from conftest import make_random_kernels, write_test_set

    from kmsr_cli.gan import train_gan
    from kmsr_cli.plugin_host import get_host

    folder = tmp_path_factory.mktemp("gan-2")
    data = write_test_set(folder / "train.h5", make_random_kernels(16, 25))
    out = folder / "gan.safetensors"
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            train_gan(get_host(), [data], out, iters=1, settings={"width_mult": TINY_GAN, "seed": 0}, device="cpu")
    finally:
        torch.set_num_threads(old)
    return out


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- 9: long but legal output names
LONG = "n" * 246  # a 246-character stem: NAME.h5 / NAME.png are legal (<= 255 bytes), NAME.h5.partial is not


@pytest.mark.parametrize("command", ["pool synth", "gan sample", "estimate", "sr"])
def test_long_output_name(capsys, tmp_path, command, two_photos, tiny_gan):
    outdir = tmp_path / "out"
    outdir.mkdir()
    suffix = ".png" if command == "sr" else ".h5"
    out = outdir / (LONG + suffix)
    args = {
        "pool synth": ["pool", "synth", "-n", "3", "--size", "9", "-o", out],
        "gan sample": ["gan", "sample", tiny_gan, "-n", "3", "-o", out, "--device", "cpu"],
        "estimate": ["estimate", two_photos, "-o", out, *ESTIMATE_FAST],
        "sr": ["sr", two_photos / "a.png", "-o", out, "--model", "bicubic", "--device", "cpu"],
    }[command]
    code, stdout, err = cli(capsys, *args)
    assert code == 0 and "Traceback" not in err, err
    assert _names(outdir) == [out.name]  # no temp file or partial folder left over


# --------------------------------------------------------------------------- 19: two estimate runs on one output
def test_estimate_second_run_on_one_output_fails_at_once(run_kmsr, tmp_path, two_photos):
    """The first run blocks reading a photo from a FIFO while it holds the output; the second
    fails at once naming the output; the first then finishes with every kernel."""
    import io
    import os
    import subprocess
    import sys
    import time

    from conftest import cli_env
    from PIL import Image
    from test_bad_input import _by_unit

    fifo = tmp_path / "slow.png"
    os.mkfifo(fifo)
    png = io.BytesIO()
    Image.open(save_photo(tmp_path / "src" / "c.png", name="chelsea", top=50, left=100)).save(png, format="PNG")
    out = tmp_path / "k.h5"
    args = ["estimate", fifo, two_photos, "-o", out, *ESTIMATE_FAST]
    first = subprocess.Popen([sys.executable, "-m", "kmsr_cli", *map(str, args)], cwd=tmp_path,
                             env=cli_env({"OMP_NUM_THREADS": "1"}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        lock = tmp_path / "k.h5.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().strip()):  # the pid is written once the lock is held
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        t0 = time.monotonic()
        # In a subprocess: without the lock it would block on the FIFO too, and time out.
        second = run_kmsr(*args, env={"OMP_NUM_THREADS": "1"}, timeout=60)
        line = one_line_error(second.returncode, second.stderr, str(out), "another kmsr estimate run")
        assert time.monotonic() - t0 < 60 and second.stdout == "", line
        with open(fifo, "wb") as fh:  # let the first run go on
            fh.write(png.getvalue())
        stdout, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err
    assert len(_by_unit(out)) == 3  # every kernel of the first run: nobody deleted its partial folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.h5", "slow.png", "src"]


# --------------------------------------------------------------------------- 17: estimate -o EXISTING.h5
def _count(path):
    from kmsr_cli.kernelset import KernelSet

    with KernelSet(path) as ks:
        return len(ks), sorted(set(ks.provenance().origin))


def test_estimate_refuses_an_existing_set_it_did_not_make(capsys, tmp_path, two_photos, write_set, random_kernels):
    synth = write_set(tmp_path / "synth.h5", random_kernels(4, 9))
    before = synth.read_bytes()
    link = tmp_path / "link.h5"
    link.symlink_to(synth)
    for out in (synth, link):
        code, stdout, err = cli(capsys, "estimate", two_photos, "-o", out, *ESTIMATE_FAST)
        line = one_line_error(code, err, str(out), "4 synthetic kernels")
        assert "--append" in err and "--overwrite" in err and stdout == "", line
        assert synth.read_bytes() == before and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.h5", "synth.h5"]  # no lock or partial left
    # Said explicitly, either works.
    code, stdout, err = cli(capsys, "estimate", two_photos, "-o", synth, *ESTIMATE_FAST, "--append")
    assert code == 0, err
    assert _count(synth) == (6, ["estimated", "synthetic"])
    code, stdout, err = cli(capsys, "estimate", two_photos, "-o", synth, *ESTIMATE_FAST, "--overwrite")
    assert code == 0, err
    assert _count(synth) == (2, ["estimated"])
    code, stdout, err = cli(capsys, "estimate", two_photos, "-o", synth, *ESTIMATE_FAST, "--append", "--overwrite")
    assert code == 2 and "Traceback" not in err, err


def test_estimate_resumes_its_own_output_but_refuses_another_run(capsys, tmp_path, two_photos):
    out = tmp_path / "k.h5"
    code, stdout, err = cli(capsys, "estimate", two_photos, "-o", out, *ESTIMATE_FAST)
    assert code == 0, err
    done = out.read_bytes()
    # The same command again resumes: nothing to do, the file is kept.
    code, stdout, err = cli(capsys, "estimate", two_photos, "-o", out, *ESTIMATE_FAST)
    assert code == 0 and "0 new kernels (2 already done), 2 in" in " ".join(err.split()), err
    assert out.read_bytes() == done
    # Another seed, or other photos, would pile up: refused, naming the difference.
    code, stdout, err = cli(capsys, "estimate", two_photos, "-o", out, *ESTIMATE_FAST, "--seed", "1")
    one_line_error(code, err, str(out), "another estimate run", "--seed 0, not 1")
    code, stdout, err = cli(capsys, "estimate", two_photos / "a.png", "-o", out, *ESTIMATE_FAST)
    one_line_error(code, err, str(out), "another estimate run", "other photos (2, not 1)")
    assert out.read_bytes() == done


def test_estimate_refuses_the_partial_folder_of_another_run(capsys, tmp_path, two_photos):
    import json

    out = tmp_path / "k.h5"
    partial = tmp_path / "k.h5.partial"
    partial.mkdir()
    (partial / "run.json").write_text(json.dumps({"seed": 5}))
    code, stdout, err = cli(capsys, "estimate", two_photos, "-o", out, *ESTIMATE_FAST)
    one_line_error(code, err, str(partial), "another estimate run")
    assert not out.exists() and partial.is_dir()
    code, stdout, err = cli(capsys, "estimate", two_photos, "-o", out, *ESTIMATE_FAST, "--overwrite")
    assert code == 0 and _count(out) == (2, ["estimated"]) and not partial.exists(), err


# --------------------------------------------------------------------------- 10: photo names that are not UTF-8
def test_estimate_non_utf8_photo_name(capsys, tmp_path, two_photos):
    import json
    import os
    import shutil

    from kmsr_cli.kernelset import KernelSet

    folder = tmp_path / "shots"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/x\xff\xfe.png"  # not UTF-8: a surrogateescape str in Python
    shutil.copyfile(two_photos / "a.png", raw)
    photo = os.fsdecode(raw)
    out = tmp_path / "k.h5"
    code, stdout, err = cli(capsys, "estimate", folder, "-o", out, *ESTIMATE_FAST)
    assert code == 0 and "Traceback" not in err, err
    with KernelSet(out) as ks:
        prov = ks.provenance()
        assert len(ks) == 1
    assert prov.source == [photo.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")]
    assert prov.source[0].endswith("/x\\xff\\xfe.png")
    assert bytes.fromhex(json.loads(prov.params[0])["source_bytes_hex"]) == raw  # the name, exactly
    assert not (tmp_path / "k.h5.partial").exists()
    # A rerun resumes (it failed the same way every time).
    code, stdout, err = cli(capsys, "estimate", folder, "-o", out, *ESTIMATE_FAST)
    assert code == 0 and "0 new kernels (1 already done), 1 in" in " ".join(err.split()), err


# --------------------------------------------------------------------------- 2: huge numbers
@pytest.mark.parametrize("args", [
    ["sr", "{photo}", "-o", "{tmp}/o.png", "--model", "bicubic", "--scale", "100000"],
    ["estimate", "{photo}", "-o", "{tmp}/k.h5", "--scale", "100000"],
    ["train", "--degradation", "bicubic", "--scale", "100000", "-o", "{tmp}/run"],
], ids=["sr", "estimate", "train"])
def test_huge_scale_is_a_usage_error(capsys, tmp_path, photo_a, args):
    code, stdout, err = cli(capsys, *[a.format(photo=photo_a, tmp=tmp_path) for a in args], "--device", "cpu")
    assert code == 2 and "Traceback" not in err and "--scale" in err and "16" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture
def photo_a(two_photos):
    return two_photos / "a.png"


@pytest.mark.parametrize("args, needle", [
    (["pool", "synth", "-n", "100000000000", "-o", "{tmp}/s.h5"], "pool synth -n 100000000000"),
    (["pool", "synth", "--size", "100001", "-o", "{tmp}/s.h5"], "--size 100001"),
    (["gan", "sample", "{gan}", "-n", "10000000000", "-o", "{tmp}/g.h5", "--device", "cpu"], "gan sample -n 10000000000"),
    (["gan", "train", "{gan}", "-o", "{tmp}/g.safetensors", "--batch", "100000000", "--device", "cpu"], "--batch 100000000"),
    (["train", "--degradation", "bicubic", "--batch", "100000000", "--device", "cpu", "-o", "{tmp}/run"], "--batch 100000000"),
], ids=["synth-n", "synth-size", "gan-sample", "gan-train", "train"])
def test_huge_counts_say_how_much_memory(capsys, tmp_path, tiny_gan, args, needle):
    code, stdout, err = cli(capsys, *[a.format(tmp=tmp_path, gan=tiny_gan) for a in args])
    one_line_error(code, err, needle, "would need about", "of memory; this machine has")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("filters", [1_000_000_000, 4096])
def test_model_metadata_claiming_a_huge_model(capsys, tmp_path, photo_a, filters):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from kmsr_cli.checkpoint import save_model
    from kmsr_cli.plugin_host import get_host

    model = get_host().get("backbones", "kmsr").create(scale=2, blocks=1, filters=8)
    good = save_model(tmp_path / "good.safetensors", model, backbone="kmsr", scale=2)
    with safe_open(str(good), "pt") as f:
        header = dict(f.metadata())
    doc = json.loads(header["kmsr"])
    doc["options"]["filters"] = filters
    header["kmsr"] = json.dumps(doc)
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(good)), str(bad), metadata=header)
    out = tmp_path / "o.png"
    code, stdout, err = cli(capsys, "sr", photo_a, "-o", out, "--model", bad, "--device", "cpu")
    one_line_error(code, err, str(bad), f"filters={filters}", "the file holds")
    assert not out.exists()


# --------------------------------------------------------------------------- minor: usage errors found after parsing
@pytest.mark.parametrize("args, option", [
    (["estimate", "{photo}", "-o", "{tmp}/k.h5", "--shard", "3/2"], "--shard"),
    (["estimate", "{photo}", "-o", "{tmp}/k.h5", "--patch", "0"], "--patch"),
    (["estimate", "{photo}", "-o", "{tmp}/k.h5", "--kernel-size", "4"], "--kernel-size"),
    (["sr", "{photo}", "-o", "{tmp}/o.png", "--model", "bicubic", "--tile", "1"], "--tile"),
], ids=["shard", "patch", "kernel-size", "tile"])
def test_bad_option_values_exit_2(capsys, tmp_path, photo_a, args, option):
    code, stdout, err = cli(capsys, *[a.format(photo=photo_a, tmp=tmp_path) for a in args], "--device", "cpu")
    assert code == 2 and "Traceback" not in err and option in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- minor: Ctrl-C
def test_sigint_says_interrupted_and_exits_130(tmp_path, two_photos):
    """A long command stopped by SIGINT (here: estimate blocked on a FIFO photo) prints
    'interrupted' and exits 130 (Typer's own handler exited 130 silently)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import cli_env

    fifo = tmp_path / "slow.png"
    os.mkfifo(fifo)
    out = tmp_path / "k.h5"
    proc = subprocess.Popen([sys.executable, "-m", "kmsr_cli", "estimate", str(fifo), "-o", str(out), *ESTIMATE_FAST],
                            cwd=tmp_path, env=cli_env({"OMP_NUM_THREADS": "1"}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # a shell that runs the suite in the background ignores SIGINT, and the
                            # child would inherit that; the test is about kmsr's own handling
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lock = tmp_path / "k.h5.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().strip()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted", err
    assert not out.exists() and not lock.exists()


# --------------------------------------------------------------------------- minor: train --resume on other data
from test_bad_input import tiny_run  # noqa: E402,F401 - the module-scoped one-step run, as a fixture here


def test_train_resume_refuses_other_data(capsys, tmp_path, tiny_run):  # noqa: F811 - the imported fixture
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run)
    args = list(tiny_run["args"])
    data_at = args.index("--data") + 1
    other = save_photo(tmp_path / "other" / "b.png", name="coffee").parent
    before = (run / "state.pt").read_bytes()
    code, out, err = cli(capsys, *args[:data_at], other, *args[data_at + 1:], "-o", run, "--resume")
    one_line_error(code, err, str(run / "state.pt"), "--data", str(args[data_at]), str(other))
    assert (run / "state.pt").read_bytes() == before
    # The same data resumes.
    code, out, err = cli(capsys, *args, "-o", run, "--resume")
    assert code == 0 and "Traceback" not in err, err
