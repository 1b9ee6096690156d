"""The conformance checker (``kmsr_cli.plugin_check``, ``kmsr plugins --check``) and the example kit plugin.

- in process: plugins that break one contract each get the finding that names it; the kit and
  the built-ins pass;
- through the CLI, with ``tests/fixtures/kmsr-example-kit`` pip-installed like a third-party
  package: each of its four backends used end to end (estimate; gan train, resume and sampling;
  train and sr), and ``kmsr plugins --check`` on it and on a broken plugin.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import types

import h5py
import numpy as np
import pytest
import torch
from conftest import FIXTURES, install_fixture_package
from PIL import Image
from torch import nn

from kmsr_cli.checkpoint import read_model_meta
from kmsr_cli.errors import CliError
from kmsr_cli.hookspecs import API_VERSION, hookimpl
from kmsr_cli.plugin_check import (
    ERROR,
    OK,
    SKIPPED,
    WARNING,
    PluginContractError,
    assert_conforms,
    check_backend,
    normalise_kind,
    targets,
)
from kmsr_cli.plugin_host import PluginHost

KIT_SRC = FIXTURES / "kmsr-example-kit"
KIT_BACKENDS = [("estimators", "gradient-ratio"), ("generators", "tiny-gan"), ("backbones", "tiny_y"),
                ("degradations", "box-blur")]


def _host_with(host: PluginHost, kind: str, name: str, factory, **info) -> PluginHost:
    """``host`` with one backend registered by an in-process plugin called ``thirdparty``."""
    plugin = types.ModuleType("thirdparty")

    def reg(register):
        register(name, factory, description="a test backend", **info)

    setattr(plugin, f"kmsr_register_{kind}", hookimpl(reg))
    host.register_plugin(plugin, name="thirdparty")
    host.collect()
    assert not host.errors, host.errors
    return host


def _levels(report, check_prefix: str) -> list[tuple[str, str]]:
    return [(f.level, f.message) for f in report.findings if f.check.startswith(check_prefix)]


def _error(report, check: str) -> str:
    """The message of the one error of the check called ``check``."""
    found = [f.message for f in report.findings if f.check == check and f.level == ERROR]
    assert len(found) == 1, report.summary()
    assert not report.passed
    return found[0]


@pytest.fixture
def kit_host(fresh_host, monkeypatch):
    """A host with the example kit registered from its source folder (not installed)."""
    pkg = KIT_SRC / "kmsr_example_kit"
    spec = importlib.util.spec_from_file_location("kmsr_example_kit", pkg / "__init__.py",
                                                  submodule_search_locations=[str(pkg)])
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "kmsr_example_kit", mod)
    spec.loader.exec_module(mod)
    fresh_host.register_plugin(mod, name="example_kit")
    fresh_host.check()
    fresh_host.collect()
    assert not fresh_host.errors, fresh_host.errors
    yield fresh_host
    for name in [m for m in sys.modules if m.startswith("kmsr_example_kit.")]:
        sys.modules.pop(name)


# --------------------------------------------------------------------------- the example kit and the built-ins pass


@pytest.mark.parametrize("kind,name", KIT_BACKENDS)
def test_the_example_kit_keeps_every_contract(kit_host, kind, name):
    report = check_backend(kind, name, host=kit_host)
    assert report.passed and not report.skipped and not report.warnings, report.summary()
    assert report.plugin == "example_kit"
    checks = {f.check for f in report.findings}
    expected = {
        "estimators": {"estimate", "estimate.seeded", "estimate_batch", "estimate.flat", "params"},
        "generators": {"protocol", "networks", "draw", "gan_train.resume", "checkpoint", "checkpoint.sample"},
        "backbones": {"x2.forward", "x2.train", "x2.checkpoint", "x2.receptive_field", "x4.forward"},
        "degradations": {"upsampled/rgb/x2.shapes", "lr/y/x2.shapes", "upsampled/rgb/x3.generator", "lr/rgb/x2.dtype"},
    }[kind]
    assert expected <= checks, sorted(checks)
    if kind == "backbones":  # two 3x3 convolutions: one output pixel sees 5x5 input pixels
        assert ("ok", "one output pixel depends on 5x5 input pixels, within the declared 5") in _levels(
            report, "x2.receptive_field")


FAST_BUILTINS = [("generators", "gaussian"), ("generators", "aniso"), ("generators", "motion"),
                 ("degradations", "bicubic"), ("degradations", "gaussian"), ("degradations", "pool"),
                 ("degradations", "realistic"), ("backbones", "srcnn"), ("backbones", "vdsr"), ("backbones", "kmsr_lr"),
                 ("backbones", "carn_m"), ("backbones", "imdn")]
SLOW_BUILTINS = [("estimators", "dark-channel"), ("generators", "wgan-gp"), ("backbones", "kmsr"), ("backbones", "edsr"),
                 ("backbones", "dbpn")]


@pytest.mark.parametrize("kind,name", FAST_BUILTINS + [pytest.param(*p, marks=pytest.mark.slow) for p in SLOW_BUILTINS])
def test_builtin_backends_keep_their_contract(kind, name, monkeypatch):
    for var in ("KMSR_PLUGINS", "KMSR_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    host = PluginHost()
    host.load_entry_points()
    host.collect()
    first = host.get(kind, name).info["scales"][:1] if kind == "backbones" else None
    report = check_backend(kind, name, host=host, scales=first)
    assert report.passed and not report.skipped and not report.warnings, report.summary()
    if name == "imdn":  # channel attention: every output pixel sees the whole input, so no window to probe
        assert "global_context" in _levels(report, "x2.receptive_field")[0][1]


@pytest.mark.parametrize("folder,module,kind,name", [("kmsr-example-plugin", "kmsr_example_plugin", "generators", "box"),
                                                     ("kmsr-example-backbone", "kmsr_example_backbone", "backbones",
                                                      "shuffle_net")])
def test_the_other_example_plugins_keep_their_contract(fresh_host, folder, module, kind, name):
    spec = importlib.util.spec_from_file_location(f"_{module}_checked", FIXTURES / folder / module / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fresh_host.register_plugin(mod, name="example")
    fresh_host.collect()
    report = check_backend(kind, name, host=fresh_host)
    assert report.passed and not report.warnings, report.summary()


def test_a_backend_that_cannot_run_here_is_skipped(fresh_host):
    host = _host_with(fresh_host, "estimators", "gpu-only", lambda **kw: 1 / 0, available=lambda: (False, "needs a GPU"))
    report = check_backend("estimator", "gpu-only", host=host)
    assert report.passed and report.skipped
    assert (SKIPPED, "cannot run here (needs a GPU); only the registration was checked") in _levels(report, "available")
    assert not [f for f in report.findings if f.check == "factory"]  # nothing was built


# --------------------------------------------------------------------------- estimators that break a contract


class _Delta:
    """A minimal estimator: the identity kernel, or what ``make`` says."""

    def __init__(self, make=None):
        self.make = make

    def estimate(self, patch, kernel_size, rng):
        if self.make is not None:
            return self.make(np.asarray(patch), kernel_size)
        k = np.zeros((kernel_size, kernel_size))
        k[kernel_size // 2, kernel_size // 2] = 1
        return k


def test_an_estimator_factory_without_device_is_refused(fresh_host):
    host = _host_with(fresh_host, "estimators", "cpu-only", lambda kernel_size=25: _Delta())
    report = check_backend("estimators", "cpu-only", host=host)
    msg = _error(report, "factory.keywords")
    assert "does not take device=" in msg and "GPU" in msg
    assert not _levels(report, "estimate")  # stopped before running it


def test_an_estimator_using_the_global_rng_is_caught(fresh_host):
    def noisy(patch, k):
        r = np.random.random((k, k))
        return r / r.sum()

    host = _host_with(fresh_host, "estimators", "noisy", lambda **kw: _Delta(noisy))
    msg = _error(check_backend("estimators", "noisy", host=host), "estimate.seeded")
    assert "resumed kmsr estimate would not reproduce" in msg


def test_an_estimator_returning_another_size_is_caught(fresh_host):
    host = _host_with(fresh_host, "estimators", "big", lambda **kw: _Delta(lambda p, k: np.ones((k + 2, k + 2)) / (k + 2) ** 2))
    assert _error(check_backend("estimators", "big", host=host), "estimate") == "returned shape (11, 11), expected (9, 9)"


def test_an_estimator_crashing_on_a_flat_patch_is_caught(fresh_host):
    def by_contrast(patch, k):
        sigma = 1.0 / float(patch.std()) if patch.std() else 1 // 0  # ZeroDivisionError on a flat patch
        g = np.exp(-((np.arange(k) - k // 2) ** 2) / (2 * min(sigma, 3.0) ** 2))
        return np.outer(g, g) / np.outer(g, g).sum()

    host = _host_with(fresh_host, "estimators", "contrast", lambda **kw: _Delta(by_contrast))
    report = check_backend("estimators", "contrast", host=host)
    msg = _error(report, "estimate.flat")
    assert msg.startswith("a flat patch raised ZeroDivisionError") and "KmsrInputError" in msg
    assert (OK, "the same patch and seed give the same kernel") in _levels(report, "estimate.seeded")


def test_an_estimate_batch_that_disagrees_is_a_warning(fresh_host):
    class Batch(_Delta):
        def estimate_batch(self, patches, kernel_size, rng):
            return np.stack([np.ones((kernel_size, kernel_size)) / kernel_size**2 for _ in patches])

    host = _host_with(fresh_host, "estimators", "batchy", lambda **kw: Batch())
    report = check_backend("estimators", "batchy", host=host)
    assert report.passed
    assert [level for level, _ in _levels(report, "estimate_batch")] == [OK, WARNING]
    assert "differs from estimate() of the same patch" in report.warnings[0].message


# --------------------------------------------------------------------------- generators


class _Boxes:
    def __init__(self, scale=1.0, fixed_size=None):
        self.scale, self.fixed_size = scale, fixed_size

    def sample(self, n, *, size, rng):
        size = self.fixed_size or size
        k = np.zeros((n, size, size))
        k[:, size // 2 - 1:size // 2 + 2, size // 2 - 1:size // 2 + 2] = self.scale / 9
        return k + 0 * rng.random()


def test_generator_kernels_that_do_not_sum_to_one_are_caught(fresh_host):
    host = _host_with(fresh_host, "generators", "heavy", lambda: _Boxes(scale=2.0))
    msg = _error(check_backend("generators", "heavy", host=host), "sample")
    assert "expected sum 1" in msg and "found 2" in msg


def test_a_generator_ignoring_size_is_caught(fresh_host):
    host = _host_with(fresh_host, "generators", "nine", lambda: _Boxes(fixed_size=9))
    msg = _error(check_backend("generators", "nine", host=host), "sample.size")
    assert msg == "returned shape (2, 9, 9), expected (2, 15, 15)"


def test_a_trainable_generator_lacking_the_training_members_is_caught(fresh_host):
    def factory(checkpoint=None, device="cpu", width_mult=None, output=None):
        return _Boxes()

    host = _host_with(fresh_host, "generators", "not-a-gan", factory, trainable=True)
    msg = _error(check_backend("generators", "not-a-gan", host=host), "protocol")
    for member in ("generator", "critic", "latent_dim", "architecture", "state_tensors", "draw"):
        assert member in msg
    assert "hookspecs.TrainableGenerator" in msg


def test_a_trainable_factory_missing_a_keyword_is_caught(fresh_host):
    host = _host_with(fresh_host, "generators", "no-width", lambda checkpoint=None, device="cpu", output=None: _Boxes(),
                      trainable=True)
    msg = _error(check_backend("generators", "no-width", host=host), "factory.keywords")
    assert "width_mult=" in msg and "--width-mult" in msg


# --------------------------------------------------------------------------- backbones


class _Convs(nn.Module):
    """``depth`` 3x3 convolutions on ``channels`` channels, then a pixel shuffle by ``shuffle``."""

    def __init__(self, depth=3, channels=3, shuffle=1, **attrs):
        super().__init__()
        layers = [nn.Conv2d(channels, channels, 3, padding=1) for _ in range(depth - 1)]
        layers.append(nn.Conv2d(channels, channels * shuffle * shuffle, 3, padding=1))
        self.body = nn.Sequential(*layers, nn.PixelShuffle(shuffle))
        self.__dict__.update(attrs)

    def forward(self, x):
        return self.body(x)


UPSAMPLED_RGB = {"input": "upsampled", "channels": "rgb", "scales": [2]}


def test_a_receptive_field_declared_too_small_is_caught(fresh_host):
    # Three stacked 3x3 convolutions: one output pixel depends on a 7x7 window, not 3x3.
    host = _host_with(fresh_host, "backbones", "deep", lambda scale=2: _Convs(depth=3), **UPSAMPLED_RGB, receptive_field=3)
    report = check_backend("backbones", "deep", host=host)
    msg = _error(report, "x2.receptive_field")
    assert msg.startswith("one output pixel depends on 7x7 input pixels, more than the declared receptive_field 3")
    # Declared right, it passes, and an over-declared window is fine (tiles are only wider).
    for rf in (7, 9):
        ok = _host_with(PluginHost(), "backbones", "deep", lambda scale=2: _Convs(depth=3), **UPSAMPLED_RGB, receptive_field=rf)
        assert check_backend("backbones", "deep", host=ok).passed


def test_an_lr_backbone_that_does_not_upscale_is_caught(fresh_host):
    host = _host_with(fresh_host, "backbones", "same", lambda scale=2: _Convs(depth=1),
                      input="lr", channels="rgb", scales=[2], receptive_field=3)
    msg = _error(check_backend("backbones", "same", host=host), "x2.forward")
    assert msg == "(1, 3, 10, 13) -> (1, 3, 10, 13), expected (1, 3, 20, 26) for input='lr', channels='rgb' at x2"


def test_a_y_backbone_built_for_rgb_is_caught(fresh_host):
    host = _host_with(fresh_host, "backbones", "rgb-net", lambda scale=2: _Convs(depth=1, channels=3),
                      input="upsampled", channels="y", scales=[2], receptive_field=3)
    msg = _error(check_backend("backbones", "rgb-net", host=host), "x2.forward")
    assert msg.startswith("module(x (1, 1, 20, 26)) raised RuntimeError")


def test_a_module_contradicting_its_registration_is_caught(fresh_host):
    host = _host_with(fresh_host, "backbones", "liar", lambda scale=2: _Convs(depth=1, input_kind="lr"),
                      **UPSAMPLED_RGB, receptive_field=3)
    msg = _error(check_backend("backbones", "liar", host=host), "x2.convention")
    assert "input_kind='lr'" in msg and "input='upsampled'" in msg


def test_a_checkpoint_that_rebuilds_another_network_is_caught(fresh_host):
    # The module records options that would build a narrower network than the one it is.
    def factory(scale=2, filters=8):
        net = nn.Sequential(nn.Conv2d(3, filters, 3, padding=1), nn.Conv2d(filters, 3, 3, padding=1))
        net.options = {"filters": 4}
        return net

    host = _host_with(fresh_host, "backbones", "forgetful", factory, **UPSAMPLED_RGB, receptive_field=5,
                      options={"filters": 8})
    msg = _error(check_backend("backbones", "forgetful", host=host), "x2.checkpoint")
    assert "loading it" in msg and "weights do not fit backbone 'forgetful'" in msg


def test_a_backbone_with_nothing_to_train_is_caught(fresh_host):
    host = _host_with(fresh_host, "backbones", "fixed", lambda scale=2: nn.Identity(), **UPSAMPLED_RGB, receptive_field=1)
    msg = _error(check_backend("backbones", "fixed", host=host), "x2.train")
    assert msg == "the module has no trainable parameters: kmsr train would have nothing to optimise"


def test_registration_problems_stop_before_anything_is_built(fresh_host):
    built = []
    host = _host_with(fresh_host, "backbones", "vague", lambda scale=2: built.append(scale), channels="rgb", scales=[2, 0],
                      recepive_field=5)
    report = check_backend("backbones", "vague", host=host)
    assert "info must declare input=" in _error(report, "registration.input")
    assert "scales=[2, 0], expected a non-empty list of integers >= 1" == _error(report, "registration.scales")
    assert (WARNING, "info key 'recepive_field' is not one kmsr reads; did you mean 'receptive_field'?") in _levels(
        report, "registration.info")
    assert built == []


# --------------------------------------------------------------------------- degradations


class _Decimate:
    """LR = every other pixel; ``rng`` picks where random numbers come from, ``dtype`` the output type."""

    def __init__(self, scale, input="upsampled", channels="rgb", rng="generator", dtype=None, kernels=None):
        self.scale, self.input, self.channels, self.rng, self.dtype = scale, input, channels, rng, dtype

    def __call__(self, hr, generator=None):
        noise = torch.rand(hr.shape[0], 1, 1, 1, generator=generator if self.rng == "generator" else None) * 0.01
        x = hr[..., self.scale // 2::self.scale, self.scale // 2::self.scale] + noise
        if self.input == "upsampled":
            x = torch.nn.functional.interpolate(x, size=hr.shape[-2:], mode="nearest")
        y = hr
        if self.channels == "y":
            x, y = x.mean(1, keepdim=True), y.mean(1, keepdim=True)
        return (x.to(self.dtype), y.to(self.dtype)) if self.dtype else (x, y)


def test_a_degradation_drawing_from_the_global_rng_is_caught(fresh_host):
    host = _host_with(fresh_host, "degradations", "global", lambda scale, input, channels: _Decimate(scale, input, channels,
                                                                                                      rng="global"))
    report = check_backend("degradations", "global", host=host)
    msg = _error(report, "upsampled/rgb/x2.generator")
    assert "torch's global RNG" in msg and "--resume" in msg
    ok = _host_with(PluginHost(), "degradations", "seeded", lambda scale, input, channels: _Decimate(scale, input, channels))
    assert check_backend("degradations", "seeded", host=ok).passed


def test_a_degradation_changing_the_dtype_is_caught(fresh_host):
    host = _host_with(fresh_host, "degradations", "f64", lambda scale, input, channels: _Decimate(
        scale, input, channels, dtype=torch.float64), inputs=["lr"], channels=["y"])
    report = check_backend("degradations", "f64", host=host)
    assert _error(report, "lr/y/x2.dtype") == ("hr is torch.float32, x torch.float64, y torch.float64: the network "
                                               "(float32) would get another dtype")
    assert not _levels(report, "upsampled/")  # only the declared conventions are exercised


def test_a_degradation_ignoring_its_pool_is_caught(fresh_host):
    host = _host_with(fresh_host, "degradations", "no-pool", lambda scale, input, channels, kernels: _Decimate(
        scale, input, channels), needs_kernels=True)
    msg = _error(check_backend("degradations", "no-pool", host=host), "upsampled/rgb/x2.kernels")
    assert msg == "narrow and wide pool kernels give the same network input: kernels= seems unused"


# --------------------------------------------------------------------------- the Python API around the checks


def test_assert_conforms_raises_one_error_naming_every_failure(fresh_host):
    host = _host_with(fresh_host, "generators", "heavy", lambda: _Boxes(scale=2.0))
    with pytest.raises(PluginContractError) as excinfo:
        assert_conforms("generator", "heavy", host=host)
    text = str(excinfo.value)
    assert text.startswith("1 of 1 backends break the plugin contract: generator 'heavy' (plugin 'thirdparty'): sample:")
    assert excinfo.value.hint == "docs/write-a-plugin.md says what each check expects"
    assert isinstance(excinfo.value, CliError)
    report = excinfo.value.reports[0]
    assert report.as_dict()["passed"] is False and report.as_dict()["errors"] == len(report.errors) >= 1
    json.dumps(report.as_dict())


def test_targets_are_backend_names_then_plugin_names(kit_host):
    assert targets(kit_host, "tiny_y") == [("backbones", "tiny_y")]
    assert targets(kit_host, "example_kit") == KIT_BACKENDS
    assert targets(kit_host, "example_kit", "degradation") == [("degradations", "box-blur")]
    with pytest.raises(CliError, match=r"no backend or plugin called 'nope'; installed: box-blur, example_kit"):
        targets(kit_host, "nope")
    with pytest.raises(CliError, match="unknown backend kind 'widget'"):
        normalise_kind("widget")


# --------------------------------------------------------------------------- through the CLI, the kit installed


@pytest.fixture(scope="session")
def example_kit_site(tmp_path_factory):
    """The example kit pip-installed (no network, no deps) into a private folder, deleted afterwards."""
    root = tmp_path_factory.mktemp("example-kit")
    site = install_fixture_package(KIT_SRC, root, "kmsr_example_kit")
    yield site
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def run_kit(run_kmsr, example_kit_site):
    def run(*args, **kwargs):
        kwargs.setdefault("plugin_site", example_kit_site)
        return run_kmsr(*args, **kwargs)

    return run


def test_the_kit_is_listed_with_the_api_version(run_kit):
    r = run_kit("plugins", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["api_version"] == API_VERSION
    kit = {p["name"]: p for p in doc["plugins"]}["example_kit"]
    assert (kit["distribution"], kit["version"], kit["ok"]) == ("kmsr-example-kit", "0.1.0", True)
    for kind, name in KIT_BACKENDS:
        entry = {b["name"]: b for b in doc[kind]}[name]
        assert (entry["plugin"], entry["usable"]) == ("example_kit", True)


@pytest.mark.slow
def test_plugins_check_on_the_installed_kit(run_kit):
    r = run_kit("plugins", "--check", "example_kit", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["api_version"] == API_VERSION and doc["passed"] is True
    assert [(x["kind"], x["name"]) for x in doc["reports"]] == KIT_BACKENDS
    assert all(x["errors"] == 0 and x["warnings"] == 0 and x["plugin"] == "example_kit" for x in doc["reports"])
    r = run_kit("plugins", "--check", "tiny_y")
    assert r.returncode == 0, r.stderr
    assert "backbone tiny_y (plugin example_kit): passed" in r.stdout
    assert "checking backbone 'tiny_y'" in r.stderr


LIAR_PLUGIN = '''
from torch import nn
from kmsr_cli.hookspecs import hookimpl


@hookimpl
def kmsr_register_backbones(register):
    deep = lambda scale=2: nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(3)])
    register("liar", deep, description="claims a 3x3 window", input="upsampled", channels="rgb", scales=[2],
             receptive_field=3)
'''


def _install_by_hand(site, module: str, source: str) -> None:
    """A plugin 'installed' as a module plus a dist-info folder with its entry point (what pip writes)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[kmsr]\nliar = {module}\n")


