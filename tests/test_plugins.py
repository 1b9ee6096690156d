"""The plugin host: built-in and third-party plugins, environment switches, failure reporting."""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

from kmsr_cli import hookspecs
from kmsr_cli.errors import CliError
from kmsr_cli.hookspecs import hookimpl
from kmsr_cli.plugin_host import PluginHost

DOC_KEYS = {"api_version", "plugins", "estimators", "generators", "backbones", "degradations"}
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
    assert doc["api_version"] == hookspecs.API_VERSION == 1
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


def test_hookspec_docstrings_name_every_documented_keyword_and_info_key():
    # INFO_KEYS and FACTORY_KEYWORDS are the machine-readable copy of the docstrings: they must agree.
    for kind, hook_name in hookspecs.HOOK_KINDS.items():
        doc = inspect.getdoc(getattr(hookspecs, hook_name))
        for key in hookspecs.INFO_KEYS[kind]:
            assert f"``{key}``" in doc, f"{hook_name}'s docstring does not document info key {key!r}"
        for keyword in hookspecs.FACTORY_KEYWORDS[kind]:
            if not keyword.startswith("**"):
                assert f"{keyword}=" in doc, f"{hook_name}'s docstring does not say that kmsr passes {keyword}="
        proto = hookspecs.PROTOCOLS[kind]
        assert f":class:`{proto.__name__}`" in doc, f"{hook_name}'s docstring does not name {proto.__name__}"
        assert inspect.getdoc(proto), f"{proto.__name__} has no docstring"
    assert set(hookspecs.INFO_KEYS) == set(hookspecs.FACTORY_KEYWORDS) == set(hookspecs.PROTOCOLS) == set(hookspecs.HOOK_KINDS)


# --------------------------------------------------------------------------- info keys the pipeline reads
# A static scan of kmsr_cli/: every read of a backend's ``info`` (``x.info.get(KEY)``, ``x.info[KEY]``,
# ``KEY in x.info``, and the same through ``info = x.info``) must use a key that hookspecs.INFO_KEYS
# documents for that kind (for any kind where the scan cannot tell which backend ``x`` is). A key it
# cannot resolve to constants (say ``info.get(name)`` with a computed ``name``) fails too.

PIPELINE_DIR = Path(hookspecs.__file__).resolve().parent
KINDS = tuple(hookspecs.HOOK_KINDS)


def _const_strings(node) -> list[str] | None:
    items = node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else None
    if items is not None and all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in items):
        return [k.value for k in items]
    return None


class InfoReads(ast.NodeVisitor):
    """(line, kind or None, keys or None) for every read of a backend's info in one module."""

    def __init__(self, tree: ast.Module):
        self.tree = tree
        self.consts = {t.id: v for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                       if isinstance(t, ast.Name) and (v := _const_strings(n.value)) is not None}
        self.scopes: list[dict] = [{"backends": {}, "aliases": {}}]
        self.funcs: list[ast.FunctionDef] = []
        self.reads: list[tuple[int, str | None, list[str] | None]] = []

    def _lookup(self, table: str, name: str):
        for scope in reversed(self.scopes):
            if name in scope[table]:
                return True, scope[table][name]
        return False, None

    @staticmethod
    def _backend_kind(expr) -> str | None:
        """``host.get("backbones", name)`` -> ``"backbones"``."""
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "get" and expr.args:
            first = expr.args[0]
            if isinstance(first, ast.Constant) and first.value in KINDS:
                return first.value
        return None

    def _info(self, expr):
        """(is a backend's info, its kind or None)."""
        if isinstance(expr, ast.Attribute) and expr.attr == "info":
            base = expr.value
            if isinstance(base, ast.Call):
                return True, self._backend_kind(base)
            return True, self._lookup("backends", base.id)[1] if isinstance(base, ast.Name) else None
        if isinstance(expr, ast.Name):
            return self._lookup("aliases", expr.id)
        return False, None

    def visit_FunctionDef(self, node):
        self.scopes.append({"backends": {}, "aliases": {}})
        self.funcs.append(node)
        self.generic_visit(node)
        self.funcs.pop()
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Assign(self, node):
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if kind := self._backend_kind(node.value):
                self.scopes[-1]["backends"][name] = kind
            is_info, info_kind = self._info(node.value)
            if is_info and isinstance(node.value, ast.Attribute):
                self.scopes[-1]["aliases"][name] = info_kind
        self.generic_visit(node)

    def _record(self, node, info_expr, key) -> None:
        is_info, kind = self._info(info_expr)
        if is_info:
            self.reads.append((node.lineno, kind, self._keys(key)))

    def visit_Call(self, node):
        if isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
            self._record(node, node.func.value, node.args[0])
        self.generic_visit(node)

    def visit_Subscript(self, node):
        self._record(node, node.value, node.slice)
        self.generic_visit(node)

    def visit_Compare(self, node):
        if len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            self._record(node, node.comparators[0], node.left)
        self.generic_visit(node)

    def _keys(self, key) -> list[str] | None:
        """The constants a key expression can be, or None when the scan cannot tell."""
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return [key.value]
        if not isinstance(key, ast.Name) or not self.funcs:
            return None
        if key.id in [a.arg for a in self.funcs[-1].args.args]:
            return self._argument_keys(key.id)
        return self._loop_keys(key.id)

    def _loop_keys(self, name: str) -> list[str] | None:
        """``for name[, ...] in CONST`` (or ``CONST.items()``, ``CONST.keys()``, or a comprehension's) in
        an enclosing function."""
        for func in reversed(self.funcs):
            for node in ast.walk(func):
                if not isinstance(node, (ast.For, ast.comprehension)):
                    continue
                target = node.target.elts[0] if isinstance(node.target, ast.Tuple) else node.target
                it = node.iter
                if isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) and it.func.attr in ("items", "keys"):
                    it = it.func.value
                if isinstance(target, ast.Name) and target.id == name and isinstance(it, ast.Name) and it.id in self.consts:
                    return self.consts[it.id]
        return None

    def _argument_keys(self, name: str) -> list[str] | None:
        """A parameter of the innermost function: the constants every call to it in the module passes."""
        func = self.funcs[-1]
        index = [a.arg for a in func.args.args].index(name)
        found = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == func.name:
                arg = node.args[index] if index < len(node.args) else next(
                    (k.value for k in node.keywords if k.arg == name), None)
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    return None
                found.append(arg.value)
        return found or None


