"""HDF5 kernel sets: schema, round trip, whole-kernel reads, atomic writes, bad files, merge,
DataLoader workers, and the statistics ``pool show`` reports (against analytic values)."""

from __future__ import annotations

import json
import math
import os
import pickle

import h5py
import numpy as np
import pytest

from kmsr_cli.errors import CliError
from kmsr_cli.kernelset import FORMAT_NAME, FORMAT_VERSION, KernelSet, Provenance, merge_kernel_sets, write_kernel_set
from kmsr_ops.errors import KmsrInputError
from kmsr_ops.kernels import gaussian_kernel

PROV_FIELDS = ("origin", "source", "box", "method", "params", "seed", "index")


def raw_set(path, kernels, **attrs):
    """An HDF5 file written with h5py directly (bypassing the writer's validation)."""
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "scale": 2, **attrs})
        if kernels is not None:
            f.create_dataset("kernels", data=np.asarray(kernels, dtype=np.float32))
    return path


def folder_listing(folder):
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- schema and round trip


def test_schema(tmp_path, random_kernels, write_set):
    n, k = 300, 25
    kernels = random_kernels(n, k, seed=1)
    path = write_set(tmp_path / "s.h5", kernels, scale=4, description="schema test")
    with h5py.File(path, "r") as f:
        a = f.attrs
        assert a["format"] == FORMAT_NAME == "kmsr-kernel-set"
        assert int(a["format_version"]) == FORMAT_VERSION == 1
        assert int(a["scale"]) == 4
        assert int(a["kernel_size"]) == k
        assert int(a["count"]) == n
        assert str(a["created_by"]).startswith("kmsr ")
        created = str(a["created_at"])
        assert created[:4].isdigit() and "T" in created and created.endswith("+00:00")
        assert a["description"] == "schema test"
        ds = f["kernels"]
        assert ds.shape == (n, k, k) and ds.dtype == np.float32
        assert ds.chunks is not None and ds.chunks[1:] == (k, k), "chunks must hold whole kernels"
        assert 1 <= ds.chunks[0] <= n
        assert ds.compression == "gzip"
        g = f["provenance"]
        assert set(g) == set(PROV_FIELDS)
        for name in ("origin", "source", "method", "params", "seed", "index"):
            assert g[name].shape == (n,), name
        assert g["box"].shape == (n, 4) and g["box"].dtype == np.int32
        assert g["seed"].dtype == np.int64 and g["index"].dtype == np.int64
        assert h5py.check_string_dtype(g["origin"].dtype) is not None


def test_round_trip(tmp_path, random_kernels):
    kernels = random_kernels(10, 7, seed=2)
    prov = Provenance()
    for i in range(10):
        prov.append(origin=("estimated", "generated", "synthetic")[i % 3], source=f"photo_{i}.png", method="dark",
                    params={"lam": 0.1 * i, "name": "é"}, box=(i, 2 * i, 32, 48) if i % 2 else None,
                    seed=None if i == 3 else i, index=i * 7)
    path = write_kernel_set(tmp_path / "rt.h5", kernels, prov, scale=3)
    with KernelSet(path) as ks:
        assert len(ks) == 10 and ks.kernel_size == 7 and ks.scale == 3
        np.testing.assert_array_equal(ks.kernels(), kernels)
        back = ks.provenance()
    for name in PROV_FIELDS:
        assert getattr(back, name) == getattr(prov, name), name
    assert back.row(3)["seed"] == -1 and back.row(2)["box"] == [-1, -1, -1, -1]
    assert back.row(1) == {"origin": "generated", "source": "photo_1.png", "box": [1, 2, 32, 48], "method": "dark",
                           "params": {"lam": 0.1, "name": "é"}, "seed": 1, "index": 7}


