"""``kmsr bench``: LR test sets on MATLAB's grid (alignment, SciPy, golden arrays), published
figures through the pipeline, the output formats, bad input, and the speed-benchmark runner."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import numpy as np
import pytest
import scipy.io as sio
from scipy import ndimage
from skimage import data as skdata
from typer.testing import CliRunner

from kmsr_cli.bench import (
    KernelSpec,
    load_hr,
    make_lr,
    parse_kernels,
    parse_models,
    run_quality,
)
from kmsr_cli.bench_ops import extract_ratios
from kmsr_cli.errors import CliError
from kmsr_ops.degrade import gaussian_lr, kernel_lr, match_parity, prepare_kernel
from kmsr_ops.errors import KmsrInputError
from kmsr_ops.image_io import write_png
from kmsr_ops.kernels import kernel_centroid
from kmsr_ops.resize import imresize, modcrop


# --------------------------------------------------------------------------- helpers
def texture(size: int = 192) -> np.ndarray:
    """A textured grey photo (scikit-image's camera, CC0), float64 in [0, 1]."""
    return skdata.camera()[100 : 100 + size, 150 : 150 + size].astype(np.float64) / 255.0


def peak_shift(ref: np.ndarray, moved: np.ndarray, r: int = 3, border: int = 12) -> tuple[float, float]:
    """Sub-pixel position of the peak of the normalised cross-correlation of ``moved`` against
    ``ref`` over shifts in [-r, r]² (integer argmax, then a parabola through it and its two
    neighbours per axis): (dy, dx) means ``moved`` is ``ref`` moved down/right by (dy, dx)."""
    h, w = ref.shape
    a = ref[border : h - border, border : w - border]
    a = (a - a.mean()) / a.std()
    cc = np.empty((2 * r + 1, 2 * r + 1))
    for i, dy in enumerate(range(-r, r + 1)):
        for j, dx in enumerate(range(-r, r + 1)):
            b = moved[border + dy : h - border + dy, border + dx : w - border + dx]
            cc[i, j] = np.mean(a * (b - b.mean()) / b.std())
    iy, ix = np.unravel_index(np.argmax(cc), cc.shape)
    assert 0 < iy < 2 * r and 0 < ix < 2 * r, f"peak on the search border: {cc}"

    def vertex(lo, mid, hi):
        return 0.5 * (lo - hi) / (lo - 2 * mid + hi)

    return (iy - r + vertex(cc[iy - 1, ix], cc[iy, ix], cc[iy + 1, ix]),
            ix - r + vertex(cc[iy, ix - 1], cc[iy, ix], cc[iy, ix + 1]))


def gaussian_lr_by_geometry(hr: np.ndarray, sigma: float, s: int) -> np.ndarray:
    """The definition, written out: LR pixel i averages HR pixels j with Gaussian weights in
    j - (i*s + (s-1)/2), over the test kernel's window (half-width ceil(3 sigma), plus 1/2 for
    even s), mirrored at the border (d c b | a b c d)."""
    n = hr.shape[0]
    half = math.ceil(3 * sigma) + (0.5 if s % 2 == 0 else 0.0)
    a = np.zeros((n // s, n))
    for i in range(n // s):
        c = i * s + (s - 1) / 2
        for j in np.arange(math.ceil(c - half), math.floor(c + half) + 1):
            jj = int(-j if j < 0 else (2 * (n - 1) - j if j > n - 1 else j))
            a[i, jj] += math.exp(-((j - c) ** 2) / (2 * sigma**2))
    a /= a.sum(axis=1, keepdims=True)
    return a @ hr @ a.T


# --------------------------------------------------------------------------- LR geometry
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("test_set", ["bicubic", "g0.4", "file"])
def test_upscaled_lr_sits_on_the_hr(scale, test_set, tmp_path):
    """For a narrow kernel, bicubic↑s(LR) correlates best with the HR at zero shift (to 0.1 px)."""
    hr = texture()
    if test_set == "file":  # an odd 5x5 kernel: at even scales the bench must centre it between pixels
        from kmsr_ops.kernels import gaussian_kernel

        np.save(tmp_path / "narrow.npy", gaussian_kernel(5, 0.5)[None])
        test_set = str(tmp_path / "narrow.npy")
    ks = parse_kernels([test_set])[0]
    lr = make_lr(hr, ks, ks.load(scale), 0, scale)
    assert lr.shape == (hr.shape[0] // scale, hr.shape[1] // scale)
    dy, dx = peak_shift(hr, imresize(lr, scale))
    assert abs(dy) < 0.1 and abs(dx) < 0.1, (dy, dx)
    if ks.kind != "bicubic":
        # The check sees a misaligned decimation: a centred blur kept from pixel 0 (a common
        # shortcut) puts the upscaled image (s - 1)/2 HR pixels down-right of the HR.
        naive = ndimage.gaussian_filter(hr, 0.4, mode="mirror")[::scale, ::scale]
        ny, nx = peak_shift(hr, imresize(naive, scale))
        # (The parabola is coarse this far from zero on an aliased image: 0.3 px is plenty here.)
        assert abs(ny - (scale - 1) / 2) < 0.3 and abs(nx - (scale - 1) / 2) < 0.3, (ny, nx)


@pytest.mark.parametrize("sigma", [1.25, 1.6, 1.7])
def test_gaussian_lr_odd_scale_equals_scipy(sigma):
    rgb = skdata.astronaut()[200:290, 180:270].astype(np.float64) / 255.0
    lr = gaussian_lr(rgb, sigma, 3)
    ref = np.stack([ndimage.gaussian_filter(rgb[..., c], sigma, mode="mirror", radius=math.ceil(3 * sigma))
                    for c in range(3)], axis=2)[1::3, 1::3]
    np.testing.assert_allclose(lr, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("sigma", [1.25, 1.7])
def test_gaussian_lr_matches_its_geometric_definition(scale, sigma):
    hr = texture(96)
    np.testing.assert_allclose(gaussian_lr(hr, sigma, scale), gaussian_lr_by_geometry(hr, sigma, scale),
                               rtol=0, atol=1e-12)


def test_kernel_preparation():
    k = np.zeros((9, 9))
    k[1, 6] = k[2, 6] = 0.5  # centroid (1.5, 6): 2.5 and 2 pixels off the centre
    odd = prepare_kernel(k * 3, 3)
    assert odd.shape == (9, 9) and odd.sum() == pytest.approx(1.0)
    cy, cx = kernel_centroid(odd)
    assert abs(cy - 4) <= 0.5 and abs(cx - 4) <= 0.5
    even = prepare_kernel(k, 2)  # the 2x2 box moves the centre between pixels
    assert even.shape == (10, 10)
    assert kernel_centroid(even) == pytest.approx((cy + 0.5, cx + 0.5))
    assert match_parity(np.ones((4, 4)) / 16, 4).shape == (4, 4)
    with pytest.raises(KmsrInputError, match="misaligned at x2"):
        kernel_lr(texture(32), np.ones((3, 3)) / 9, 2)
    with pytest.raises(KmsrInputError, match="smaller than the 25x25 kernel"):
        kernel_lr(texture(24), np.ones((25, 25)) / 625, 5)
    with pytest.raises(KmsrInputError, match="positive sum"):
        prepare_kernel(np.zeros((5, 5)), 3)


# --------------------------------------------------------------------------- golden data and published figures
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_lr_equals_matlab(shared_data, scale):
    gold = sio.loadmat(shared_data / "matlab" / f"butterfly_GT_x{scale}.mat")
    (img,) = load_hr([str(shared_data / "sr" / "Set5" / "butterfly.png")])
    # The golden x4 arrays are cropped to multiples of 12 (the pytorch-vdsr test set), not 4.
    hr = modcrop(img.pixels, 12 if scale == 4 else scale)
    np.testing.assert_array_equal(np.rint(hr * 255), gold["im_gt"])
    lr = make_lr(hr, KernelSpec("bicubic", "bicubic"), None, 0, scale)
    np.testing.assert_allclose(np.clip(lr * 255, 0, 255), gold["im_l"], rtol=0, atol=1e-10)


def test_published_figures_through_the_bench(shared_data):
    """Bicubic 24.04 dB on butterfly x3; published SRCNN 27.58 / 30.92 dB on butterfly / woman x3."""
    srcnn = shared_data / "weights" / "srcnn" / "srcnn_915_x{s}_oihw.npz"
    images = load_hr([str(shared_data / "sr" / "Set5" / n) for n in ("butterfly.png", "woman.png")])
    report = run_quality(images, [3], parse_kernels(["bicubic"]), parse_models(["bicubic", f"srcnn:{srcnn}"]),
                         tile=0)
    got = {(r["model"], r["image"]): r["psnr"] for r in report.results}
    assert got[("bicubic", "butterfly.png")] == pytest.approx(24.04, abs=0.005)
    assert got[("srcnn", "butterfly.png")] == pytest.approx(27.58, abs=0.02)
    assert got[("srcnn", "woman.png")] == pytest.approx(30.92, abs=0.02)


# --------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def bench_files(tmp_path_factory):
    """Two small HR photos (scikit-image, CC0), a kernel file, and tiny x2 checkpoints of an
    upscaled-input RGB network (kmsr) and an LR-input one (edsr)."""
    import torch

    from kmsr_cli.checkpoint import save_model
    from kmsr_cli.plugin_host import get_host

    root = tmp_path_factory.mktemp("bench")
    hr = root / "hr"
    hr.mkdir()
    write_png(hr / "astronaut.png", (skdata.astronaut()[100:190, 150:250]).astype(np.uint8))
    write_png(hr / "coffee.png", (skdata.coffee()[60:146, 200:296]).astype(np.uint8))
    from kmsr_ops.kernels import anisotropic_gaussian_kernel

    np.save(root / "aniso.npy", np.stack([anisotropic_gaussian_kernel(11, 1.0, 2.0, 0.3),
                                          anisotropic_gaussian_kernel(11, 2.0, 0.8, 1.2)]))
    host = get_host()
    torch.manual_seed(0)
    ckpts = {}
    for name, opts in (("kmsr", {"blocks": 1, "filters": 8}), ("edsr", {"blocks": 1, "filters": 8})):
        model = host.get("backbones", name).create(scale=2, **opts)
        (root / name).mkdir()
        ckpts[name] = save_model(root / name / "model.safetensors", model, backbone=name)
    return {"root": root, "hr": hr, "kernels": root / "aniso.npy", **ckpts}


def invoke(*args):
    from kmsr_cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)


def test_json_csv_markdown_agree(bench_files):
    common = ["bench", "quality", "--hr", bench_files["hr"], "--scales", "2",
              "--kernels", f"bicubic,g1.6,{bench_files['kernels']}", "--device", "cpu",
              "--models", f"bicubic,tiny={bench_files['kmsr']},lrnet:{bench_files['edsr']}"]
    runs = {fmt: invoke(*common, f"--{fmt}") for fmt in ("json", "csv", "markdown")}
    for fmt, res in runs.items():
        assert res.exit_code == 0, (fmt, res.output, res.exception)
    doc = json.loads(runs["json"].stdout)
    results = doc["results"]
    assert len(results) == 2 * 3 * 3  # images x test sets x models
    assert {tuple(sorted(r)) for r in results} == {("image", "kernel", "model", "psnr", "scale", "ssim")}
    assert {r["model"] for r in results} == {"bicubic", "tiny", "lrnet"}
    assert {r["kernel"] for r in results} == {"bicubic", "g1.6", "aniso"}
    assert {r["image"] for r in results} == {"astronaut.png", "coffee.png"}
    assert next(k for k in doc["kernel_sets"] if k["name"] == "aniso")["count"] == {"x2": 2}
    # The summary is the mean over images.
    for s in doc["summary"]:
        rs = [r for r in results if (r["model"], r["kernel"], r["scale"]) == (s["model"], s["kernel"], s["scale"])]
        assert s["n"] == len(rs) == 2
        assert s["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rs]), abs=1e-12)
        assert s["ssim"] == pytest.approx(np.mean([r["ssim"] for r in rs]), abs=1e-12)
    # CSV: the same per-image numbers.
    rows = list(csv.DictReader(io.StringIO(runs["csv"].stdout)))
    assert len(rows) == len(results)
    for row, r in zip(rows, results):
        assert (row["image"], row["model"], row["kernel"], int(row["scale"])) == (r["image"], r["model"], r["kernel"], r["scale"])
        assert float(row["psnr"]) == r["psnr"] and float(row["ssim"]) == r["ssim"]
    # Markdown: the means rounded, and the best of each column in bold.
    md = runs["markdown"].stdout
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    cols = [c.strip() for c in header.strip("|").split("|")][1:]
    assert cols == ["bicubic x2", "g1.6 x2", "aniso x2"]
    for line in md.splitlines():
        m = re.match(r"\| (bicubic|tiny|lrnet) \|", line)
        if not m:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")][1:]
        for col, cell in zip(cols, cells):
            kernel = col.split()[0]
            s = next(x for x in doc["summary"] if x["model"] == m.group(1) and x["kernel"] == kernel)
            p, q = (v.strip().strip("*") for v in cell.split("/"))
            assert float(p) == pytest.approx(s["psnr"], abs=0.005) and float(q) == pytest.approx(s["ssim"], abs=5e-5)
            best_p = max(x["psnr"] for x in doc["summary"] if x["kernel"] == kernel)
            assert cell.startswith("**") == (s["psnr"] == best_p)


def test_bicubic_figure_is_the_matlab_round_trip(bench_files):
    """The bicubic baseline's figure is that of imresize(imresize(HR, 1/2), 2), rounded to 8 bits."""
    from kmsr_ops.metrics import psnr

    images = load_hr([str(bench_files["hr"] / "coffee.png")])
    report = run_quality(images, [2], parse_kernels(["bicubic"]), parse_models(["bicubic"]))
    hr = modcrop(images[0].pixels, 2)
    up = np.rint(np.clip(imresize(np.clip(imresize(hr, 0.5), 0, 1), 2), 0, 1) * 255)
    assert report.results[0]["psnr"] == pytest.approx(psnr(hr * 255, up, crop_border=2, test_y_channel=True), abs=1e-9)


def test_rich_table_marks_the_best(bench_files):
    res = invoke("bench", "quality", "--hr", bench_files["hr"], "--scales", "2", "--kernels", "bicubic",
                 "--device", "cpu", "--models", f"bicubic,{bench_files['kmsr']}")
    assert res.exit_code == 0, (res.output, res.exception)
    lines = [line for line in res.stdout.splitlines() if re.match(r"^[│|]\s*(bicubic|kmsr)\s*[│|]", line)]
    assert len(lines) == 2 and sum(line.count("*") for line in lines) == 2  # one best PSNR, one best SSIM


def fails(*args, match):
    res = invoke("bench", "quality", "--hr", *args)
    assert isinstance(res.exception, (CliError, KmsrInputError)), (res.output, res.exception)
    assert re.search(match, str(res.exception)), str(res.exception)


def test_bad_input(bench_files, tmp_path):
    hr = bench_files["hr"]
    # An unknown model lists the installed ones.
    fails(hr, "--models", "bicubic,nosuchnet", match=r"unknown model 'nosuchnet'.*bicubic.*vdsr")
    fails(hr, "--models", f"nosuchnet:{bench_files['kernels']}", match=r"unknown backbone 'nosuchnet'.*kmsr.*srcnn")
    fails(hr, "--models", "vdsr:weights.npz", match=r"weights.npz: no such weights file")
    # A checkpoint for another scale.
    fails(hr, "--scales", "2,3", "--models", bench_files["kmsr"], match=r"x2 checkpoint, but --scales asks for x3")
    # A kernel file made for x2, used at x4.
    x2 = tmp_path / "gt_k_x2.npy"
    np.save(x2, np.ones((1, 5, 5)) / 25)
    fails(hr, "--scales", "4", "--kernels", str(x2), "--models", "bicubic", match=r"made for x2.*asks for x4")
    # A folder without images.
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(empty, "--models", "bicubic", match=r"holds no images")
    # An image smaller than the kernel.
    big = tmp_path / "big.npy"
    np.save(big, np.ones((1, 41, 41)) / 41**2)
    small = tmp_path / "small"
    small.mkdir()
    write_png(small / "s.png", skdata.astronaut()[:36, :36].astype(np.uint8))
    fails(small, "--scales", "2", "--kernels", str(big), "--models", "bicubic", match=r"smaller than the 42x42 kernels")
    # Too small for the metrics, unknown test sets, names given twice.
    write_png(small / "s.png", skdata.astronaut()[:12, :12].astype(np.uint8))
    fails(small, "--scales", "2", "--kernels", "bicubic", "--models", "bicubic", match=r"too small for x2")
    fails(hr, "--kernels", "box3", "--models", "bicubic", match=r"unknown test set 'box3'")
    fails(hr, "--models", "bicubic,bicubic", match=r"'bicubic' is given twice")
    res = invoke("bench", "quality", "--hr", hr, "--models", "bicubic", "--json", "--csv")
    assert res.exit_code == 2


def test_published_weights_for_another_scale(bench_files, shared_data):
    srcnn3 = shared_data / "weights" / "srcnn" / "srcnn_915_x3_oihw.npz"
    fails(bench_files["hr"], "--scales", "2", "--models", f"srcnn:{srcnn3}", match=r"holds x3 weights.*asks for x2")


def test_cli_error_is_one_line(run_kmsr, bench_files):
    proc = run_kmsr("bench", "quality", "--hr", bench_files["hr"], "--scales", "3", "--models", bench_files["edsr"])
    assert proc.returncode == 1
    assert "x2 checkpoint, but --scales asks for x3" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


# --------------------------------------------------------------------------- bench ops
def test_ratio_conventions():
    blur_like = {"ours_ms": 10.0, "grouped_conv_ms": 30.0, "scipy_loop_ms": 50.0,
                 "speedup_vs_grouped_conv": 3.0, "speedup_vs_scipy_loop": 5.0, "torch_threads": 2}
    assert extract_ratios(blur_like) == [
        {"name": "vs grouped conv", "baseline": 30.0, "ours": 10.0, "unit": "ms", "ratio": 3.0},
        {"name": "vs scipy loop", "baseline": 50.0, "ours": 10.0, "unit": "ms", "ratio": 5.0},
    ]
    estimate_like = {"ours_s_per_patch": 2.0, "ours_s_per_patch_single_process": 3.0,
                     "baseline_s_per_patch": 20.0, "baseline_s_per_patch_single_process": 33.0, "speedup": 11.0}
    assert extract_ratios(estimate_like) == [{"name": "vs baseline", "baseline": 20.0, "ours": 2.0, "unit": "s per patch", "ratio": 11.0}]
    explicit = {"ratios": [{"name": "step", "baseline": 4, "ours": 2, "unit": "s", "ratio": 2.0}], "speedup": 9.0}
    assert extract_ratios(explicit) == [{"name": "step", "baseline": 4, "ours": 2, "unit": "s", "ratio": 2.0}]
    assert extract_ratios({"psnr": 30.0}) == []
    # Benchmarks with their own keys: a throughput ratio as reported, times as baseline / ours.
    infer_like = {"eager_mpix_s": 0.5, "fast_mpix_s": 1.5, "speedup": 3.0}
    assert [r["ratio"] for r in extract_ratios(infer_like, "infer")] == [3.0]
    train_like = {"step_ms_with_degradation": 120.0, "step_ms_premade": 100.0, "overhead_fraction": 0.2}
    (row,) = extract_ratios(train_like, "train_step")
    assert (row["baseline"], row["ours"], row["unit"]) == (100.0, 120.0, "ms")
    assert row["ratio"] == pytest.approx(100.0 / 120.0)


def test_bench_ops_runs_blur(run_kmsr):
    proc = run_kmsr("bench", "ops", "--only", "blur", "--quick", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    (entry,) = doc["benchmarks"]
    assert entry["name"] == "blur" and entry["args"] == ["--json", "--repeats", "3"]
    assert {r["name"] for r in doc["ratios"]} == {"vs grouped conv", "vs scipy loop"}
    for r in doc["ratios"]:
        assert r["benchmark"] == "blur" and r["unit"] == "ms"
        assert r["ratio"] == pytest.approx(r["baseline"] / r["ours"], rel=1e-9)


def test_bench_ops_errors(tmp_path):
    res = invoke("bench", "ops", "--only", "nosuch")
    assert isinstance(res.exception, CliError) and "unknown benchmark 'nosuch'" in str(res.exception)
    res = invoke("bench", "ops", "--dir", tmp_path / "missing")
    assert isinstance(res.exception, CliError) and "no such folder" in str(res.exception)
    res = invoke("bench", "ops", "--dir", tmp_path)
    assert isinstance(res.exception, CliError) and "none of the speed benchmarks" in str(res.exception)


def test_ensemble_rows(bench_files):
    """--ensemble: each network's row is LABEL+ and scores its x8 self-ensemble; bicubic is untouched."""
    from kmsr_cli.infer import super_resolve
    from kmsr_cli.models import resolve_model
    from kmsr_ops.metrics import psnr

    images = load_hr([str(bench_files["hr"] / "astronaut.png")])
    specs = parse_models(["bicubic", f"net={bench_files['edsr']}"])
    plain = run_quality(images, [2], parse_kernels(["g1.25"]), specs, tile=0)
    ens = run_quality(images, [2], parse_kernels(["g1.25"]), specs, tile=0, ensemble=True)
    p = {r["model"]: r["psnr"] for r in plain.results}
    e = {r["model"]: r["psnr"] for r in ens.results}
    assert set(e) == {"bicubic", "net+"} and e["bicubic"] == p["bicubic"]
    hr = modcrop(images[0].pixels, 2)
    lr = np.clip(gaussian_lr(hr, 1.25, 2), 0, 1)
    out = super_resolve(resolve_model(str(bench_files["edsr"]), scale=2), lr, tile=0, ensemble=True)
    assert e["net+"] == pytest.approx(psnr(hr * 255, out.astype(np.float64), crop_border=2, test_y_channel=True), abs=1e-9)
    assert abs(e["net+"] - p["net"]) > 1e-3
