"""`kmsr pool build`, `merge --resample` and `show --plot/--against`: round trips, sizes, errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from kmsr_cli.errors import CliError
from kmsr_cli.kernelset import KernelSet, merge_kernel_sets
from kmsr_cli.pool import build_pool
from kmsr_ops.kernels import anisotropic_gaussian_kernel, gaussian_kernel


def read(path):
    with h5py.File(path, "r") as f:
        ks = f["kernels"][...]
        origins = [s.decode() for s in f["provenance/origin"][...]]
        sources = [s.decode() for s in f["provenance/source"][...]]
        index = f["provenance/index"][...]
        attrs = dict(f.attrs)
    return ks, origins, sources, index, attrs


def rows_of(sub, full):
    """Index in ``full`` of each kernel of ``sub`` (exact match), -1 when absent."""
    flat = full.reshape(len(full), -1)
    out = []
    for k in sub.reshape(len(sub), -1):
        hit = np.flatnonzero((flat == k).all(axis=1))
        out.append(int(hit[0]) if hit.size else -1)
    return np.array(out)


def names(folder):
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- build


def test_build_takes_subsets_of_both_sets(tmp_path, random_kernels, write_set):
    est = write_set(tmp_path / "est.h5", random_kernels(30, 25, seed=1), origin="estimated", scale=4)
    gen = write_set(tmp_path / "gen.h5", random_kernels(50, 25, seed=2), origin="generated", scale=4)
    summary = build_pool(est, tmp_path / "pool.h5", generated=gen, n_estimated=10, n_generated=20, seed=3)
    assert summary["count"] == 30 and summary["estimated"] == 10 and summary["generated"] == 20
    ks, origins, sources, index, attrs = read(tmp_path / "pool.h5")
    assert ks.shape == (30, 25, 25) and int(attrs["scale"]) == 4
    assert origins == ["estimated"] * 10 + ["generated"] * 20
    with KernelSet(est) as e, KernelSet(gen) as g:
        e_k, g_k = e.kernels(), g.kernels()
    ie, ig = rows_of(ks[:10], e_k), rows_of(ks[10:], g_k)
    assert (ie >= 0).all() and (ig >= 0).all(), "pool kernels must be kernels of the inputs"
    assert len(set(ie)) == 10 and len(set(ig)) == 20, "drawn without replacement"
    assert (np.diff(ie) > 0).all()
    # Provenance travels with each kernel: the index column still points at the source row.
    assert index[:10].tolist() == ie.tolist() and index[10:].tolist() == ig.tolist()
    assert sources[0] == "src:est.h5" and sources[-1] == "src:gen.h5"
    # Another seed, another draw; the same seed, the same pool.
    build_pool(est, tmp_path / "again.h5", generated=gen, n_estimated=10, n_generated=20, seed=3)
    build_pool(est, tmp_path / "other.h5", generated=gen, n_estimated=10, n_generated=20, seed=4)
    assert np.array_equal(read(tmp_path / "again.h5")[0], ks)
    assert not np.array_equal(read(tmp_path / "other.h5")[0], ks)


def test_cli_build_defaults_to_all_when_fewer_than_1000(run_kmsr, tmp_path, random_kernels, write_set):
    est = write_set(tmp_path / "est.h5", random_kernels(12, 25, seed=1), origin="estimated")
    gen = write_set(tmp_path / "gen.h5", random_kernels(7, 25, seed=2), origin="generated")
    proc = run_kmsr("pool", "build", "--estimated", est, "--generated", gen, "-o", "pool.h5", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["estimated"], doc["generated"], doc["count"]) == (12, 7, 19)
    assert "fewer than the 1000" in proc.stderr and "est.h5" in proc.stderr and "gen.h5" in proc.stderr
    ks, origins, *_ = read(tmp_path / "pool.h5")
    assert origins.count("estimated") == 12 and origins.count("generated") == 7


def test_build_from_a_generator_checkpoint(tmp_path, write_set):
    import torch

    from kmsr_cli.gan import train_gan
    from kmsr_cli.plugin_host import get_host

    ks = np.stack([gaussian_kernel(25, s) for s in np.linspace(1, 2, 40)]).astype(np.float32)
    est = write_set(tmp_path / "est.h5", ks, origin="estimated", scale=2)
    ckpt = tmp_path / "gan.safetensors"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_gan(get_host(), [est], ckpt, iters=1, settings={"width_mult": 1 / 32}, device="cpu")
    finally:
        torch.set_num_threads(threads)
    summary = build_pool(est, tmp_path / "pool.h5", generator_checkpoint=ckpt, n_estimated=40, n_generated=15, seed=1)
    assert summary["count"] == 55
    pk, origins, sources, index, _ = read(tmp_path / "pool.h5")
    assert origins == ["estimated"] * 40 + ["generated"] * 15
    assert sources[40:] == [str(ckpt)] * 15 and index[40:].tolist() == list(range(15))
    np.testing.assert_allclose(pk.astype(np.float64).sum(axis=(1, 2)), 1.0, atol=1e-5)
    # A checkpoint trained on x2 kernels cannot join an x4 pool.
    est4 = write_set(tmp_path / "est4.h5", ks, origin="estimated", scale=4)
    with pytest.raises(CliError, match=r"gan.safetensors: trained on x2 kernels.*x4"):
        build_pool(est4, tmp_path / "bad.h5", generator_checkpoint=ckpt, n_generated=3)
    assert not (tmp_path / "bad.h5").exists()


@pytest.mark.parametrize("case", ["neither", "both", "scale", "size", "nan", "out-is-input"])
def test_build_errors_name_the_problem_and_write_nothing(tmp_path, random_kernels, write_set, case):
    est = write_set(tmp_path / "est.h5", random_kernels(5, 25, seed=1), origin="estimated")
    gen = write_set(tmp_path / "gen.h5", random_kernels(5, 25, seed=2), scale=4 if case == "scale" else 2)
    out = tmp_path / "pool.h5"
    kwargs = {"generated": gen}
    pattern = {"neither": "either", "both": "either", "scale": r"gen.h5: scale x4 differs",
               "size": r"gen.h5: kernel size 15 differs", "nan": r"gen.h5: kernels\[2\]: expected finite",
               "out-is-input": "output is also an input"}[case]
    if case == "neither":
        kwargs = {}
    elif case == "both":
        kwargs["generator_checkpoint"] = tmp_path / "x.safetensors"
    elif case == "size":
        write_set(gen, random_kernels(5, 15, seed=2))
    elif case == "nan":
        with h5py.File(gen, "a") as f:
            f["kernels"][2, 3, 3] = np.nan
    elif case == "out-is-input":
        out = gen
    before = names(tmp_path)
    with pytest.raises(CliError, match=pattern):
        build_pool(est, out, **kwargs)
    assert names(tmp_path) == before


# --------------------------------------------------------------------------- merge --resample


def test_merge_resample_crops_and_pads_to_the_first_size(run_kmsr, tmp_path, write_set):
    k25 = np.stack([gaussian_kernel(25, 1.5)] * 3).astype(np.float32)
    big = np.stack([anisotropic_gaussian_kernel(31, 4.0, 1.0, 0.3), gaussian_kernel(31, 2.0)]).astype(np.float32)
    small = np.stack([gaussian_kernel(15, 1.0)]).astype(np.float32)
    a = write_set(tmp_path / "a25.h5", k25)
    b = write_set(tmp_path / "b31.h5", big)
    c = write_set(tmp_path / "c15.h5", small)
    proc = run_kmsr("pool", "merge", a, b, c, "-o", "m.h5")
    assert proc.returncode == 1 and "b31.h5: kernel size 31 differs" in proc.stderr and "--resample" in proc.stderr
    assert not (tmp_path / "m.h5").exists()
    proc = run_kmsr("pool", "merge", a, b, c, "-o", "m.h5", "--resample", "--json")
    assert proc.returncode == 0, proc.stderr
    ks, origins, sources, index, attrs = read(tmp_path / "m.h5")
    assert ks.shape == (6, 25, 25) and int(attrs["kernel_size"]) == 25
    np.testing.assert_array_equal(ks[:3], k25)
    # Centre crop of the 31x31 kernels (rows/cols 3..27), renormalised to sum 1.
    for got, src in zip(ks[3:5], big.astype(np.float64)):
        crop = src[3:28, 3:28]
        np.testing.assert_allclose(got, crop / crop.sum(), rtol=1e-5, atol=1e-8)
    # Zero padding of the 15x15 kernel: values unchanged, centred.
    padded = np.zeros((25, 25))
    padded[5:20, 5:20] = small[0]
    np.testing.assert_allclose(ks[5], padded, atol=1e-8)
    assert sources == ["src:a25.h5"] * 3 + ["src:b31.h5"] * 2 + ["src:c15.h5"]


def test_merge_never_mixes_scales_even_with_resample(tmp_path, random_kernels, write_set):
    a = write_set(tmp_path / "a.h5", random_kernels(2, 25), scale=2)
    b = write_set(tmp_path / "b.h5", random_kernels(2, 25), scale=4)
    with pytest.raises(CliError, match="b.h5: scale x4 differs"):
        merge_kernel_sets([a, b], tmp_path / "m.h5", resample=True)


# --------------------------------------------------------------------------- show


def test_show_plot_writes_a_png_of_the_documented_size(run_kmsr, tmp_path, random_kernels, write_set):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib, a dependency of kmsr")
    from PIL import Image

    est = write_set(tmp_path / "est.h5", np.stack([gaussian_kernel(25, s) for s in np.linspace(1, 2, 20)]).astype(np.float32),
                    origin="estimated")
    gen = write_set(tmp_path / "gen.h5", random_kernels(20, 25, seed=2), origin="generated")
    pool = merge_kernel_sets([est, gen], tmp_path / "pool.h5")
    proc = run_kmsr("pool", "show", pool, "--plot", "plots/pool.png", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["plot"] == "plots/pool.png" and doc["by_origin"] == {"estimated": 20, "generated": 20}
    with Image.open(tmp_path / "plots" / "pool.png") as im:
        assert im.format == "PNG" and im.size == (1200, 500)
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 10, "the plot is blank"
    assert names(tmp_path / "plots") == ["pool.png"]


def test_profile_plot_data():
    """The profile panel's numbers: central rows, mean and std across kernels, reference curves."""
    from kmsr_cli.pool_plots import central_profiles, reference_profiles

    ks = np.stack([gaussian_kernel(25, 1.0), gaussian_kernel(25, 2.0)])
    x, mean, std = central_profiles(ks)
    assert x.tolist() == list(range(-12, 13))
    np.testing.assert_allclose(mean, 0.5 * (ks[0, 12] + ks[1, 12]))
    np.testing.assert_allclose(std, 0.5 * np.abs(ks[0, 12] - ks[1, 12]))
    refs = reference_profiles(25, 2)
    assert set(refs) == {"bicubic x2", "Gaussian σ=1.25", "Gaussian σ=1.6", "Gaussian σ=1.7"}
    np.testing.assert_allclose(refs["bicubic x2"][12:16], 0.5 * np.array([0.5, 0.28125, 0.0, -0.03125]), atol=1e-12)
    g = np.exp(-np.arange(-12, 13) ** 2 / (2 * 1.6**2))
    np.testing.assert_allclose(refs["Gaussian σ=1.6"], g * g[12] / g.sum() ** 2, rtol=1e-12)