def test_getitem_returns_whole_kernels(tmp_path, random_kernels, write_set):
    kernels = random_kernels(6, 25, seed=3)  # no symmetry: a row, a column or a transpose would differ
    path = write_set(tmp_path / "g.h5", kernels)
    ks = KernelSet(path)
    assert ks._file is None, "the file must be opened lazily, not in __init__"
    for i in range(6):
        k = ks[i]
        assert k.shape == (25, 25) and k.dtype == np.float32
        np.testing.assert_array_equal(k, kernels[i])
    np.testing.assert_array_equal(ks[-1], kernels[5])
    np.testing.assert_array_equal(ks[np.int64(2)], kernels[2])
    for bad in (6, -7):
        with pytest.raises(IndexError):
            ks[bad]
    ks.close()


# --------------------------------------------------------------------------- atomic writes


def test_failed_write_keeps_previous_file(tmp_path, random_kernels, write_set, monkeypatch):
    path = write_set(tmp_path / "pool.h5", random_kernels(4, 5, seed=4))
    before = path.read_bytes()
    listing = folder_listing(tmp_path)

    real = h5py.Group.create_dataset
    calls = []

    def failing(self, name, *args, **kwargs):
        calls.append(name)
        if name != "kernels":  # the file is open and /kernels already written: fail midway
            raise OSError("disk full (simulated)")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError, match="simulated"):
        write_set(path, random_kernels(8, 5, seed=5))
    assert calls[0] == "kernels" and len(calls) == 2  # failed after the file was opened and partly written
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert folder_listing(tmp_path) == listing == ["pool.h5"]


def test_interrupted_write_leaves_no_temp_file(tmp_path, random_kernels, write_set, monkeypatch):
    path = tmp_path / "new.h5"

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(h5py.Group, "create_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_set(path, random_kernels(2, 5))
    assert folder_listing(tmp_path) == []


def test_invalid_kernels_do_not_touch_previous_file(tmp_path, random_kernels, write_set):
    path = write_set(tmp_path / "pool.h5", random_kernels(4, 5, seed=6))
    before = path.read_bytes()
    bad = random_kernels(4, 5, seed=7)
    bad[2, 1, 1] = np.nan
    with pytest.raises(KmsrInputError, match=r"kernels\[2\]: expected finite entries"):
        write_set(path, bad)
    assert path.read_bytes() == before
    assert folder_listing(tmp_path) == ["pool.h5"]


@pytest.mark.parametrize(
    "kernels,match",
    [
        (np.full((2, 4, 4), 1 / 16, dtype=np.float32), "odd"),
        (np.zeros((0, 5, 5), dtype=np.float32), "non-empty"),
        (np.full((2, 5, 5), 1 / 50, dtype=np.float32), "sum 1"),
        (np.full((2, 5, 3), 1 / 15, dtype=np.float32), "square"),
    ],
    ids=["even", "empty", "sum", "not-square"],
)
def test_writer_rejects_bad_kernels(tmp_path, write_set, kernels, match):
    with pytest.raises(KmsrInputError, match=match):
        write_set(tmp_path / "w.h5", kernels)
    assert folder_listing(tmp_path) == []


def test_writer_rejects_provenance_of_wrong_length(tmp_path, random_kernels):
    prov = Provenance()
    prov.append(origin="synthetic", source="s", method="m")
    with pytest.raises(KmsrInputError, match="expected 3 entries"):
        write_kernel_set(tmp_path / "p.h5", random_kernels(3, 5), prov, scale=2)
    with pytest.raises(KmsrInputError, match="origin"):
        prov.append(origin="stolen", source="s", method="m")


# --------------------------------------------------------------------------- bad files


def _bad_file(tmp_path, case):
    path = tmp_path / f"{case}.h5"
    k = gaussian_kernel(5, 1.0).astype(np.float32)
    if case == "folder":
        path.mkdir()
    elif case == "text":
        path.write_text("kernel,values\n1,2\n")
    elif case == "no-format":
        with h5py.File(path, "w") as f:
            f.create_dataset("kernels", data=np.stack([k]))
    elif case == "empty":
        raw_set(path, np.zeros((0, 5, 5)))
    elif case == "no-kernels":
        raw_set(path, None)
    elif case == "newer":
        raw_set(path, np.stack([k]), format_version=FORMAT_VERSION + 1)
    elif case == "not-square":
        raw_set(path, np.ones((1, 5, 3)) / 15)
    elif case == "even":
        raw_set(path, np.ones((1, 4, 4)) / 16)
    return path


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing", "no such file"),
        ("folder", "is a folder"),
        ("text", "not a readable HDF5 file"),
        ("no-format", "not a kmsr kernel set"),
        ("empty", "holds no kernels"),
        ("no-kernels", "no /kernels"),
        ("newer", "newer than this kmsr"),
        ("not-square", r"\(N, K, K\)"),
        ("even", "even"),
    ],
)
def test_bad_files_are_named(tmp_path, case, match):
    path = _bad_file(tmp_path, case)
    with pytest.raises(CliError, match=match) as excinfo:
        KernelSet(path)
    assert str(path) in str(excinfo.value)


