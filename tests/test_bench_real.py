"""``kmsr bench real``: pair layouts, bad input (one line, exit 1, nothing written), the report
formats, the comparison strips, a bicubic oracle, and the published RealSR x4 Canon figures."""

from __future__ import annotations

import csv
import io
import json
import re
import time

import numpy as np
import pytest
from conftest import cli_in_process
from PIL import Image
from skimage import data as skdata

from kmsr_cli.bench import load_hr, parse_kernels, parse_models, run_quality
from kmsr_cli.bench_real import find_pairs, parse_pair_sets, run_real
from kmsr_cli.errors import CliError
from kmsr_ops.image_io import write_png
from kmsr_ops.metrics import psnr
from kmsr_ops.resize import imresize

SCALE = 4
HR_SIDE = 96


# --------------------------------------------------------------------------- fixtures
def hr_photo(i: int, side: int = HR_SIDE) -> np.ndarray:
    """A textured RGB crop of a scikit-image photo (CC0), uint8."""
    photo = (skdata.astronaut, skdata.coffee, skdata.chelsea)[i % 3]()
    y, x = 40 + 17 * i, 60 + 23 * i
    return photo[y : y + side, x : x + side].copy()


def bicubic_lr(hr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """MATLAB imresize(HR, 1/scale), rounded to 8 bits like a saved LR file."""
    return np.rint(np.clip(imresize(hr / 255.0, 1 / scale), 0, 1) * 255).astype(np.uint8)


def write_folders(root, n: int = 3, name: str = "SynthA", scale: int = SCALE):
    """Layout (a): HR/ and LR/ with the same file names."""
    folder = root / name
    (folder / "HR").mkdir(parents=True)
    (folder / "LR").mkdir()
    for i in range(n):
        hr = hr_photo(i)
        write_png(folder / "HR" / f"img_{i:03d}.png", hr)
        write_png(folder / "LR" / f"img_{i:03d}.png", bicubic_lr(hr, scale))
    return folder


def write_realsr(root, n: int = 2, name: str = "SynthB", scale: int = SCALE):
    """Layout (b): NAME_HR.png and NAME_LR{scale}.png side by side."""
    folder = root / name
    folder.mkdir(parents=True)
    for i in range(n):
        hr = hr_photo(i + 3)
        write_png(folder / f"Cam_{i:03d}_HR.png", hr)
        write_png(folder / f"Cam_{i:03d}_LR{scale}.png", bicubic_lr(hr, scale))
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Both layouts, and tiny x4 checkpoints of an upscaled-input (kmsr) and an LR-input (edsr) network."""
    import torch

    from kmsr_cli.checkpoint import save_model
    from kmsr_cli.plugin_host import get_host

    root = tmp_path_factory.mktemp("bench-real")
    host = get_host()
    torch.manual_seed(0)
    ckpts = {}
    for name in ("kmsr", "edsr"):
        model = host.get("backbones", name).create(scale=SCALE, blocks=1, filters=8)
        (root / name).mkdir()
        ckpts[name] = save_model(root / name / "model.safetensors", model, backbone=name)
    return {"a": write_folders(root), "b": write_realsr(root), **ckpts}


def cli(capsys, *args):
    """``kmsr ARGS`` in this process: (exit code, stdout, stderr)."""
    return cli_in_process(capsys, *args)


# --------------------------------------------------------------------------- layouts
def test_folder_layout(files):
    ps = find_pairs(files["a"], SCALE)
    assert ps.name == "SynthA" and ps.layout == "HR/ and LR/"
    assert [p.name for p in ps.pairs] == ["img_000.png", "img_001.png", "img_002.png"]
    assert all(p.hr_path.parent.name == "HR" and p.lr_path.parent.name == "LR" for p in ps.pairs)


def test_realsr_name_layout(files, tmp_path):
    ps = find_pairs(files["b"], SCALE)
    assert ps.name == "SynthB" and ps.layout == "NAME_HR / NAME_LR4"
    assert [(p.name, p.hr_path.name, p.lr_path.name) for p in ps.pairs] == [
        ("Cam_000", "Cam_000_HR.png", "Cam_000_LR4.png"), ("Cam_001", "Cam_001_HR.png", "Cam_001_LR4.png")]
    # LR files of another scale beside them are ignored; only they, for --scale 4, are an error.
    mixed = write_realsr(tmp_path, n=2, name="mixed")
    write_png(mixed / "Cam_000_LR2.png", bicubic_lr(hr_photo(3), 2))
    assert [p.lr_path.name for p in find_pairs(mixed, SCALE).pairs] == ["Cam_000_LR4.png", "Cam_001_LR4.png"]
    x2 = write_realsr(tmp_path, n=1, name="x2only", scale=2)
    with pytest.raises(CliError, match=r"holds _LR2 files but no NAME_LR4 files for --scale 4"):
        find_pairs(x2, SCALE)


def test_names_and_renaming(files):
    sets = parse_pair_sets([str(files["a"]), f"canon={files['b']}"], SCALE)
    assert [s.name for s in sets] == ["SynthA", "canon"]
    with pytest.raises(CliError, match=r"two pair sets are named 'SynthA'"):
        parse_pair_sets([str(files["a"]), str(files["a"])], SCALE)


# --------------------------------------------------------------------------- bad input
def expect_error(capsys, tmp_path, folder, match: str, *extra):
    save = tmp_path / "strips"
    code, out, err = cli(capsys, "bench", "real", "--pairs", folder, "--scale", SCALE, "--models", "bicubic",
                         "--device", "cpu", "--save", save, *extra)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert not save.exists(), "a failed run wrote something"
    return lines[0]


def test_no_pairs(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    write_png(empty / "photo.png", hr_photo(0))  # an image, but not a pair
    line = expect_error(capsys, tmp_path, empty, "no HR/LR pairs found")
    assert "HR/ and LR/ sub-folders" in line and "NAME_HR.png with NAME_LR4.png" in line


def test_missing_folder(capsys, tmp_path):
    expect_error(capsys, tmp_path, tmp_path / "nowhere", "nowhere: no such folder")
    half = tmp_path / "half"
    (half / "HR").mkdir(parents=True)
    expect_error(capsys, tmp_path, half, "has HR/ but no LR/ beside it")


def test_size_mismatch_names_the_file_and_both_sizes(capsys, tmp_path):
    folder = write_folders(tmp_path, n=3)
    hr = hr_photo(1)
    write_png(folder / "LR" / "img_001.png", bicubic_lr(hr)[:20])  # 24 wide, 20 high
    expect_error(capsys, tmp_path, folder, "img_001.png: HR is 96x96, LR is 24x20; at x4 the LR should be 24x24")


def test_modcrop_only_within_the_scale(capsys, tmp_path):
    folder = write_folders(tmp_path, n=1, name="odd")
    big = hr_photo(0, side=HR_SIDE + 3)  # 99x99 over a 24x24 LR: modcropped to 96x96
    write_png(folder / "HR" / "img_000.png", big)
    write_png(folder / "LR" / "img_000.png", bicubic_lr(big[:HR_SIDE, :HR_SIDE]))
    code, out, err = cli(capsys, "bench", "real", "--pairs", folder, "--scale", SCALE, "--models", "bicubic",
                         "--device", "cpu", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kernel_sets"][0]["modcropped"] == 1
    # The figure is that of the top-left 96x96 (MATLAB's modcrop).
    ref = imresize(bicubic_lr(big[:HR_SIDE, :HR_SIDE]) / 255.0, SCALE)
    want = psnr(big[:HR_SIDE, :HR_SIDE].astype(np.float64), np.rint(np.clip(ref, 0, 1) * 255),
                crop_border=SCALE, test_y_channel=True)
    assert doc["results"][0]["psnr"] == pytest.approx(want, abs=1e-9)
    # Larger by a whole LR pixel (or more): an error, not a crop.
    write_png(folder / "HR" / "img_000.png", hr_photo(0, side=HR_SIDE + 4))
    expect_error(capsys, tmp_path, folder, "img_000.png: HR is 100x100, LR is 24x24; at x4 the LR should be 25x25")


def test_unpaired_file(capsys, tmp_path):
    folder = write_folders(tmp_path, n=2)
    (folder / "LR" / "img_001.png").unlink()
    expect_error(capsys, tmp_path, folder, "HR/img_001.png has no partner LR/img_001.png")
    names = write_realsr(tmp_path, n=2)
    (names / "Cam_000_HR.png").unlink()
    expect_error(capsys, tmp_path, names, "Cam_000_LR4.png has no partner Cam_000_HR.*")


def test_bad_model_fails_before_anything_is_written(capsys, tmp_path, files):
    save = tmp_path / "strips"
    code, _, err = cli(capsys, "bench", "real", "--pairs", files["a"], "--scale", 2, "--models", files["kmsr"],
                       "--save", save)
    assert code == 1 and "x4 checkpoint, but --scale asks for x2" in err and not save.exists()


# --------------------------------------------------------------------------- outputs
def test_json_document(capsys, files):
    code, out, err = cli(capsys, "bench", "real", "--pairs", files["a"], "--pairs", files["b"], "--scale", SCALE,
                         "--device", "cpu", "--models", f"bicubic,tiny={files['kmsr']},lrnet:{files['edsr']}", "--json")
    assert code == 0, err
    assert err == ""  # --json: a quiet stderr
    doc = json.loads(out)
    assert {"results", "summary"} <= set(doc)
    results = doc["results"]
    assert len(results) == (3 + 2) * 3
    assert {tuple(sorted(r)) for r in results} == {("image", "kernel", "model", "psnr", "scale", "ssim")}
    assert {r["kernel"] for r in results} == {"SynthA", "SynthB"}
    assert {r["model"] for r in results} == {"bicubic", "tiny", "lrnet"}
    assert {r["image"] for r in results if r["kernel"] == "SynthB"} == {"Cam_000", "Cam_001"}
    assert {r["scale"] for r in results} == {SCALE}
    assert [(s["kernel"], s["model"], s["n"]) for s in doc["summary"]] == [
        (k, m, n) for k, n in (("SynthA", 3), ("SynthB", 2)) for m in ("bicubic", "tiny", "lrnet")]
    for s in doc["summary"]:
        rs = [r for r in results if (r["model"], r["kernel"]) == (s["model"], s["kernel"])]
        assert s["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rs]), abs=1e-12)
        assert s["ssim"] == pytest.approx(np.mean([r["ssim"] for r in rs]), abs=1e-12)
    assert [m["input"] for m in doc["models"]] == ["upsampled", "upsampled", "lr"]


def test_csv_and_markdown(capsys, files):
    common = ["bench", "real", "--pairs", files["a"], "--pairs", files["b"], "--scale", SCALE, "--device", "cpu",
              "--models", f"bicubic,{files['kmsr']}"]
    runs = {}
    for fmt in ("json", "csv", "markdown"):
        code, out, err = cli(capsys, *common, f"--{fmt}")
        assert code == 0, (fmt, err)
        runs[fmt] = out
    results = json.loads(runs["json"])["results"]
    rows = list(csv.DictReader(io.StringIO(runs["csv"])))
    assert [(r["image"], r["model"], r["kernel"], int(r["scale"]), float(r["psnr"]), float(r["ssim"])) for r in rows] == [
        (r["image"], r["model"], r["kernel"], r["scale"], r["psnr"], r["ssim"]) for r in results]
    md = runs["markdown"].splitlines()
    assert md[0] == "| model | SynthA x4 | SynthB x4 |"
    summary = json.loads(runs["json"])["summary"]
    bic = next(line for line in md if line.startswith("| bicubic |"))
    want = [next(s for s in summary if s["model"] == "bicubic" and s["kernel"] == k) for k in ("SynthA", "SynthB")]
    cells = [c.strip().replace("*", "") for c in bic.strip("|").split("|")[1:]]
    assert cells == [f"{w['psnr']:.2f} / {w['ssim']:.4f}" for w in want]
    assert "mean over each column's pairs" in runs["markdown"]  # 3 and 2 pairs
    code, out, _ = cli(capsys, "bench", "real", "--pairs", files["a"], "--scale", SCALE, "--models", "bicubic", "--markdown")
    assert code == 0 and "mean over 3 pairs" in out
    code, out, _ = cli(capsys, "bench", "real", "--pairs", files["a"], "--scale", SCALE, "--models", "bicubic")
    assert code == 0 and "SynthA x4" in out and "bicubic" in out  # the rich table


@pytest.mark.parametrize(("models", "crop", "panels", "side"), [
    ("bicubic,tiny={kmsr}", 32, 4, 32),  # LR | bicubic (the model's) | tiny | HR
    ("tiny={kmsr},lrnet:{edsr}", 30, 5, 28),  # LR | bicubic (added) | tiny | lrnet | HR; 30 -> 28 at x4
    ("bicubic", 0, 3, HR_SIDE),  # the whole image
])
def test_save_writes_one_strip_per_pair(capsys, files, tmp_path, models, crop, panels, side):
    save = tmp_path / "strips"
    code, out, err = cli(capsys, "bench", "real", "--pairs", files["a"], "--pairs", files["b"], "--scale", SCALE,
                         "--device", "cpu", "--models", models.format(**files), "--save", save, "--crop", crop, "--json")
    assert code == 0, err
    written = sorted(p.relative_to(save).as_posix() for p in save.rglob("*") if p.is_file())
    strips = ["SynthA/img_000.png", "SynthA/img_001.png", "SynthA/img_002.png", "SynthB/Cam_000.png", "SynthB/Cam_001.png"]
    assert written == strips + ["index.html"]  # no temporary files left
    # the report links every strip and shows the means the JSON gives
    page = (save / "index.html").read_text()
    assert [m.group(1) for m in re.finditer(r"<img src='([^']+)'", page)] == strips
    for row in json.loads(out)["summary"]:
        assert f"<td>{row['model']}</td><td class='num'>{row['psnr']:.2f}</td><td class='num'>{row['ssim']:.4f}</td>" in page
    for path in save.rglob("*.png"):
        with Image.open(path) as im:
            assert im.mode == "RGB" and im.width == panels * side
            assert side + 8 <= im.height <= side + 40  # a label band above the panels
            strip = np.asarray(im)
    # The last panel is the centre crop of the HR, the first the LR repeated 4x4.
    band = strip.shape[0] - side
    hr = hr_photo(4)  # SynthB/Cam_001
    y0 = (HR_SIDE - side) // 2 // SCALE * SCALE
    strip = np.asarray(Image.open(save / "SynthB" / "Cam_001.png"))
    np.testing.assert_array_equal(strip[band:, -side:], hr[y0 : y0 + side, y0 : y0 + side])
    lr = bicubic_lr(hr)[y0 // SCALE : (y0 + side) // SCALE, y0 // SCALE : (y0 + side) // SCALE]
    np.testing.assert_array_equal(strip[band:, :side], np.repeat(np.repeat(lr, SCALE, 0), SCALE, 1))


# --------------------------------------------------------------------------- oracles
def test_bicubic_oracle(files):
    """On MATLAB-bicubic LR files the bicubic model's figure is psnr(HR, round(imresize(LR, 4))),
    and equals bench quality's bicubic figure with --round-lr on the same HR images."""
    report = run_real(parse_pair_sets([str(files["a"])], SCALE), SCALE, parse_models(["bicubic"]))
    for i, r in enumerate(report.results):
        hr = hr_photo(i).astype(np.float64)
        up = np.rint(np.clip(imresize(bicubic_lr(hr_photo(i)) / 255.0, SCALE), 0, 1) * 255)
        assert r["psnr"] == pytest.approx(psnr(hr, up, crop_border=SCALE, test_y_channel=True), abs=1e-9)
    images = load_hr([str(files["a"] / "HR")])
    quality = run_quality(images, [SCALE], parse_kernels(["bicubic"]), parse_models(["bicubic"]), round_lr=True)
    assert [r["psnr"] for r in report.results] == pytest.approx([r["psnr"] for r in quality.results], abs=1e-9)
    assert [r["ssim"] for r in report.results] == pytest.approx([r["ssim"] for r in quality.results], abs=1e-12)


@pytest.fixture(scope="module")
def realsr(shared_data):
    folder = shared_data / "real_pairs" / "RealSR_x4_Canon"
    if not folder.is_dir():
        pytest.skip(f"RealSR pairs not found at {folder}")
    return folder


def test_realsr_canon_published_figures(realsr, shared_data):
    """The data README: bicubic 27.21 dB, published SRCNN x4 27.64 dB (50 Canon pairs, Y, 4 px shaved, LR as is)."""
    weights = shared_data / "weights" / "srcnn" / "srcnn_915_x4_oihw.npz"
    if not weights.is_file():
        pytest.skip(f"SRCNN x4 weights not found at {weights}")
    t0 = time.perf_counter()
    report = run_real(parse_pair_sets([str(realsr)], 4), 4, parse_models(["bicubic", f"srcnn:{weights}"]),
                      device="cpu", tile=0)
    mean = {s["model"]: s for s in report.summary}
    assert mean["bicubic"]["n"] == mean["srcnn"]["n"] == 50
    assert {r["kernel"] for r in report.results} == {"RealSR_x4_Canon"}
    assert mean["bicubic"]["psnr"] == pytest.approx(27.21, abs=0.02)
    assert mean["srcnn"]["psnr"] == pytest.approx(27.64, abs=0.03)
    assert time.perf_counter() - t0 < 300  # about 25 s on one busy core


def test_strip_names_never_collide():
    from kmsr_cli.bench_real import strip_file_names

    names = strip_file_names(["a.png", "a.jpg", "b.png", "Canon_001"])
    assert names == {"a.png": "a.png.png", "a.jpg": "a.jpg.png", "b.png": "b.png", "Canon_001": "Canon_001.png"}
    assert len(set(names.values())) == 4
