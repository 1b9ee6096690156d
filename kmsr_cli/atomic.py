"""Writing an output so that a killed run never leaves half a file or destroys the old one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# Longest file name most file systems take (ext4, XFS, btrfs, APFS, NTFS: 255 bytes).
NAME_MAX = 255
# Temporary files are named by this hidden prefix and a short random token, never by the
# output's own name: any name the file system accepts for the output works for its temp file.
TMP_PREFIX = ".kmsr-"


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


def sidecar_path(path: str | os.PathLike, suffix: str) -> Path:
    """``PATH`` + ``suffix`` beside ``path`` (``k.h5.partial``, ``k.h5.lock``) when that name
    fits the file system; for a name too long for it, a short hidden name derived from the
    output's name (the same on every run, so a rerun finds it)."""
    path = Path(path)
    name = path.name + suffix
    folder = path.parent if str(path.parent) else Path(".")
    limit = _name_max(folder) if folder.is_dir() else NAME_MAX
    if len(os.fsencode(name)) <= limit:
        return path.with_name(name)
    digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]
    return path.with_name(f"{TMP_PREFIX}{digest}{suffix}")


def replace_atomically(path: str | os.PathLike, write: Callable[[str], None], *, fsync: bool = False) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, then move it over ``path``.

    The temporary file gets the permissions a plain ``open()`` would give (mkstemp makes 0600;
    outputs are shared like any file the user writes). On any failure it is removed and the
    previous ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def check_output_folder(path: str | os.PathLike, option: str) -> Path:
    """Refuse, before any work, an output folder that cannot be one: ``path`` or one of the
    folders above it exists and is not a folder. Returns ``path``; creates nothing."""
    from kmsr_ops.errors import KmsrError

    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                what = "is an existing file" if p == path else f"cannot be made: {p} is an existing file"
                raise KmsrError(f"{option} {path}: a folder is expected, but it {what}",
                               hint=f"choose another {option}, or move {p} away")
            break
    return path


class OutputLock:
    """An exclusive ``fcntl.flock`` on ``OUT.lock`` beside an output, held for a whole run.

    A second run on the same output fails at once (``KmsrError`` naming the output) instead of
    sharing its temporary and partial files. The lock file is removed when the lock is
    released; a run that finds the file it locked already unlinked (a race with that removal)
    locks the new one instead. The lock goes with the process, so a killed run never leaves
    the output locked.
    """

    def __init__(self, path: str | os.PathLike, command: str = "kmsr"):
        self.path = Path(path)
        self.lock_path = sidecar_path(self.path, ".lock")
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        import fcntl

        from kmsr_ops.errors import KmsrError

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise KmsrError(
                    f"{self.path}: another {self.command} run is writing this output (it holds {self.lock_path})",
                    hint="wait for that run to finish, or choose another -o",
                ) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return self
            os.close(fd)  # the holder removed it between our open and our lock: take the new one

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.lock_path)  # still holding the lock: nobody else can be using this file
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