@pytest.mark.parametrize(
    "value,match", [(np.nan, "expected finite entries"), (-0.01, "expected entries >= 0")], ids=["nan", "negative"]
)
def test_bad_kernel_values_are_named(tmp_path, value, match):
    ks = np.stack([gaussian_kernel(5, 1.0)] * 3)
    ks[1, 0, 0] = value
    path = raw_set(tmp_path / "bad.h5", ks)
    with KernelSet(path) as s:  # the header is fine; the values are checked when read
        with pytest.raises(CliError, match=match) as excinfo:
            s.kernels()
    msg = str(excinfo.value)
    assert str(path) in msg and "kernels[1]" in msg
    from kmsr_cli.pool import describe_pool

    with pytest.raises(CliError, match=match):
        describe_pool(path)


def test_empty_set_allowed_when_asked(tmp_path):
    path = raw_set(tmp_path / "e.h5", np.zeros((0, 5, 5)))
    assert len(KernelSet(path, require_nonempty=False)) == 0


# --------------------------------------------------------------------------- merge


def test_merge_concatenates_kernels_and_provenance(tmp_path, random_kernels, write_set):
    ka, kb = random_kernels(3, 7, seed=8), random_kernels(5, 7, seed=9)
    a = write_set(tmp_path / "a.h5", ka, method="est_a", origin="estimated", scale=2)
    b = write_set(tmp_path / "b.h5", kb, method="gen_b", origin="generated", scale=2)
    out = merge_kernel_sets([a, b], tmp_path / "m.h5")
    with KernelSet(a) as sa, KernelSet(b) as sb:
        pa, pb = sa.provenance(), sb.provenance()
    with KernelSet(out) as m:
        assert len(m) == 8 and m.scale == 2 and m.kernel_size == 7
        np.testing.assert_array_equal(m.kernels(), np.concatenate([ka, kb]))
        pm = m.provenance()
        assert m.attrs["description"] == "merge of 2 sets"
    for name in PROV_FIELDS:
        assert getattr(pm, name) == getattr(pa, name) + getattr(pb, name), name
    assert pm.method == ["est_a"] * 3 + ["gen_b"] * 5
    assert pm.source == ["src:a.h5"] * 3 + ["src:b.h5"] * 5
    assert pm.index == [0, 1, 2, 0, 1, 2, 3, 4]


def test_merge_refuses_mismatched_scale(tmp_path, random_kernels, write_set):
    a = write_set(tmp_path / "a.h5", random_kernels(2, 5), scale=2)
    b = write_set(tmp_path / "b.h5", random_kernels(2, 5), scale=4)
    with pytest.raises(CliError) as excinfo:
        merge_kernel_sets([a, b], tmp_path / "m.h5")
    msg = str(excinfo.value)
    assert "scale" in msg and "x4" in msg and "x2" in msg and str(a) in msg and str(b) in msg
    assert not (tmp_path / "m.h5").exists()


def test_merge_refuses_mismatched_kernel_size(tmp_path, random_kernels, write_set):
    a = write_set(tmp_path / "a.h5", random_kernels(2, 5))
    b = write_set(tmp_path / "b.h5", random_kernels(2, 7))
    with pytest.raises(CliError, match="kernel size 7 differs") as excinfo:
        merge_kernel_sets([a, b], tmp_path / "m.h5")
    assert str(b) in str(excinfo.value)
    assert not (tmp_path / "m.h5").exists()