def info_reads(source: str, filename: str = "<test>") -> list[tuple[int, str | None, list[str] | None]]:
    tree = ast.parse(source, filename=filename)
    scan = InfoReads(tree)
    scan.visit(tree)
    return scan.reads


def undocumented_reads(source: str, filename: str) -> list[str]:
    """``file:line`` lines for each read of an info key INFO_KEYS does not document (or cannot be resolved)."""
    bad = []
    for line, kind, keys in info_reads(source, filename):
        if keys is None:
            bad.append(f"{filename}:{line}: reads a backend's info with a key the scan cannot resolve to constants")
            continue
        allowed = hookspecs.INFO_KEYS[kind] if kind else {k for d in hookspecs.INFO_KEYS.values() for k in d}
        for key in keys:
            if key not in allowed:
                bad.append(f"{filename}:{line}: reads info key {key!r} of {kind or 'a backend'}, "
                           "which hookspecs.INFO_KEYS does not document")
    return bad


def test_the_pipeline_reads_only_documented_info_keys():
    files = sorted(PIPELINE_DIR.rglob("*.py"))
    bad, seen = [], {}
    for path in files:
        rel = str(path.relative_to(PIPELINE_DIR.parent))
        source = path.read_text(encoding="utf-8")
        bad += undocumented_reads(source, rel)
        seen[rel] = info_reads(source, rel)
    assert not bad, "\n".join(bad)
    # The scan sees the reads this test exists for (not vacuous): the backbone convention, train, pool, gan.
    found = {(Path(f).name, key) for f, reads in seen.items() for _, _, keys in reads for key in keys or []}
    assert {("models.py", "input"), ("models.py", "receptive_field"), ("models.py", "size_multiple"),
            ("train.py", "needs_kernels"), ("train.py", "init_allowed"), ("pool.py", "origin"),
            ("gan.py", "trainable")} <= found


def test_the_info_scan_catches_undocumented_and_unresolved_keys():
    source = textwrap.dedent("""
        ORDER = ("input", "tile_size")

        def direct(host, name):
            bb = host.get("backbones", name)
            return bb.info.get("tile_size"), host.get("degradations", "x").info["needs_kernels"]

        def aliased(host):
            info = host.get("generators", "g").info
            return "trainable" in info, info["input"]

        def looped(backend):
            info = backend.info
            return [info.get(key) for key in ORDER]

        def computed(backend, which):
            return backend.info.get(which + "_x")

        def unrelated(log, step):
            log.info("step %d", step)
            info = {"step": step}
            return info["step"]
        """)
    bad = undocumented_reads(source, "m.py")
    assert bad == [
        "m.py:6: reads info key 'tile_size' of backbones, which hookspecs.INFO_KEYS does not document",
        "m.py:10: reads info key 'input' of generators, which hookspecs.INFO_KEYS does not document",
        "m.py:14: reads info key 'tile_size' of a backend, which hookspecs.INFO_KEYS does not document",
        "m.py:17: reads a backend's info with a key the scan cannot resolve to constants",
    ]
    kinds = {(line, kind) for line, kind, _ in info_reads(source)}
    assert (6, "degradations") in kinds and (10, "generators") in kinds
