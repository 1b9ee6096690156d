"""Small file helpers shared by the CLI and the plugins (both import ``kmsr_ops``)."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (``hashlib.file_digest``: streamed, never read whole)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