def test_merge_needs_inputs(tmp_path):
    with pytest.raises(CliError, match="at least one"):
        merge_kernel_sets([], tmp_path / "m.h5")


# --------------------------------------------------------------------------- workers


class KernelDataset:
    """A minimal map-style dataset over a KernelSet (what a training loader does)."""

    def __init__(self, kernel_set: KernelSet):
        self.ks = kernel_set

    def __len__(self):
        return len(self.ks)

    def __getitem__(self, i):
        return i, self.ks[i], os.getpid()


def test_pickle_drops_open_handle(tmp_path, random_kernels, write_set):
    kernels = random_kernels(4, 9, seed=10)
    ks = KernelSet(write_set(tmp_path / "p.h5", kernels))
    np.testing.assert_array_equal(ks[0], kernels[0])
    assert ks._file is not None  # open now
    clone = pickle.loads(pickle.dumps(ks))
    assert clone._file is None and ks._file is not None
    np.testing.assert_array_equal(clone[3], kernels[3])
    np.testing.assert_array_equal(ks[2], kernels[2])
    clone.close()
    ks.close()


def test_dataloader_workers_read_whole_kernels(tmp_path, random_kernels, write_set):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    kernels = random_kernels(12, 9, seed=11)
    ks = KernelSet(write_set(tmp_path / "dl.h5", kernels))
    ks[0]  # the parent holds an open handle; spawned workers get a pickled copy without it
    loader = DataLoader(KernelDataset(ks), batch_size=3, num_workers=2, multiprocessing_context="spawn")
    seen, pids = {}, set()
    for idx, batch, pid in loader:
        assert batch.shape == (3, 9, 9) and batch.dtype == torch.float32
        for i, k in zip(idx.tolist(), batch.numpy()):
            seen[i] = k
        pids.update(pid.tolist())
    assert sorted(seen) == list(range(12))
    for i, k in seen.items():
        np.testing.assert_array_equal(k, kernels[i])
    assert os.getpid() not in pids and len(pids) == 2
    ks.close()


# --------------------------------------------------------------------------- pool show statistics


def test_pool_show_json_statistics_match_gaussian_oracle(run_kmsr, tmp_path, write_set):
    sigmas = [1.5, 2.0, 2.5, 2.0]
    kernels = np.stack([gaussian_kernel(31, s) for s in sigmas]).astype(np.float32)  # 31 px: > 6 sigma each side
    path = write_set(tmp_path / "gauss.h5", kernels, scale=3, method="gaussian")
    proc = run_kmsr("pool", "show", path, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["count"] == 4 and doc["kernel_size"] == 31 and doc["scale"] == 3
    assert doc["by_origin"] == {"synthetic": 4} and doc["by_method"] == {"gaussian": 4}
    assert doc["path"] == str(path) and doc["created_by"].startswith("kmsr ")
    st = doc["statistics"]
    assert set(st) == {"width", "anisotropy", "entropy_bits"}
    # width: sqrt of the mean covariance eigenvalue, i.e. sigma for an isotropic Gaussian
    assert st["width"]["mean"] == pytest.approx(np.mean(sigmas), rel=1e-4)
    assert st["width"]["min"] == pytest.approx(1.5, rel=1e-4)
    assert st["width"]["max"] == pytest.approx(2.5, rel=1e-4)
    assert st["width"]["median"] == pytest.approx(2.0, rel=1e-4)
    assert st["width"]["std"] == pytest.approx(np.std(sigmas), rel=1e-3)
    assert st["anisotropy"]["mean"] == pytest.approx(1.0, abs=1e-4)
    assert st["anisotropy"]["max"] == pytest.approx(1.0, abs=1e-4)
    # entropy of a well-sampled 2-D Gaussian on a unit grid: log2(2 pi e sigma^2) bits
    expected_h = np.mean([math.log2(2 * math.pi * math.e * s * s) for s in sigmas])
    assert st["entropy_bits"]["mean"] == pytest.approx(expected_h, rel=1e-3)
