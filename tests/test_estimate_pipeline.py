"""`kmsr estimate` pipeline mechanics with a stand-in estimator: photos, patches, flat-patch
rejection, resume after a kill, shards. The real estimator is tested in test_estimator.py."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from PIL import Image

from kmsr_cli.errors import CliError
from kmsr_cli.estimate import (
    Settings,
    discover_photos,
    parse_shard,
    patch_is_textured,
    run_estimate,
)
from kmsr_cli.hookspecs import hookimpl
from kmsr_cli.kernelset import KernelSet, merge_kernel_sets
from kmsr_ops.kernels import gaussian_kernel

skdata = pytest.importorskip("skimage.data")


class MomentEstimator:
    """Deterministic stand-in: a Gaussian whose width follows the patch's mean intensity."""

    calls = 0
    fail_after = None

    def __init__(self, kernel_size=25, **options):
        self.kernel_size = kernel_size
        self.options = options

    def estimate(self, patch, kernel_size=None, rng=None):
        cls = type(self)
        if cls.fail_after is not None and cls.calls >= cls.fail_after:
            raise KeyboardInterrupt  # what a kill looks like from inside the loop
        cls.calls += 1
        return gaussian_kernel(kernel_size or self.kernel_size, 0.8 + 2 * float(patch.mean()))

    def params(self):
        return {"kind": "moment", **self.options}


def _host(fresh_host):
    plugin = types.SimpleNamespace(
        kmsr_register_estimators=hookimpl(lambda register: register("moment", MomentEstimator))
    )
    fresh_host.register_plugin(plugin, "test-estimators")
    fresh_host.check()
    fresh_host.collect()
    return fresh_host