def test_show_against_reports_mmd(run_kmsr, tmp_path, write_set):
    rng = np.random.default_rng(0)
    a = np.stack([gaussian_kernel(25, s) for s in rng.uniform(1, 2, 30)]).astype(np.float32)
    b = np.stack([gaussian_kernel(25, s) for s in rng.uniform(1, 2, 30)]).astype(np.float32)
    c = np.stack([gaussian_kernel(25, s) for s in rng.uniform(3, 4, 30)]).astype(np.float32)
    pa, pb, pc = (write_set(tmp_path / f"{n}.h5", k) for n, k in (("a", a), ("b", b), ("c", c)))
    proc = run_kmsr("pool", "show", pa, "--against", pb, "--json")
    assert proc.returncode == 0, proc.stderr
    near = json.loads(proc.stdout)["against"]
    assert near["path"] == str(pb) and near["count"] == 30
    from kmsr_cli.pool import describe_pool

    far = describe_pool(pa, against=pc)["against"]
    assert far["mmd"] > 3 * near["mmd"] and far["mmd2_unbiased"] > 10 * abs(near["mmd2_unbiased"])
    assert far["statistics"]["width"]["min"] > 2.9 and near["statistics"]["width"]["max"] < 2.1
    same = describe_pool(pa, against=pa)["against"]
    assert same["mmd"] == pytest.approx(0.0, abs=1e-6)


def test_show_against_refuses_other_sizes(tmp_path, random_kernels, write_set):
    from kmsr_cli.pool import describe_pool

    a = write_set(tmp_path / "a.h5", random_kernels(3, 25))
    b = write_set(tmp_path / "b.h5", random_kernels(3, 31))
    with pytest.raises(CliError, match="b.h5: holds 31x31 kernels"):
        describe_pool(a, against=b)
