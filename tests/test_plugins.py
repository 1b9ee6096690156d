"""The plugin host: built-in and third-party plugins, environment switches, failure reporting."""

from __future__ import annotations

import inspect
import json
import types

import h5py
import numpy as np
import pytest

from kmsr_cli import hookspecs
from kmsr_cli.errors import CliError
from kmsr_cli.hookspecs import hookimpl
from kmsr_cli.plugin_host import PluginHost

DOC_KEYS = {"plugins", "estimators", "generators", "backbones", "degradations"}
BUILTIN_GENERATORS = {"gaussian", "aniso", "motion"}


def plugins_doc(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def by_name(entries: list[dict]) -> dict[str, dict]:
    return {e["name"]: e for e in entries}


def plugin_module(name: str, **hooks) -> types.ModuleType:
    """A module object holding the given functions (already marked with @hookimpl)."""
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, fn)
    return mod


# --------------------------------------------------------------------------- through the CLI


def test_plugins_json_lists_builtin_synthetic(run_kmsr):
    doc = plugins_doc(run_kmsr("plugins", "--json"))
    assert set(doc) == DOC_KEYS
    plugins = by_name(doc["plugins"])
    assert "example" not in plugins
    synth = plugins["synthetic"]
    assert synth["ok"] is True and synth["error"] is None
    assert synth["module"] == "kmsr_synthetic"
    assert synth["distribution"] == "kmsr"
    gens = by_name(doc["generators"])
    assert BUILTIN_GENERATORS <= set(gens)
    assert "box" not in gens
    for name in BUILTIN_GENERATORS:
        assert gens[name]["plugin"] == "synthetic"
        assert gens[name]["usable"] is True
        assert gens[name]["reason"] == ""
        assert gens[name]["description"]


def test_external_plugin_is_listed(run_kmsr_example):
    doc = plugins_doc(run_kmsr_example("plugins", "--json"))
    assert set(doc) == DOC_KEYS
    plugins = by_name(doc["plugins"])
    ex = plugins["example"]
    assert ex == {
        "name": "example",
        "module": "kmsr_example_plugin",
        "distribution": "kmsr-example-plugin",
        "version": "0.1.0",
        "ok": True,
        "error": None,
    }
    assert plugins["synthetic"]["ok"] is True  # the built-in still loads next to it
    gens = by_name(doc["generators"])
    assert gens["box"]["plugin"] == "example"
    assert gens["box"]["usable"] is True
    assert BUILTIN_GENERATORS <= set(gens)


def expected_box(size: int, width: int) -> np.ndarray:
    """A centred width x width square of 1/width^2, written out independently of the plugin."""
    k = np.zeros((size, size))
    c = size // 2
    h = width // 2
    for r in range(c - h, c + h + 1):
        for col in range(c - h, c + h + 1):
            k[r, col] = 1.0 / width**2
    return k