@pytest.fixture
def host(fresh_host):
    MomentEstimator.calls = 0
    MomentEstimator.fail_after = None
    return _host(fresh_host)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(skdata.camera()).save(folder / "camera.png")
    Image.fromarray(skdata.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(skdata.coffee()).save(folder / "coffee.jpg", quality=95)
    return folder


def _settings(**kw):
    base = dict(scale=1, patch=128, per_image=3, kernel_size=15, estimator="moment", seed=7)
    base.update(kw)
    return Settings(**base)


def _flat_photo(path, size=300, seed=0):
    # Sky-like: a smooth vertical gradient with faint sensor noise.
    rng = np.random.default_rng(seed)
    y = np.linspace(0.55, 0.75, size)[:, None] * np.ones((1, size))
    img = np.clip(y + rng.normal(0, 0.004, y.shape), 0, 1)
    Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
    return path


def test_discover_files_folders_globs_and_stdin(photos, tmp_path):
    everything = discover_photos([str(photos)])
    assert [p.name for p in everything] == ["astronaut.png", "camera.png", "coffee.jpg"]
    assert [p.name for p in discover_photos([str(photos / "*.png")])] == ["astronaut.png", "camera.png"]
    listed = discover_photos(["-"], stdin=[f"{photos / 'coffee.jpg'}\n", "\n", f"{photos / 'camera.png'}\n"])
    assert [p.name for p in listed] == ["coffee.jpg", "camera.png"]
    # duplicates collapse, order kept
    assert len(discover_photos([str(photos / "camera.png"), str(photos / "camera.png")])) == 1


def test_missing_photo_is_named(photos):
    with pytest.raises(CliError, match=r"nope\.png: no such file"):
        discover_photos([str(photos / "camera.png"), str(photos / "nope.png")])
    with pytest.raises(CliError, match="matches no file"):
        discover_photos([str(photos / "*.gif")])


def test_shard_parsing():
    assert parse_shard("2/5") == (2, 5)
    assert parse_shard(None) == (0, 1)
    for bad in ("5/5", "x", "1/0", "-1/3"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_texture_criterion_rejects_sky_but_the_papers_accepts_it(tmp_path):
    flat = np.asarray(Image.open(_flat_photo(tmp_path / "sky.png")), dtype=np.float64) / 255
    textured = skdata.camera()[100:356, 100:356] / 255.0
    wall = np.full((256, 256), 0.4) + np.random.default_rng(1).normal(0, 0.01, (256, 256))
    assert patch_is_textured(textured, "texture")
    assert not patch_is_textured(flat[:256, :256], "texture")
    assert not patch_is_textured(wall, "texture")
    # The paper's |mean - var| >= 0.003 mean holds for all three: it cannot be the only filter.
    assert all(patch_is_textured(p, "paper") for p in (textured, flat[:256, :256], wall))


@pytest.mark.parametrize("estimator", ["moment", "moment-batch"])
def test_progress_events_count_photos_and_kernels(batch_host, photos, tmp_path, estimator):
    """run_estimate reports through the one progress protocol: per photo, per plan, per kernel,
    each count ending at what the output file holds (3 photos x 3 patches)."""
    events = []
    run_estimate(batch_host, discover_photos([str(photos)]), tmp_path / "k.h5", _settings(estimator=estimator), progress=events.append)
    with KernelSet(tmp_path / "k.h5") as ks:
        n = len(ks)
    by = {st: [e for e in events if e.stage == st] for st in ("estimate.photo", "estimate.planned", "estimate.kernel")}
    assert [(e.done, e.total) for e in by["estimate.photo"]] == [(1, 3), (2, 3), (3, 3)]
    assert [e.data for e in by["estimate.planned"]] == [3, 3, 3] and by["estimate.planned"][-1].total == n == 9
    assert [e.done for e in by["estimate.kernel"]] == list(range(1, n + 1))
    assert all(e.done <= e.total for e in by["estimate.kernel"]) and by["estimate.kernel"][-1].total == n


def test_run_writes_kernels_with_provenance(host, photos, tmp_path):
    out = tmp_path / "k.h5"
    s = run_estimate(host, discover_photos([str(photos)]), out, _settings())
    assert s.kernels_written == 9 and s.kernels_total == 9 and not s.photos_skipped
    with KernelSet(out) as ks:
        assert ks.scale == 1 and ks.kernel_size == 15 and len(ks) == 9
        prov = ks.provenance()
        kernels = ks.kernels()
    assert set(prov.origin) == {"estimated"}
    assert {p.rsplit("/", 1)[-1] for p in prov.source} == {"camera.png", "astronaut.png", "coffee.jpg"}
    for i in range(9):
        top, left, h, w = prov.box[i]
        assert h == w == 128 and top >= 0 and left >= 0
        params = json.loads(prov.params[i])
        assert params["estimator"] == {"kind": "moment"}
        assert len(params["photo_sha256"]) == 64 and params["scale"] == 1
    # the stand-in's kernel is a function of the patch: check one against its own patch
    from kmsr_cli.estimate import load_photo

    i = prov.source.index(str(photos / "camera.png"))
    grey, _ = load_photo(photos / "camera.png", 1)
    top, left, h, w = prov.box[i]
    want = gaussian_kernel(15, 0.8 + 2 * grey[top : top + h, left : left + w].astype(np.float32).mean())
    np.testing.assert_allclose(kernels[i], want, atol=1e-6)
    assert not (tmp_path / "k.h5.partial").exists()


def test_patches_follow_content_and_seed_not_path(host, photos, tmp_path):
    a = run_estimate(host, discover_photos([str(photos / "camera.png")]), tmp_path / "a.h5", _settings())
    moved = tmp_path / "elsewhere.png"
    moved.write_bytes((photos / "camera.png").read_bytes())
    b = run_estimate(host, [moved], tmp_path / "b.h5", _settings())
    run_estimate(host, [moved], tmp_path / "c.h5", _settings(seed=8))
    assert a.kernels_total == b.kernels_total == 3
    boxes = [KernelSet(tmp_path / f"{n}.h5").provenance().box for n in "abc"]
    assert boxes[0] == boxes[1]
    assert boxes[0] != boxes[2]


def test_resume_after_kill_redoes_only_the_rest(host, photos, tmp_path):
    photo_list = discover_photos([str(photos)])
    full = run_estimate(host, photo_list, tmp_path / "full.h5", _settings())
    assert full.kernels_total == 9

    out = tmp_path / "k.h5"
    out.write_bytes(b"previous file, must survive the kill")  # not a kernel set: untouched by a killed run
    MomentEstimator.calls, MomentEstimator.fail_after = 0, 4
    with pytest.raises(KeyboardInterrupt):
        run_estimate(host, photo_list, tmp_path / "k2.h5", _settings())
    assert len(list((tmp_path / "k2.h5.partial").glob("*.npz"))) == 4
    assert not (tmp_path / "k2.h5").exists()
    assert out.read_bytes() == b"previous file, must survive the kill"

    MomentEstimator.calls, MomentEstimator.fail_after = 0, None
    resumed = run_estimate(host, photo_list, tmp_path / "k2.h5", _settings())
    assert MomentEstimator.calls == 5 and resumed.kernels_resumed == 4 and resumed.kernels_written == 5
    # Same kernels as the uninterrupted run (order may differ): compare by unit key.
    def by_unit(path):
        with KernelSet(path) as ks:
            keys = [json.loads(p)["unit"] for p in ks.provenance().params]
            return dict(zip(keys, ks.kernels()))

    a, b = by_unit(tmp_path / "full.h5"), by_unit(tmp_path / "k2.h5")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])

    # A rerun of a finished command has nothing to do.
    MomentEstimator.calls = 0
    again = run_estimate(host, photo_list, tmp_path / "k2.h5", _settings())
    assert MomentEstimator.calls == 0 and again.kernels_written == 0 and again.kernels_total == 9


