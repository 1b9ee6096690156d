"""kmsr_ops.files against hashlib on the whole content."""

from __future__ import annotations

import hashlib

import numpy as np

from kmsr_ops.files import file_sha256


def test_file_sha256_matches_hashlib_across_blocks(tmp_path):
    data = np.random.default_rng(0).bytes((1 << 20) * 2 + 12345)  # spans three 1 MiB blocks
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    assert file_sha256(p) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
