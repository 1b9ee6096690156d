"""Shared fixtures: the CLI in a subprocess, the external example plugin, kernel-set files, data.

Reusable pieces:

- ``run_kmsr(*args, env=None, cwd=None, plugin_site=None)``: run ``python -m kmsr_cli`` in a
  subprocess (cwd defaults to the test's tmp_path) and return the CompletedProcess with stdout
  and stderr captured separately. The environment is cleaned of KMSR_* and colour switches.
- ``external_plugin_site``: a folder with ``tests/fixtures/kmsr-example-plugin`` pip-installed
  into it (``--target``); put it on PYTHONPATH (``run_kmsr(..., plugin_site=site)``) to make the
  ``example`` plugin and its ``box`` generator visible.
- ``run_kmsr_example``: ``run_kmsr`` with that folder already on PYTHONPATH.
- ``example_backbone_site``: the same for ``tests/fixtures/kmsr-example-backbone`` (an LR-input
  backbone that is a plain torch module); removed again at the end of the session.
- ``random_kernels(n, k, seed)``: valid (N, K, K) kernels that are not symmetric along any
  axis (so a transposed or sliced read is caught).
- ``write_set(path, kernels, ...)``: write a kernel set with per-kernel provenance.
- ``fresh_host``: an empty :class:`PluginHost` (no entry points loaded), for in-process tests.
- ``shared_data``: ``../shared/data`` next to the repository, skipped when absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLE_PLUGIN_SRC = FIXTURES / "kmsr-example-plugin"
EXAMPLE_BACKBONE_SRC = FIXTURES / "kmsr-example-backbone"

# Variables that change what the CLI does; subprocesses start without them unless a test sets them.
_CLEAN_ENV_VARS = ("KMSR_DEBUG", "KMSR_PLUGINS", "KMSR_DISABLE_PLUGINS", "FORCE_COLOR", "CLICOLOR_FORCE", "PYTHONSTARTUP")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """The tests' exported ONNX graphs go to a temporary cache, not the user's ~/.cache/kmsr."""
    old = os.environ.get("KMSR_CACHE_DIR")
    os.environ["KMSR_CACHE_DIR"] = str(tmp_path_factory.mktemp("kmsr-cache"))
    yield
    if old is None:
        os.environ.pop("KMSR_CACHE_DIR", None)
    else:
        os.environ["KMSR_CACHE_DIR"] = old


def cli_env(extra: dict[str, str] | None = None, *, plugin_site: str | os.PathLike | None = None) -> dict[str, str]:
    """A copy of os.environ for running the CLI: KMSR_* switches removed, wide and colourless
    output, ``plugin_site`` prepended to PYTHONPATH; ``extra`` applied last."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV_VARS}
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    env["PYTHONIOENCODING"] = "utf-8"
    if plugin_site is not None:
        parts = [str(plugin_site)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env["PYTHONPATH"] = os.pathsep.join(parts)
    env.update(extra or {})
    return env


def cli_in_process(capsys, *args) -> tuple[int, str, str]:
    """``kmsr ARGS`` in this process, through the console entry point (``kmsr_cli.app.main``), so an
    escaped exception fails the test with its traceback: (exit code, stdout, stderr)."""
    from kmsr_cli.app import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(
    *args: str | os.PathLike,
    cwd: str | os.PathLike,
    env: dict[str, str] | None = None,
    plugin_site: str | os.PathLike | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """``python -m kmsr_cli ARGS`` in a subprocess; stdout and stderr captured separately (text)."""
    return subprocess.run(
        [sys.executable, "-m", "kmsr_cli", *map(str, args)],
        cwd=cwd,
        env=cli_env(env, plugin_site=plugin_site),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )


@pytest.fixture
def run_kmsr(tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the CLI in a subprocess, in tmp_path unless ``cwd=`` says otherwise."""

    def run(*args, cwd=None, env=None, plugin_site=None, timeout=120):
        return run_cli(*args, cwd=cwd or tmp_path, env=env, plugin_site=plugin_site, timeout=timeout)

    return run


def install_fixture_package(src_dir: Path, root: Path, module: str) -> Path:
    """pip-install the fixture distribution in ``src_dir`` (no network, no deps) into ``root/site``.

    Nothing goes into the environment running the tests: the package is visible only to
    processes that put the returned folder on PYTHONPATH. The source is copied first, because
    building in place would leave build/ and *.egg-info/ inside tests/fixtures.
    """
    src = root / "src"
    site = root / "site"
    shutil.copytree(src_dir, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "--target", str(site), str(src),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"installing {src_dir.name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    assert (site / module / "__init__.py").is_file()
    assert list(site.glob(f"{module}-*.dist-info")), "no dist-info: the entry point would not be found"
    return site


@pytest.fixture(scope="session")
def external_plugin_site(tmp_path_factory) -> Path:
    """The example plugin pip-installed (no network, no deps) into a private folder."""
    return install_fixture_package(EXAMPLE_PLUGIN_SRC, tmp_path_factory.mktemp("external-plugin"), "kmsr_example_plugin")


@pytest.fixture(scope="session")
def example_backbone_site(tmp_path_factory):
    """The example backbone plugin installed into a private folder; uninstalled (deleted) afterwards."""
    root = tmp_path_factory.mktemp("example-backbone")
    site = install_fixture_package(EXAMPLE_BACKBONE_SRC, root, "kmsr_example_backbone")
    yield site
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def run_kmsr_example(run_kmsr, external_plugin_site) -> Callable[..., subprocess.CompletedProcess]:
    """``run_kmsr`` with the example plugin on PYTHONPATH."""

    def run(*args, **kwargs):
        kwargs.setdefault("plugin_site", external_plugin_site)
        return run_kmsr(*args, **kwargs)

    return run


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository root; skips the test when it is not there."""
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path} (it lives next to the repository checkout)")
    return path


# --------------------------------------------------------------------------- kernel sets


def make_random_kernels(n: int, k: int, seed: int = 0) -> np.ndarray:
    """(n, k, k) float32 kernels: positive, sum 1 (to float32 round-off), no symmetry."""
    rng = np.random.default_rng(seed)
    ks = rng.random((n, k, k)) + 0.01
    ks /= ks.sum(axis=(1, 2), keepdims=True)
    return ks.astype(np.float32)


@pytest.fixture
def random_kernels() -> Callable[..., np.ndarray]:
    return make_random_kernels


def write_test_set(path, kernels: np.ndarray, *, scale: int = 2, method: str = "test", origin: str = "synthetic",
                   source: str | None = None, description: str = "test set") -> Path:
    """Write ``kernels`` as a kernel set with one distinguishable provenance row per kernel."""
    from kmsr_cli.kernelset import Provenance, write_kernel_set

    prov = Provenance()
    for i in range(len(kernels)):
        prov.append(origin=origin, source=source or f"src:{Path(path).name}", method=method,
                    params={"i": i}, box=(i, i + 1, 5, 5), seed=100 + i, index=i)
    return write_kernel_set(path, kernels, prov, scale=scale, description=description)


@pytest.fixture
def write_set() -> Callable[..., Path]:
    return write_test_set


@pytest.fixture
def fresh_host():
    """An empty PluginHost: hookspecs added, no entry points loaded."""
    from kmsr_cli.plugin_host import PluginHost

    return PluginHost()


# --------------------------------------------------------------------------- HTML reports in a browser
# Headless Chromium (Debian's `chromium` package; .ci/run installs it where apt-get can), or None.
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def images_loaded(page: Path) -> tuple[int, int, str]:
    """(loaded, total, DOM) as headless Chromium sees ``page`` after its load event."""
    proc = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'data-images="(\d+)/(\d+)"', proc.stdout)
    assert m, f"the page's image check did not run: {proc.stdout[:500]}"
    return int(m.group(1)), int(m.group(2)), proc.stdout
