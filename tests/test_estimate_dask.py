"""``kmsr estimate --dask``: patches as Dask tasks, the same kernels as a local run, resume, a worker
killed mid-run. The oracle is the local single-process run of the same estimator on the same photos."""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np
import pytest
from conftest import cli_in_process
from PIL import Image

distributed = pytest.importorskip("dask.distributed", reason="--dask needs dask.distributed (pip install 'kmsr[dask]')")
pytest.importorskip("kmsr_darkchannel", reason="needs the built-in dark-channel estimator on the workers")

from kmsr_cli.estimate import Settings, discover_photos, run_estimate  # noqa: E402
from kmsr_cli.kernelset import KernelSet  # noqa: E402
from kmsr_cli.plugin_host import get_host  # noqa: E402

SETTINGS = dict(scale=1, patch=128, per_image=2, kernel_size=9, estimator="dark-channel", seed=3)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import skimage.data as skdata

    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(skdata.camera()).save(d / "camera.png")
    Image.fromarray(skdata.astronaut()).save(d / "astronaut.png")
    return discover_photos([str(d)])


@pytest.fixture(scope="module")
def local(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "k.h5"
    s = run_estimate(get_host(), photos, out, Settings(**SETTINGS), workers=1)
    assert s.kernels_total == 4
    return by_unit(out)


def by_unit(path) -> dict:
    with KernelSet(path) as ks:
        return dict(zip((json.loads(p)["unit"] for p in ks.provenance().params), ks.kernels()))


def same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5)


@pytest.fixture(scope="module")
def cluster():
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    yield c
    c.close()


def test_local_cluster_gives_the_local_kernels(photos, local, tmp_path):
    out = tmp_path / "d.h5"
    s = run_estimate(get_host(), photos, out, Settings(**SETTINGS), dask="local:2")
    assert s.kernels_written == 4 and s.kernels_total == 4
    same(by_unit(out), local)
    assert not (tmp_path / "d.h5.partial").exists()


def test_killed_client_reruns_only_what_is_missing(photos, local, tmp_path, cluster):
    out = tmp_path / "r.h5"
    seen = []

    def stop_after_one(event):
        if event.stage == "estimate.kernel":
            seen.append(1)
            if len(seen) == 1:
                raise KeyboardInterrupt  # the client dies after its first result is stored

    with pytest.raises(KeyboardInterrupt):
        run_estimate(get_host(), photos, out, Settings(**SETTINGS), dask=cluster.scheduler_address,
                     progress=stop_after_one)
    s = run_estimate(get_host(), photos, out, Settings(**SETTINGS), dask=cluster.scheduler_address)
    assert s.kernels_resumed == 1 and s.kernels_written == 3
    same(by_unit(out), local)


def test_a_worker_killed_mid_run_is_replaced(photos, local, tmp_path, cluster):
    client = distributed.Client(cluster)
    pids = client.run(os.getpid)  # worker address -> process id
    killed = []

    def kill_one(event):
        if event.stage == "estimate.kernel" and not killed:  # three patches still to do: kill a worker holding one
            busy = [w for w, tasks in client.processing().items() if tasks]
            assert busy, "no worker was processing a patch"
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append(busy[0])

    out = tmp_path / "w.h5"
    s = run_estimate(get_host(), photos, out, Settings(**SETTINGS), dask=cluster.scheduler_address, progress=kill_one)
    client.close()
    assert killed and s.kernels_total == 4 and not s.failed_patches
    same(by_unit(out), local)


@pytest.mark.parametrize("spec", ["local:0", "local:x", "nonsense"])
def test_bad_dask_spec_is_a_usage_error(capsys, photos, tmp_path, spec):
    code, _, stderr = cli_in_process(capsys, "estimate", str(photos[0]), "-o", str(tmp_path / "k.h5"), "--dask", spec)
    assert code == 2 and "--dask" in stderr
    assert not list(tmp_path.iterdir())


def test_missing_dask_names_the_install(capsys, photos, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    code, _, stderr = cli_in_process(capsys, "estimate", str(photos[0]), "-o", str(tmp_path / "k.h5"),
                                     "--dask", "local:2", "--patch", "128", "--scale", "1")
    assert code == 1 and "kmsr[dask]" in stderr
    assert not (tmp_path / "k.h5").exists()


def test_no_scheduler_at_the_address(capsys, photos, tmp_path):
    code, _, stderr = cli_in_process(capsys, "estimate", str(photos[0]), "-o", str(tmp_path / "k.h5"),
                                     "--dask", "tcp://127.0.0.1:9", "--patch", "128", "--scale", "1")
    assert code == 1 and "no Dask scheduler answers" in stderr


def test_local_cluster_workers_run_without_dasks_profiler(cluster):
    """Dask's 10 ms stack sampler runs in the worker process beside the estimate; the LocalCluster
    kmsr starts turns it off. The control: a LocalCluster with Dask's defaults has it."""
    from kmsr_cli.estimate import DaskPool

    def callbacks(dask_worker):
        return sorted(dask_worker.periodic_callbacks)

    with distributed.Client(cluster) as c:
        default = c.run(callbacks)
    assert all("profile" in cbs for cbs in default.values())
    pool = DaskPool("local:1", "dark-channel", {})
    try:
        ours = pool.client.run(callbacks)
    finally:
        pool.shutdown()
    assert len(ours) == 1 and all("profile" not in cbs and "heartbeat" in cbs for cbs in ours.values())
