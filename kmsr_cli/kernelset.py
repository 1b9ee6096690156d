"""Kernel sets and pools in HDF5: one format for estimated, generated, synthetic and merged sets.

Layout (format ``kmsr-kernel-set``, version 1)::

    /                 attrs: format, format_version, scale, kernel_size, count,
                             created_by, created_at, description
    /kernels          (N, K, K) float32, chunked by whole kernels, gzip-compressed
    /provenance/      one entry per kernel, same order as /kernels
        origin        str: estimated | generated | synthetic
        source        str: photo path, generator checkpoint, or generator name
        box           (N, 4) int32: patch box (top, left, height, width), -1 when none
        method        str: estimator or generator name
        params        str: JSON of the method's parameters
        seed          int64: seed the kernel was made with (-1 when none)
        index         int64: index within its source (patch number, sample number)

Files are written to a temporary file in the same folder and moved into place, so a killed
run never leaves half a file and never destroys the previous one. Readers open the file
lazily, on first use in each process, so a :class:`KernelSet` can be handed to DataLoader
workers. Kernels are always read whole, as (K, K) arrays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from kmsr_ops.errors import KmsrError, KmsrInputError
from kmsr_ops.kernels import validate_kernels

from . import __version__
from .atomic import replace_atomically

FORMAT_NAME = "kmsr-kernel-set"
FORMAT_VERSION = 1
ORIGINS = ("estimated", "generated", "synthetic")
_STR_FIELDS = ("origin", "source", "method", "params")
_INT_FIELDS = ("seed", "index")
_MISSING = object()


def h5_text(value) -> str:
    """``value`` as text HDF5 can store (UTF-8). A path that is not UTF-8 (bytes such as 0xff in a
    file name, held as surrogates by ``os.fsdecode``) is written with those bytes as ``\\xff``
    escapes instead of failing the whole write; :func:`path_bytes_hex` keeps them exactly."""
    text = str(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def path_bytes_hex(path) -> str | None:
    """The exact bytes of a file name that is not valid UTF-8, as hex (None for a UTF-8 name):
    stored beside the escaped text so the name is kept losslessly (``bytes.fromhex``)."""
    text = os.fspath(path)
    raw = text if isinstance(text, bytes) else os.fsencode(text)
    try:
        raw.decode("utf-8")
        return None
    except UnicodeDecodeError:
        return raw.hex()


@dataclass
class Provenance:
    """Per-kernel provenance, column-wise (every list has one entry per kernel)."""

    origin: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    box: list[tuple[int, int, int, int]] = field(default_factory=list)
    method: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    seed: list[int] = field(default_factory=list)
    index: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.origin)

    def append(self, *, origin: str, source: str, method: str, params: dict | str | None = None,
               box: Sequence[int] | None = None, seed: int | None = None, index: int = -1) -> None:
        if origin not in ORIGINS:
            raise KmsrInputError(f"origin: expected one of {', '.join(ORIGINS)}, found {origin!r}")
        self.origin.append(origin)
        self.source.append(str(source))
        self.method.append(str(method))
        if params is None:
            params = {}
        self.params.append(params if isinstance(params, str) else json.dumps(params, sort_keys=True))
        b = tuple(int(v) for v in box) if box is not None else (-1, -1, -1, -1)
        if len(b) != 4:
            raise KmsrInputError(f"box: expected (top, left, height, width), found {box!r}")
        self.box.append(b)
        self.seed.append(-1 if seed is None else int(seed))
        self.index.append(int(index))

    def extend(self, other: Provenance) -> None:
        for name in ("origin", "source", "box", "method", "params", "seed", "index"):
            getattr(self, name).extend(getattr(other, name))

    def check(self, n: int) -> None:
        for name in ("origin", "source", "box", "method", "params", "seed", "index"):
            if len(getattr(self, name)) != n:
                raise KmsrInputError(f"provenance.{name}: expected {n} entries (one per kernel), found {len(getattr(self, name))}")

    def row(self, i: int) -> dict:
        return {
            "origin": self.origin[i],
            "source": self.source[i],
            "box": list(self.box[i]),
            "method": self.method[i],
            "params": json.loads(self.params[i]) if self.params[i] else {},
            "seed": self.seed[i],
            "index": self.index[i],
        }


def write_kernel_set(
    path: str | os.PathLike,
    kernels: np.ndarray,
    provenance: Provenance,
    *,
    scale: int,
    description: str = "",
    extra_attrs: dict | None = None,
) -> Path:
    """Validate and write a kernel set atomically; returns the path written."""
    import h5py

    path = Path(path)
    kernels = np.asarray(kernels)
    if kernels.ndim != 3 or kernels.shape[0] == 0:
        raise KmsrInputError(f"kernels: expected a non-empty (N, K, K) stack, found shape {kernels.shape}")
    validate_kernels(kernels, name="kernels", require_odd=True)
    provenance.check(kernels.shape[0])
    if int(scale) != scale or scale < 1:
        raise KmsrInputError(f"scale: expected a positive integer, found {scale!r}")
    n, k, _ = kernels.shape

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["scale"] = int(scale)
            f.attrs["kernel_size"] = int(k)
            f.attrs["count"] = int(n)
            f.attrs["created_by"] = f"kmsr {__version__}"
            f.attrs["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            f.attrs["description"] = h5_text(description)
            for key, value in (extra_attrs or {}).items():
                f.attrs[key] = h5_text(value) if isinstance(value, str) else value
            # Whole kernels per chunk, ~160 kB chunks: random single-kernel reads stay cheap.
            chunk = (max(1, min(n, 65536 // (k * k))), k, k)
            f.create_dataset("kernels", data=kernels.astype(np.float32), chunks=chunk, compression="gzip", compression_opts=4, shuffle=True)
            g = f.create_group("provenance")
            sdt = h5py.string_dtype("utf-8")
            for name in _STR_FIELDS:
                g.create_dataset(name, data=np.array([h5_text(v) for v in getattr(provenance, name)], dtype=object), dtype=sdt)
            g.create_dataset("box", data=np.asarray(provenance.box, dtype=np.int32).reshape(n, 4))
            for name in _INT_FIELDS:
                g.create_dataset(name, data=np.asarray(getattr(provenance, name), dtype=np.int64))

    return replace_atomically(path, write)


class KernelSet:
    """Read access to a kernel-set file; opens lazily and once per process."""

    def __init__(self, path: str | os.PathLike, *, require_nonempty: bool = True):
        self.path = Path(path)
        self._file = None
        self._pid = None
        self.attrs = self._read_header(require_nonempty)

    # The open h5py handle must not travel to DataLoader workers (forked or spawned).
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def _fail(self, problem: str) -> KmsrError:
        return KmsrError(f"{self.path}: {problem}", hint="kmsr pool show FILE  (checks a kernel set)")

    def _check_scale(self, value) -> int:
        """The root attribute ``scale`` as an int: a positive integer, else a one-line error."""
        if value is _MISSING:
            raise self._fail("has no root attribute 'scale' (the SR scale the kernels are for, a positive integer)")
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        if not number or not np.isfinite(value) or int(value) != value or int(value) < 1:
            raise self._fail(f"root attribute 'scale' is {value!r}; expected a positive integer (the SR scale)")
        return int(value)

    def _read_header(self, require_nonempty: bool) -> dict:
        import h5py

        if not self.path.exists():
            raise KmsrError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise KmsrError(f"{self.path}: is a folder, expected a kernel-set .h5 file")
        try:
            f = h5py.File(self.path, "r")
        except OSError as exc:
            raise self._fail(f"not a readable HDF5 file ({exc})") from None
        with f:
            fmt = f.attrs.get("format")
            if isinstance(fmt, bytes):
                fmt = fmt.decode()
            if fmt != FORMAT_NAME:
                raise self._fail(f"not a kmsr kernel set (root attribute format={fmt!r}, expected {FORMAT_NAME!r})")
            version = int(f.attrs.get("format_version", -1))
            if version > FORMAT_VERSION:
                raise self._fail(f"format version {version} is newer than this kmsr understands ({FORMAT_VERSION}); upgrade kmsr")
            if "kernels" not in f:
                raise self._fail("has no /kernels dataset")
            ds = f["kernels"]
            if ds.ndim != 3 or ds.shape[1] != ds.shape[2]:
                raise self._fail(f"/kernels must be (N, K, K), found shape {ds.shape}")
            if ds.shape[1] % 2 == 0:  # write_kernel_set only writes odd sizes; kernels are centred on a pixel
                raise self._fail(f"kernel size {ds.shape[1]} is even, expected an odd size (K, K)")
            if require_nonempty and ds.shape[0] == 0:
                raise self._fail("holds no kernels")
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            attrs["scale"] = self._check_scale(attrs.get("scale", _MISSING))
            attrs["count"] = int(ds.shape[0])
            attrs["kernel_size"] = int(ds.shape[1])
            return attrs

    def _h5(self):
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __len__(self) -> int:
        return int(self.attrs["count"])

    @property
    def kernel_size(self) -> int:
        return int(self.attrs["kernel_size"])

    @property
    def scale(self) -> int:
        return int(self.attrs["scale"])

    def __getitem__(self, i: int) -> np.ndarray:
        """Kernel ``i`` as a full (K, K) float32 array (never a slice of it)."""
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"kernel index {i} out of range for {n} kernels in {self.path}")
        k = self._h5()["kernels"][int(i) % n, :, :]
        return np.asarray(k, dtype=np.float32)

    def kernels(self, *, validate: bool = True) -> np.ndarray:
        """All kernels, (N, K, K) float32; validated unless asked not to."""
        ks = np.asarray(self._h5()["kernels"][...], dtype=np.float32)
        if validate:
            try:
                validate_kernels(ks, name="kernels", require_odd=False)
            except KmsrInputError as exc:
                raise self._fail(str(exc)) from None
        return ks

    def provenance(self) -> Provenance:
        f = self._h5()
        n = len(self)
        if "provenance" not in f:
            p = Provenance()
            for i in range(n):
                p.append(origin="synthetic", source="unknown", method="unknown", index=i)
            return p
        g = f["provenance"]

        def strings(name):
            return [s.decode() if isinstance(s, bytes) else str(s) for s in g[name][...]]

        p = Provenance(
            origin=strings("origin"),
            source=strings("source"),
            box=[tuple(int(v) for v in row) for row in g["box"][...]],
            method=strings("method"),
            params=strings("params"),
            seed=[int(v) for v in g["seed"][...]],
            index=[int(v) for v in g["index"][...]],
        )
        p.check(n)
        return p

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def resize_kernels(kernels: np.ndarray, size: int, *, source: str = "kernels") -> np.ndarray:
    """Bring (N, K, K) kernels to (N, size, size): centre crop (renormalised) or zero padding.

    Kernels are in HR pixels whatever their array size, so changing the size changes the
    support only, never the pixel pitch (no interpolation).
    """
    from kmsr_ops.kernels import pad_or_crop_kernel

    out = np.empty((len(kernels), size, size), dtype=np.float64)
    for i, k in enumerate(kernels):
        try:
            out[i] = pad_or_crop_kernel(k.astype(np.float64), size)
        except KmsrInputError as exc:
            raise KmsrError(f"{source}[{i}]: cannot bring it to {size}x{size}: {exc}") from None
    return out


def merge_kernel_sets(paths: Iterable[str | os.PathLike], out: str | os.PathLike, *, description: str = "",
                      resample: bool = False) -> Path:
    """Concatenate kernel sets of one scale into a new file.

    Kernel sizes must match the first set's, unless ``resample``: then the other sets are centre
    cropped or zero padded to it (see :func:`resize_kernels`). Scales must always match: a kernel
    measured in photos upscaled x2 is not one of x4 at another size.
    """
    sets = [KernelSet(p) for p in paths]
    if not sets:
        raise KmsrError("merge: give at least one kernel set")
    first = sets[0]
    for s in sets[1:]:
        if s.scale != first.scale:
            raise KmsrError(f"{s.path}: scale x{s.scale} differs from {first.path} (x{first.scale}); kernels of different scales cannot share a pool")
        if s.kernel_size != first.kernel_size and not resample:
            raise KmsrError(
                f"{s.path}: kernel size {s.kernel_size} differs from {first.path} ({first.kernel_size})",
                hint=f"add --resample to centre-crop or zero-pad every set to {first.kernel_size}x{first.kernel_size}",
            )
    stacks = []
    for s in sets:
        k = s.kernels()
        stacks.append(k if s.kernel_size == first.kernel_size else resize_kernels(k, first.kernel_size, source=str(s.path)))
    ks = np.concatenate(stacks)
    prov = Provenance()
    for s in sets:
        prov.extend(s.provenance())
        s.close()
    return write_kernel_set(out, ks, prov, scale=first.scale, description=description or f"merge of {len(sets)} sets")
