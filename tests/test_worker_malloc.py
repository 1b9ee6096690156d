"""kmsr_cli.estimate.keep_large_blocks_in_heap: a Dask worker's malloc settings no longer turn
every large array into a fresh mmap (and its pages into page faults).

The oracle is the kernel's own page-fault count (``getrusage``) in a child process started with
the environment Dask's nanny gives its workers (``MALLOC_TRIM_THRESHOLD_=65536``): 100 allocations
of a touched 1 MiB array fault in each of its 256 pages every time, unless the block is reused.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import resource, sys
import numpy as np
from kmsr_cli.estimate import keep_large_blocks_in_heap

def faults():
    np.ones(1)
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        a = np.ones(1 << 17)  # 1 MiB, every page written
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0

before = faults()
applied = keep_large_blocks_in_heap()
faults()  # the first pass after the change may still grow the heap once
print(before, int(applied), faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt thresholds are a glibc feature")
def test_large_blocks_stop_faulting_under_dasks_malloc_environment():
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True, timeout=120)
    before, applied, after = (int(v) for v in out.stdout.split())
    pages = 100 * (1 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert applied == 1
    assert before > 0.9 * pages  # the setting Dask starts workers with: a fresh mapping per array
    assert after < 0.05 * pages  # after: the freed block is reused