def test_shards_merge_to_the_single_run(host, photos, tmp_path):
    photo_list = discover_photos([str(photos)])
    run_estimate(host, photo_list, tmp_path / "all.h5", _settings())
    for i in range(2):
        run_estimate(host, photo_list, tmp_path / f"s{i}.h5", _settings(), shard=(i, 2))
    merge_kernel_sets([tmp_path / "s0.h5", tmp_path / "s1.h5"], tmp_path / "merged.h5")
    with KernelSet(tmp_path / "all.h5") as a, KernelSet(tmp_path / "merged.h5") as m:
        ka = {json.loads(p)["unit"] for p in a.provenance().params}
        km = {json.loads(p)["unit"] for p in m.provenance().params}
    assert ka == km and len(ka) == 9


def test_bad_photos_are_skipped_with_reasons(host, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(skdata.camera()).save(folder / "good.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    Image.fromarray(skdata.camera()[:60, :80]).save(folder / "tiny.png")
    _flat_photo(folder / "flat.png")
    warnings = []
    s = run_estimate(host, discover_photos([str(folder)]), tmp_path / "k.h5", _settings(per_image=1), warn=warnings.append)
    reasons = {r["photo"].rsplit("/", 1)[-1]: r["reason"] for r in s.photos_skipped}
    assert set(reasons) == {"corrupt.png", "tiny.png", "flat.png"}
    assert "corrupt.png" in reasons["corrupt.png"] or "cannot read" in reasons["corrupt.png"]
    assert "too small" in reasons["tiny.png"]
    assert "no textured patch" in reasons["flat.png"]
    assert s.kernels_total == 1 and len(warnings) == 3


def test_only_flat_photos_write_nothing(host, tmp_path):
    photo = _flat_photo(tmp_path / "flat.png")
    s = run_estimate(host, [photo], tmp_path / "k.h5", _settings())
    assert s.kernels_total == 0 and s.output is None
    assert not (tmp_path / "k.h5").exists()


def test_existing_output_with_other_settings_is_refused(host, photos, tmp_path):
    out = tmp_path / "k.h5"
    run_estimate(host, discover_photos([str(photos / "camera.png")]), out, _settings())
    with pytest.raises(CliError, match="already holds x1 kernels of size 15"):
        run_estimate(host, discover_photos([str(photos / "camera.png")]), out, _settings(kernel_size=13))


def test_workers_give_the_same_kernels(host, photos, tmp_path, monkeypatch):
    # Worker processes load plugins through entry points; make the stand-in visible to them.
    pytest.importorskip("kmsr_darkchannel", reason="needs the built-in dark-channel estimator for a real worker run")
    photo_list = discover_photos([str(photos / "camera.png")])
    real = _settings(estimator="dark-channel", per_image=2, kernel_size=9,
                     options={})
    from kmsr_cli.plugin_host import get_host

    h = get_host()
    one = run_estimate(h, photo_list, tmp_path / "one.h5", real, workers=1)
    two = run_estimate(h, photo_list, tmp_path / "two.h5", real, workers=2)
    assert one.kernels_total == two.kernels_total == 2
    with KernelSet(tmp_path / "one.h5") as a, KernelSet(tmp_path / "two.h5") as b:
        ka = dict(zip((json.loads(p)["unit"] for p in a.provenance().params), a.kernels()))
        kb = dict(zip((json.loads(p)["unit"] for p in b.provenance().params), b.kernels()))
    assert ka.keys() == kb.keys()
    for key in ka:
        np.testing.assert_allclose(ka[key], kb[key], atol=1e-5)


class BatchMomentEstimator(MomentEstimator):
    """The stand-in with ``estimate_batch``: records each call; ``refuse`` holds the means of
    patches it cannot use (KmsrInputError from either method)."""

    batches: list = []
    singles = 0
    refuse: set = set()

    def estimate(self, patch, kernel_size=None, rng=None):
        from kmsr_ops.errors import KmsrInputError

        type(self).singles += 1
        if round(float(patch.mean()), 6) in type(self).refuse:
            raise KmsrInputError("patch: refused by the test")
        return super().estimate(patch, kernel_size, rng)

    def estimate_batch(self, patches, kernel_size=None, rng=None):
        from kmsr_ops.errors import KmsrInputError

        type(self).batches.append((patches.shape, patches.dtype, kernel_size, type(rng).__name__))
        if any(round(float(p.mean()), 6) in type(self).refuse for p in patches):
            raise KmsrInputError("patches: refused by the test")
        # Each kernel computed independently of the pipeline: the Gaussian the stand-in gives.
        return np.stack([gaussian_kernel(kernel_size, 0.8 + 2 * float(p.mean())) for p in patches])


@pytest.fixture
def batch_host(fresh_host):
    MomentEstimator.calls = 0
    MomentEstimator.fail_after = None
    BatchMomentEstimator.batches, BatchMomentEstimator.singles, BatchMomentEstimator.refuse = [], 0, set()
    plugin = types.SimpleNamespace(kmsr_register_estimators=hookimpl(lambda register: (
        register("moment", MomentEstimator), register("moment-batch", BatchMomentEstimator))))
    fresh_host.register_plugin(plugin, "test-estimators")
    fresh_host.check()
    fresh_host.collect()
    return fresh_host


def _by_patch(path):
    with KernelSet(path) as ks:
        prov = ks.provenance()
        return {(src, tuple(box)): k for src, box, k in zip(prov.source, prov.box, ks.kernels())}


def test_estimate_batch_is_used_and_gives_the_per_patch_kernels(batch_host, photos, tmp_path):
    photo_list = discover_photos([str(photos)])
    one = run_estimate(batch_host, photo_list, tmp_path / "one.h5", _settings())
    assert MomentEstimator.calls == 9
    MomentEstimator.calls = 0
    many = run_estimate(batch_host, photo_list, tmp_path / "many.h5", _settings(estimator="moment-batch"))
    # One call per photo with its 3 patches as a float32 stack; estimate() never called.
    assert BatchMomentEstimator.batches == [((3, 128, 128), np.dtype(np.float32), 15, "Generator")] * 3
    assert BatchMomentEstimator.singles == 0 and MomentEstimator.calls == 0
    assert one.kernels_written == many.kernels_written == 9 and not many.failed_patches
    a, b = _by_patch(tmp_path / "one.h5"), _by_patch(tmp_path / "many.h5")
    assert a.keys() == b.keys() and len(a) == 9
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_estimate_batch_refusal_falls_back_to_naming_the_patch(batch_host, photos, tmp_path):
    from kmsr_cli.estimate import load_photo

    camera = photos / "camera.png"
    run_estimate(batch_host, [camera], tmp_path / "all.h5", _settings(estimator="moment-batch"))
    with KernelSet(tmp_path / "all.h5") as ks:
        top, left, h, w = ks.provenance().box[1]
    grey, _ = load_photo(camera, 1)
    BatchMomentEstimator.batches = []
    BatchMomentEstimator.refuse = {round(float(grey[top:top + h, left:left + w].astype(np.float32).mean()), 6)}
    warnings = []
    s = run_estimate(batch_host, [camera], tmp_path / "k.h5", _settings(estimator="moment-batch"), warn=warnings.append)
    assert len(BatchMomentEstimator.batches) == 1 and BatchMomentEstimator.singles == 3
    assert s.kernels_written == 2 and [f["box"] for f in s.failed_patches] == [[top, left, h, w]]
    assert len(warnings) == 1 and "refused by the test" in warnings[0]
    assert _by_patch(tmp_path / "k.h5").keys() == _by_patch(tmp_path / "all.h5").keys() - {(str(camera), (top, left, h, w))}