def test_plugins_check_fails_on_a_broken_plugin(run_kmsr, tmp_path):
    _install_by_hand(tmp_path / "site", "liar_plugin", LIAR_PLUGIN)
    r = run_kmsr("plugins", "--check", "liar", plugin_site=tmp_path / "site")
    assert r.returncode == 1
    assert "backbone liar (plugin liar): FAILED" in r.stdout
    assert "more than the declared receptive_field 3" in r.stdout
    lines = r.stderr.strip().splitlines()
    assert lines[-2].startswith("error: 1 of 1 backends break the plugin contract: backbone 'liar' (plugin 'liar'): "
                                "x2.receptive_field: one output pixel depends on 7x7 input pixels")
    assert lines[-1] == "try: docs/write-a-plugin.md says what each check expects"
    assert "Traceback" not in r.stderr
    r = run_kmsr("plugins", "--check", "nope")
    assert r.returncode == 1 and "no backend or plugin called 'nope'" in r.stderr
    r = run_kmsr("plugins", "--kind", "backbones")
    assert r.returncode == 2 and "--kind only applies to --check" in r.stderr


def _noise_photo(path, sigma: float, seed: int) -> None:
    """White noise (blurred by a Gaussian of ``sigma`` when > 0), stretched to 0..255, grey in RGB."""
    from scipy.ndimage import gaussian_filter

    x = np.random.default_rng(seed).random((192, 192))
    x = gaussian_filter(x, sigma) if sigma else x
    x = np.round((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)
    Image.fromarray(np.repeat(x[..., None], 3, axis=2)).save(path)


def _kernel_std(k: np.ndarray) -> float:
    """Standard deviation along rows of a kernel, from its moments."""
    r = np.arange(k.shape[0]) - k.shape[0] // 2
    rows = k.sum(axis=1)
    return float(np.sqrt((rows * r**2).sum() / rows.sum()))


@pytest.mark.slow
def test_kit_estimator_end_to_end(run_kit, tmp_path):
    _noise_photo(tmp_path / "sharp.png", 0, seed=1)
    _noise_photo(tmp_path / "blurred.png", 2.0, seed=2)
    r = run_kit("estimate", "sharp.png", "blurred.png", "-o", "k.h5", "--estimator", "gradient-ratio", "--scale", "1",
                "--patch", "128", "--per-image", "2", "--kernel-size", "15", "--workers", "1", "--device", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kernels_written"] == 4
    with h5py.File(tmp_path / "k.h5", "r") as f:
        kernels = f["kernels"][...]
        sources = [s.decode() for s in f["provenance/source"][...]]
        methods = {m.decode() for m in f["provenance/method"][...]}
        params = [json.loads(p) for p in f["provenance/params"][...]]
    assert kernels.shape == (4, 15, 15) and methods == {"gradient-ratio"}
    assert params[0]["estimator"] == {"estimator": "gradient-ratio", "kernel_size": 15, "sigma_max": None}
    widths = {name: [_kernel_std(k) for k, s in zip(kernels, sources, strict=True) if s.endswith(name)]
              for name in ("sharp.png", "blurred.png")}
    # The photo blurred by sigma 2 gives kernels about 2 wide; the unblurred noise, narrow ones.
    assert all(1.7 < w < 2.4 for w in widths["blurred.png"]) and len(widths["blurred.png"]) == 2, widths
    assert all(w < 1.0 for w in widths["sharp.png"]) and len(widths["sharp.png"]) == 2, widths


@pytest.mark.slow
def test_kit_trainable_generator_end_to_end(run_kit, tmp_path):
    r = run_kit("pool", "synth", "--family", "gaussian", "-n", "32", "--size", "9", "-o", "g9.h5")
    assert r.returncode == 0, r.stderr
    common = ["--generator", "tiny-gan", "--batch", "8", "--critic-steps", "1", "--device", "cpu", "--json"]
    r = run_kit("gan", "train", "g9.h5", "-o", "tiny.safetensors", "--iters", "3", *common)
    assert r.returncode == 0, r.stderr
    assert (json.loads(r.stdout)["generator"], json.loads(r.stdout)["iterations"]) == ("tiny-gan", 3)
    r = run_kit("gan", "train", "g9.h5", "-o", "tiny.safetensors", "--iters", "5", "--resume", *common)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["start_iteration"], summary["iterations"]) == (3, 5)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "tiny.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert (meta["format"], meta["iteration"], meta["scale"]) == ("kmsr-example-tiny-gan", "5", "2")
    r = run_kit("pool", "synth", "--family", "tiny-gan", "--option", "checkpoint=tiny.safetensors", "-n", "6",
                "--size", "9", "-o", "sampled.h5")
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / "sampled.h5", "r") as f:
        kernels = f["kernels"][...]
        origins = {o.decode() for o in f["provenance/origin"][...]}
        params = json.loads(f["provenance/params"][0])
    assert kernels.shape == (6, 9, 9) and origins == {"generated"}
    np.testing.assert_allclose(kernels.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert (kernels >= 0).all()
    assert params["checkpoint_sha256"] == hashlib.sha256((tmp_path / "tiny.safetensors").read_bytes()).hexdigest()
    assert params["iteration"] == 5


@pytest.mark.slow
def test_kit_backbone_and_degradation_end_to_end(run_kit, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "hr.png")
    Image.fromarray(rng.integers(80, 177, (13, 17, 3), dtype=np.uint8)).save(tmp_path / "lr.png")
    r = run_kit("train", "--backbone", "tiny_y", "--degradation", "box-blur", "--degradation-option", "extra_width=2",
                "--scale", "2", "--data", "hr.png", "--patch", "16", "--batch", "2", "--epochs", "1",
                "--iters-per-epoch", "2", "--lr", "1e-2", "--device", "cpu", "-o", "run", timeout=300)
    assert r.returncode == 0, r.stderr
    ckpt = tmp_path / "run" / "model.safetensors"
    meta = read_model_meta(ckpt)
    assert (meta.backbone, meta.scale, meta.options, meta.extra["step"]) == ("tiny_y", 2, {"filters": 8}, 2)
    assert meta.extra["degradation"] == {"name": "box-blur", "options": {"extra_width": 2}}
    for model, out in ((str(ckpt), "sr.png"), ("bicubic", "bicubic.png")):
        r = run_kit("sr", "lr.png", "-o", out, "--model", model, "--scale", "2", "--no-fast")
        assert r.returncode == 0, r.stderr
    sr = np.asarray(Image.open(tmp_path / "sr.png")).astype(np.float64)
    bicubic = np.asarray(Image.open(tmp_path / "bicubic.png")).astype(np.float64)
    assert sr.shape == bicubic.shape == (26, 34, 3)
    # Fed as registered (upsampled input, Y channel): the network changes the luma of the bicubic
    # upscaling and leaves its chroma alone (up to the rounding of RGB to 8 bits).
    from kmsr_ops.colour import rgb2ycbcr

    ycc_sr, ycc_bicubic = rgb2ycbcr(sr / 255) * 255, rgb2ycbcr(bicubic / 255) * 255
    assert np.abs(ycc_sr[..., 0] - ycc_bicubic[..., 0]).mean() > 1.0
    assert np.median(np.abs(ycc_sr[..., 1:] - ycc_bicubic[..., 1:])) <= 1.0
