"""`kill -9` of `kmsr estimate --workers 2` leaves no worker or resource-tracker process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_env


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(d.name)] = int(fields[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - out
        out |= frontier
    return out


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(p)
    return alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_kill_9_leaves_no_workers(tmp_path):
    from PIL import Image
    from skimage import data

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(("astronaut", "coffee", "chelsea", "rocket")):
        Image.fromarray(getattr(data, name)()[:300, :300]).save(photos / f"{i}.png")
    proc = subprocess.Popen([sys.executable, "-m", "kmsr_cli", "estimate", str(photos), "-o", str(tmp_path / "k.h5"),
                             "--workers", "2", "--patch", "256", "--per-image", "2"],
                            env=cli_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 90
        kids: set[int] = set()
        while time.time() < deadline and len(kids) < 2:  # both workers started (plus the tracker)
            kids = _children(proc.pid)
            time.sleep(0.5)
        assert len(kids) >= 2, "the workers never started"
        time.sleep(3)  # let them reach the initialiser
        kids = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.time() + 20
        while time.time() < deadline and _alive(kids):
            time.sleep(0.5)
        assert not _alive(kids), f"still running after kill -9 of the parent: {sorted(_alive(kids))}"
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