def test_external_generator_is_used_by_pool_synth(run_kmsr_example, tmp_path):
    out = tmp_path / "X.h5"
    proc = run_kmsr_example("pool", "synth", "--family", "box", "-n", "20", "--size", "15", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    with h5py.File(out, "r") as f:
        kernels = f["kernels"][...]
        methods = [m.decode() for m in f["provenance/method"][...]]
        sources = [m.decode() for m in f["provenance/source"][...]]
        params = [json.loads(p) for p in f["provenance/params"][...]]
        assert f.attrs["count"] == 20 and f.attrs["kernel_size"] == 15
        assert "plugin example" in f.attrs["description"]
    assert kernels.shape == (20, 15, 15) and kernels.dtype == np.float32
    assert methods == ["box"] * 20
    assert sources == ["generator:box"] * 20
    assert params[0] == {"min_width": 1, "max_width": 9}
    widths = []
    for k in kernels:
        support = k > 0
        rows = np.flatnonzero(support.any(axis=1))
        cols = np.flatnonzero(support.any(axis=0))
        width = len(rows)
        assert len(cols) == width and support.sum() == width * width, "support is not a square"
        assert width % 2 == 1 and 1 <= width <= 9
        assert rows[0] + rows[-1] == 14 and cols[0] + cols[-1] == 14, "box is not centred"
        vals = k[support]
        assert np.all(vals == vals[0]), "box is not constant on its support"
        np.testing.assert_allclose(k, expected_box(15, width), rtol=1e-6, atol=0)
        assert abs(float(k.astype(np.float64).sum()) - 1.0) < 1e-5
        widths.append(width)
    assert len(set(widths)) > 1, f"widths should be random, got {widths}"


@pytest.mark.parametrize(
    "env",
    [{"KMSR_PLUGINS": "synthetic"}, {"KMSR_DISABLE_PLUGINS": "example"}],
    ids=["allow-list", "disable"],
)
def test_env_switches_hide_external_plugin(run_kmsr_example, env):
    doc = plugins_doc(run_kmsr_example("plugins", "--json", env=env))
    assert "example" not in by_name(doc["plugins"])
    gens = by_name(doc["generators"])
    assert "box" not in gens
    assert BUILTIN_GENERATORS <= set(gens)


def test_allow_list_can_hide_the_builtin(run_kmsr_example):
    doc = plugins_doc(run_kmsr_example("plugins", "--json", env={"KMSR_PLUGINS": " example ,"}))
    assert [p["name"] for p in doc["plugins"]] == ["example"]
    assert [g["name"] for g in doc["generators"]] == ["box"]


def test_unknown_family_lists_installed_generators(run_kmsr, tmp_path):
    proc = run_kmsr("pool", "synth", "--family", "nope", "-n", "2", "--size", "5", "-o", tmp_path / "n.h5")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "unknown generator 'nope'" in proc.stderr
    for name in BUILTIN_GENERATORS:
        assert name in proc.stderr
    assert "kmsr plugins" in proc.stderr  # the hint
    assert not (tmp_path / "n.h5").exists()


def test_plugins_table_shows_plugin_text_verbatim(run_kmsr):
    # Plugin-supplied text must not be read as rich markup ("[sigma_min, sigma_max]" is not a style).
    proc = run_kmsr("plugins")
    assert proc.returncode == 0, proc.stderr
    assert "[sigma_min, sigma_max]" in proc.stdout


# --------------------------------------------------------------------------- in-process host


def test_misspelt_hook_is_a_cli_error(fresh_host):
    @hookimpl
    def kmsr_register_generator(register):  # missing "s": matches no hookspec
        register("never", dict)

    fresh_host.register_plugin(plugin_module("typo_plugin", kmsr_register_generator=kmsr_register_generator), name="typo")
    with pytest.raises(CliError, match="unknown hook") as excinfo:
        fresh_host.check()
    assert "kmsr_register_generator" in str(excinfo.value)


def test_correct_hooks_pass_check(fresh_host):
    @hookimpl
    def kmsr_register_generators(register):
        register("g", dict)

    fresh_host.register_plugin(plugin_module("good", kmsr_register_generators=kmsr_register_generators), name="good")
    fresh_host.check()  # no error
    fresh_host.collect()
    assert fresh_host.names("generators") == ["g"]


def test_plugin_raising_in_register_is_reported_and_others_load(fresh_host):
    @hookimpl
    def kmsr_register_generators(register):
        raise RuntimeError("boom in plugin")

    @hookimpl
    def kmsr_register_estimators(register):
        register("fine_estimator", dict, description="ok")

    def good_generators(register):
        register("fine", dict, description="ok")

    fresh_host.register_plugin(plugin_module("bad", kmsr_register_generators=kmsr_register_generators), name="bad")
    fresh_host.register_plugin(
        plugin_module("good", kmsr_register_generators=hookimpl(good_generators),
                      kmsr_register_estimators=kmsr_register_estimators),
        name="good",
    )
    fresh_host.check()
    fresh_host.collect()
    assert len(fresh_host.errors) == 1
    assert "'bad'" in fresh_host.errors[0] and "RuntimeError: boom in plugin" in fresh_host.errors[0]
    assert fresh_host.names("generators") == ["fine"]
    assert fresh_host.names("estimators") == ["fine_estimator"]
    doc = fresh_host.describe()
    plugins = by_name(doc["plugins"])
    assert plugins["bad"]["ok"] is False and "boom in plugin" in plugins["bad"]["error"]
    assert plugins["good"]["ok"] is True and plugins["good"]["error"] is None


def test_duplicate_names_are_rejected(fresh_host):
    def first(register):
        register("dup", dict, description="first")

    def second(register):
        register("dup", list, description="second")
        register("other", list)

    fresh_host.register_plugin(plugin_module("p1", kmsr_register_generators=hookimpl(first)), name="p1")
    fresh_host.register_plugin(plugin_module("p2", kmsr_register_generators=hookimpl(second)), name="p2")
    fresh_host.collect()
    assert len(fresh_host.errors) == 1
    assert "'dup' is already registered by plugin" in fresh_host.errors[0]
    # exactly one 'dup', and it is the one its registering plugin said it was
    dup = fresh_host.get("generators", "dup")
    assert (dup.plugin, dup.description) in {("p1", "first"), ("p2", "second")}
    loser = "p2" if dup.plugin == "p1" else "p1"
    assert f"'{loser}'" in fresh_host.errors[0]


def test_same_name_in_different_kinds_is_allowed(fresh_host):
    def both(register):
        register("same", dict)

    fresh_host.register_plugin(
        plugin_module("p", kmsr_register_generators=hookimpl(both), kmsr_register_estimators=hookimpl(both)), name="p"
    )
    fresh_host.collect()
    assert fresh_host.errors == []
    assert fresh_host.names("generators") == ["same"] == fresh_host.names("estimators")


@pytest.mark.parametrize("bad", [("", dict), ("ok", "not callable")], ids=["empty-name", "factory"])
def test_bad_registrations_are_reported(fresh_host, bad):
    def reg(register):
        register(*bad)

    fresh_host.register_plugin(plugin_module("p", kmsr_register_backbones=hookimpl(reg)), name="p")
    fresh_host.collect()
    assert len(fresh_host.errors) == 1 and "'p'" in fresh_host.errors[0]
    assert fresh_host.names("backbones") == []


def test_unknown_backend_lists_known_names(fresh_host):
    def reg(register):
        register("alpha", dict)
        register("beta", dict)

    fresh_host.register_plugin(plugin_module("p", kmsr_register_backbones=hookimpl(reg)), name="p")
    fresh_host.collect()
    with pytest.raises(CliError) as excinfo:
        fresh_host.get("backbones", "gamma")
    msg = str(excinfo.value)
    assert "unknown backbone 'gamma'" in msg and "alpha, beta" in msg
    assert excinfo.value.hint and "kmsr plugins" in excinfo.value.hint
    with pytest.raises(CliError, match="none installed"):
        fresh_host.get("degradations", "x")


def test_availability_reason_is_reported(fresh_host):
    built = []

    def reg(register):
        register("gpu_net", lambda **kw: built.append(kw), description="needs CUDA",
                 available=lambda: (False, "needs a GPU"), input="lr", channels="rgb", scales=[2, 4])
        register("obj_net", dict, available=lambda: types.SimpleNamespace(ok=False, reason="no CuPy"))
        register("bool_net", dict, available=lambda: False)
        register("raising_net", dict, available=lambda: 1 / 0)
        register("cpu_net", dict, available=lambda: True)

    fresh_host.register_plugin(plugin_module("p", kmsr_register_backbones=hookimpl(reg)), name="p")
    fresh_host.collect()
    doc = by_name(fresh_host.describe()["backbones"])
    assert doc["gpu_net"]["usable"] is False
    assert doc["gpu_net"]["reason"] == "needs a GPU"
    assert doc["gpu_net"]["info"] == {"input": "lr", "channels": "rgb", "scales": [2, 4]}
    assert (doc["obj_net"]["usable"], doc["obj_net"]["reason"]) == (False, "no CuPy")
    assert (doc["bool_net"]["usable"], doc["bool_net"]["reason"]) == (False, "not available")
    assert doc["raising_net"]["usable"] is False and "ZeroDivisionError" in doc["raising_net"]["reason"]
    assert (doc["cpu_net"]["usable"], doc["cpu_net"]["reason"]) == (True, "")
    json.dumps(fresh_host.describe())  # JSON-friendly
    with pytest.raises(CliError, match="cannot run here: needs a GPU"):
        fresh_host.get("backbones", "gpu_net").create(width=3)
    assert built == []
    assert fresh_host.get("backbones", "cpu_net").create(a=1) == {"a": 1}


def test_builtin_entry_points_load_in_process(monkeypatch):
    for var in ("KMSR_PLUGINS", "KMSR_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    host = PluginHost()
    host.load_entry_points()
    host.check()
    host.collect()
    assert "synthetic" in {p.name for p in host.plugins}
    assert BUILTIN_GENERATORS <= set(host.names("generators"))
    gen = host.get("generators", "gaussian").create(sigma_min=1.0, sigma_max=1.5)
    ks = gen.sample(3, size=9, rng=np.random.default_rng(0))
    assert ks.shape == (3, 9, 9)
    np.testing.assert_allclose(ks.sum(axis=(1, 2)), 1.0)


# --------------------------------------------------------------------------- hookspec meta-test


@pytest.mark.parametrize("kind,hook_name", sorted(hookspecs.HOOK_KINDS.items()))
def test_hookspecs_are_documented(kind, hook_name):
    spec = getattr(hookspecs, hook_name)
    doc = inspect.getdoc(spec)
    assert doc, f"{hook_name} has no docstring"
    assert ":param register:" in doc, f"{hook_name}'s docstring does not document its register argument"
    assert list(inspect.signature(spec).parameters) == ["register"]
    assert hook_name.startswith("kmsr_register_") and hook_name.endswith(kind)


def test_every_hookspec_is_a_kind():
    specs = {name for name in dir(hookspecs) if name.startswith("kmsr_")}
    assert specs == set(hookspecs.HOOK_KINDS.values())
