"""Reading and writing images as float32 arrays in [0, 1], shape (H, W, C), C in {1, 3, 4}.

Pillow does the decoding, except for 16-bit colour PNGs: Pillow (up to 13 at least) reads
them as 8-bit RGB/RGBA and cannot write them, so a small PNG codec here handles those and
the input's bit depth survives a read/write round trip.

Pillow is imported lazily to keep ``import kmsr_ops.image_io`` (and the CLI start) cheap.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import zlib
from dataclasses import dataclass

import numpy as np

from kmsr_ops.errors import ImageReadError, KmsrInputError

__all__ = [
    "ImageData",
    "read_image",
    "read_image_bytes",
    "read_image_array",
    "convert_channels",
    "encode_png",
    "write_png",
]

CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}
# What the readers here decode, by file name: the one list every command that searches folders uses.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm"})


def images_in(folder: str | os.PathLike, *, recursive: bool = False) -> list:
    """The image files (by :data:`IMAGE_SUFFIXES`, any letter case) in ``folder``, sorted by path."""
    from pathlib import Path

    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
_CHANNELS_BY_COUNT = {count: name for name, count in CHANNELS.items()}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# ITU-R BT.601 luma, the weights Pillow uses for RGB -> L, so both paths agree.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True, eq=False)
class ImageData:
    """A decoded image: ``pixels`` float32 (H, W, C) in [0, 1] and where it came from."""

    pixels: np.ndarray
    bit_depth: int  # bits per sample of the source: 8 or 16
    channels: str  # "L", "RGB" or "RGBA"
    path: str  # file path, or a name such as "<stdin>" for bytes


# --------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike, *, channels: str | None = None) -> ImageData:
    """Read an image file ("-" reads standard input); optionally convert to ``channels``."""
    if os.fspath(path) == "-":
        return read_image_bytes(sys.stdin.buffer.read(), "<stdin>", channels=channels)
    name = os.fspath(path)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ImageReadError(_msg(name, "file does not exist")) from None
    except IsADirectoryError:
        raise ImageReadError(_msg(name, "it is a directory, not a file")) from None
    except PermissionError:
        raise ImageReadError(_msg(name, "permission denied")) from None
    except OSError as exc:
        raise ImageReadError(_msg(name, exc.strerror or str(exc))) from None
    return read_image_bytes(data, name, channels=channels)


def read_image_array(path: str | os.PathLike, *, channels: str | None = None) -> np.ndarray:
    """Like :func:`read_image` but return only the float32 (H, W, C) pixels."""
    return read_image(path, channels=channels).pixels


def read_image_bytes(
    data: bytes, name: str = "<stdin>", *, channels: str | None = None
) -> ImageData:
    """Decode an encoded image held in memory; ``name`` is used in error messages."""
    if channels is not None and channels not in CHANNELS:
        raise KmsrInputError(f"channels must be one of 'L', 'RGB', 'RGBA' or None, got {channels!r}")
    data = bytes(data)
    if not data:
        raise ImageReadError(_msg(name, "file is empty"))
    if _is_16bit_colour_png(data):
        samples, orientation = _decode_png(data, name)
        samples = _apply_orientation(samples, orientation)
        bit_depth = 16
    else:
        samples, bit_depth = _decode_with_pillow(data, name)
    pixels = _to_unit_float(samples, bit_depth)
    image = ImageData(pixels, bit_depth, _CHANNELS_BY_COUNT[pixels.shape[2]], name)
    if channels is not None and channels != image.channels:
        image = ImageData(convert_channels(pixels, channels), bit_depth, channels, name)
    return image


def convert_channels(pixels: np.ndarray, channels: str) -> np.ndarray:
    """Convert float (H, W, C) pixels to "L" (BT.601 luma), "RGB" or "RGBA" (opaque alpha).

    RGB from L replicates the grey; RGB or L from RGBA drops the alpha.
    """
    if channels not in CHANNELS:
        raise KmsrInputError(f"channels must be one of 'L', 'RGB', 'RGBA', got {channels!r}")
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[2] not in _CHANNELS_BY_COUNT:
        raise KmsrInputError(f"pixels must have shape (H, W, C) with C in 1, 3, 4, got {pixels.shape}")
    have = pixels.shape[2]
    want = CHANNELS[channels]
    if have == want:
        return pixels
    colour = pixels[..., :3] if have >= 3 else pixels[..., :1]
    if want == 1:
        if colour.shape[2] == 1:
            return np.ascontiguousarray(colour)
        luma = colour @ _LUMA
        return np.clip(luma, 0.0, 1.0)[..., None].astype(np.float32)
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    if want == 3:
        return np.ascontiguousarray(colour)
    alpha = np.ones(colour.shape[:2] + (1,), dtype=np.float32)
    return np.concatenate([colour, alpha], axis=2)


def _msg(name: str, reason: str) -> str:
    return f"cannot read image {name!r}: {reason}"


def _to_unit_float(samples: np.ndarray, bit_depth: int) -> np.ndarray:
    if samples.ndim == 2:
        samples = samples[..., None]
    scale = np.float32(255 if bit_depth == 8 else 65535)
    # float32 division of integers is exact to the rounding of v / max, as the tests expect.
    return np.ascontiguousarray(samples.astype(np.float32) / scale)


# Pillow raw modes that hold 16 bits per sample; if one feeds an 8-bit image mode, Pillow
# has dropped the low byte. ("BGR;16" and friends are packed 5-6-5 pixels, not matched.)
_WIDE_RAWMODE = re.compile(r"^(RGB|RGBA|RGBX|LA|CMYK|L);16[BLN]?$")


def _decode_with_pillow(data: bytes, name: str) -> tuple[np.ndarray, int]:
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    # Pillow raises a wide variety of exception types on corrupt input (OSError,
    # SyntaxError, ValueError, struct.error, EOFError, IndexError, ...), so every
    # Pillow call on file data is guarded and turned into ImageReadError.
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        # Pillow reports a cut-off header the same way as a non-image; the signature
        # tells the two apart, which makes for a far more useful message.
        kind = next((k for sig, k in _SIGNATURES if data.startswith(sig)), None)
        reason = (
            f"file is truncated or corrupt (it starts like a {kind} file)"
            if kind
            else "not an image, or a format Pillow cannot read"
        )
        raise ImageReadError(_msg(name, reason)) from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(_msg(name, f"image is too large ({exc})")) from None
    except Exception as exc:  # noqa: BLE001 - see above
        raise ImageReadError(_msg(name, _reason(exc))) from None

    _refuse_lossy_wide_samples(im, name)
    try:
        # load() before anything else so truncation surfaces here: Pillow only decodes
        # lazily, and ImageFile.LOAD_TRUNCATED_IMAGES stays False (never set here).
        im.load()
        im = ImageOps.exif_transpose(im)
        mode = im.mode
        if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
            return np.asarray(im).astype(np.uint16), 16
        if mode == "I":
            samples = np.asarray(im)
            if samples.size and (samples.min() < 0 or samples.max() > 65535):
                raise ImageReadError(_msg(name, "32-bit integer samples are not supported"))
            return samples.astype(np.uint16), 16
        if mode == "F":
            raise ImageReadError(_msg(name, "32-bit float images are not supported"))
        if mode in ("L", "RGB", "RGBA"):
            if "transparency" in im.info and mode != "RGBA":
                im = im.convert("RGBA")  # a tRNS colour key becomes a real alpha channel
        elif mode == "1":
            im = im.convert("L")
        elif mode == "P":
            has_alpha = "transparency" in im.info or (im.palette is not None and "A" in im.palette.mode)
            im = im.convert("RGBA" if has_alpha else "RGB")
        elif mode in ("LA", "La", "PA", "RGBa"):
            if mode == "La":
                im = im.convert("LA")
            im = im.convert("RGBA")
        else:  # RGBX, CMYK, YCbCr, LAB, HSV, ...
            im = im.convert("RGB")
        return np.asarray(im, dtype=np.uint8), 8
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(_msg(name, f"image is too large ({exc})")) from None
    except Exception as exc:  # noqa: BLE001 - see above
        raise ImageReadError(_msg(name, _reason(exc))) from None


def _refuse_lossy_wide_samples(im, name: str) -> None:
    """Raise rather than let Pillow silently truncate 16-bit colour samples to 8 bits."""
    if im.mode.startswith("I") or im.mode == "F":
        return
    bits = None
    tags = getattr(im, "tag_v2", None)  # TIFF
    if tags is not None:
        value = tags.get(258)  # BitsPerSample
        values = value if isinstance(value, tuple) else (value,)
        bits = max((v for v in values if isinstance(v, int)), default=None)
    rawmodes = [
        t.args[0] if isinstance(t.args, tuple) and t.args else t.args
        for t in getattr(im, "tile", None) or []
    ]
    wide = any(isinstance(r, str) and _WIDE_RAWMODE.match(r) for r in rawmodes)
    if wide or (bits is not None and bits > 8):
        raise ImageReadError(
            _msg(
                name,
                f"{im.format or 'this'} image has more than 8 bits per colour sample, which "
                "Pillow would truncate to 8 bits; convert it to a 16-bit PNG",
            )
        )


_SIGNATURES = [
    (_PNG_SIGNATURE, "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
]


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        # Pillow says "image file is truncated (N bytes not processed)"; keep the detail.
        detail = text.removeprefix("image file is truncated").strip()
        if detail and not detail.startswith("("):
            detail = f"({detail})"
        return f"file is truncated {detail}".rstrip()
    return f"corrupt or unsupported image data ({type(exc).__name__}: {text})"


# --------------------------------------------------------------------------- PNG codec

# Samples per pixel for PNG colour types 0 (grey), 2 (RGB), 4 (grey+alpha), 6 (RGBA).
_PNG_COLOUR_SAMPLES = {0: 1, 2: 3, 4: 2, 6: 4}


def _is_16bit_colour_png(data: bytes) -> bool:
    return (
        len(data) >= 29
        and data[:8] == _PNG_SIGNATURE
        and data[12:16] == b"IHDR"
        and data[24] == 16
        and data[25] in (2, 4, 6)
    )


def _decode_png(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Decode a non-interlaced 8/16-bit grey/RGB/grey-alpha/RGBA PNG.

    Returns (samples, exif_orientation): samples uint8 or uint16 (H, W, C) with C in
    {1, 3, 4} (grey+alpha becomes RGBA, a tRNS key becomes alpha).
    """

    def fail(reason: str) -> ImageReadError:
        return ImageReadError(_msg(name, reason))

    if data[:8] != _PNG_SIGNATURE:
        raise fail("not a PNG file")
    pos = 8
    header = None
    idat: list[bytes] = []
    trns = exif = None
    ended = False
    while pos < len(data):
        if pos + 8 > len(data):
            raise fail("file is truncated (incomplete chunk header)")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length + 4
        if end > len(data):
            raise fail(f"file is truncated (chunk {ctype!r} runs past the end)")
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(ctype + body) != crc:
            raise fail(f"corrupt file (CRC mismatch in chunk {ctype!r})")
        pos = end
        if header is None:
            if ctype != b"IHDR" or length != 13:
                raise fail("corrupt file (first chunk is not IHDR)")
            header = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"tRNS":
            trns = body
        elif ctype == b"eXIf":
            exif = body
        elif ctype == b"IEND":
            ended = True
            break
    if header is None:
        raise fail("file is truncated (no IHDR chunk)")
    if not ended:
        raise fail("file is truncated (no IEND chunk)")
    width, height, depth, colour, compression, filtering, interlace = header
    if colour not in _PNG_COLOUR_SAMPLES or depth not in (8, 16):
        raise fail(f"unsupported PNG colour type {colour} with bit depth {depth}")
    if compression != 0 or filtering != 0:
        raise fail("corrupt file (unknown compression or filter method)")
    if interlace != 0:
        raise fail(
            f"interlaced {depth}-bit colour PNG is not supported; "
            "re-save it without interlacing"
        )
    if width == 0 or height == 0:
        raise fail("corrupt file (zero width or height)")
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > 2 * limit:
        raise fail(f"image is too large ({width}x{height} pixels)")
    if not idat:
        raise fail("corrupt file (no IDAT chunk)")

    samples_pp = _PNG_COLOUR_SAMPLES[colour]
    bpp = samples_pp * depth // 8  # bytes per pixel: the filter's "left" distance
    stride = 1 + width * bpp
    expected = stride * height
    inflater = zlib.decompressobj()
    try:
        # max_length bounds memory even for a zlib bomb; extra data is ignored, as libpng does.
        raw = inflater.decompress(b"".join(idat), expected)
    except zlib.error as exc:
        raise fail(f"corrupt compressed image data ({exc})") from None
    if len(raw) < expected:
        raise fail("file is truncated (image data ends early)")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride)
    filters = rows[:, 0]
    if filters.max() > 4:
        raise fail(f"corrupt file (unknown PNG row filter {int(filters.max())})")
    filtered = rows[:, 1:].reshape(height, width, bpp)
    pixels = _unfilter(filtered, filters)

    dtype = np.dtype(">u2") if depth == 16 else np.dtype(np.uint8)
    samples = pixels.reshape(height, width * bpp).view(dtype).reshape(height, width, samples_pp)
    samples = samples.astype(np.uint16 if depth == 16 else np.uint8)
    maxval = (1 << depth) - 1
    if colour in (0, 2) and trns is not None and len(trns) == 2 * samples_pp:
        key = np.array(struct.unpack(f">{samples_pp}H", trns), dtype=np.uint16)
        alpha = np.where(np.all(samples == key, axis=2), 0, maxval).astype(samples.dtype)
        samples = np.concatenate([samples, alpha[..., None]], axis=2)
    if samples.shape[2] == 2:  # grey + alpha -> RGBA
        samples = samples[..., [0, 0, 0, 1]]
    return samples, _exif_orientation(exif)


def _unfilter(filtered: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Undo PNG row filters; ``filtered`` is uint8 (H, W, bytes per pixel)."""
    height = filtered.shape[0]
    out = np.empty_like(filtered)
    if np.all(filters <= 2):
        # None / Sub / Up only: each row is one vectorised step.
        prev = np.zeros_like(filtered[0])
        for r in range(height):
            f = filters[r]
            if f == 0:
                row = filtered[r]
            elif f == 1:  # Sub: running sum along the row, modulo 256 per byte lane
                row = np.cumsum(filtered[r], axis=0, dtype=np.uint8)
            else:  # Up
                row = filtered[r] + prev
            out[r] = row
            prev = row
        return out
    return _unfilter_wavefront(filtered, filters)


def _unfilter_wavefront(filtered: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """General unfilter, vectorised along anti-diagonals.

    Average and Paeth make each pixel depend on its left, upper and upper-left
    neighbours, so a row cannot be done in one step; all pixels on an anti-diagonal
    (r + c = d) are independent though, giving H + W - 1 vectorised steps.
    """
    height, width, bpp = filtered.shape
    # Zero border on top and left stands in for the "outside the image" bytes.
    recon = np.zeros((height + 1, width + 1, bpp), dtype=np.int16)
    filt = filtered.astype(np.int16)
    kinds = filters.astype(np.int16)
    for d in range(height + width - 1):
        r = np.arange(max(0, d - width + 1), min(height - 1, d) + 1)
        c = d - r
        a = recon[r + 1, c]  # left
        b = recon[r, c + 1]  # up
        ul = recon[r, c]  # upper left
        pa = np.abs(b - ul)
        pb = np.abs(a - ul)
        pc = np.abs(a + b - 2 * ul)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, ul))
        kind = kinds[r][:, None]
        pred = np.select(
            [kind == 1, kind == 2, kind == 3, kind == 4],
            [a, b, (a + b) >> 1, paeth],
            default=0,
        )
        recon[r + 1, c + 1] = (filt[r, c] + pred) & 0xFF
    return recon[1:, 1:].astype(np.uint8)


def _exif_orientation(exif: bytes | None) -> int:
    if not exif:
        return 1
    from PIL import Image

    try:
        parsed = Image.Exif()
        parsed.load(exif)
        value = int(parsed.get(0x0112, 1))
    except Exception:  # noqa: BLE001 - broken EXIF is ignored, as Pillow does
        return 1
    return value if 1 <= value <= 8 else 1


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation like PIL.ImageOps.exif_transpose, on an (H, W, C) array."""
    ops = {
        1: lambda x: x,
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.swapaxes(0, 1),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: np.rot90(x, 2).swapaxes(0, 1),
        8: lambda x: np.rot90(x, 1),
    }
    return np.ascontiguousarray(ops[orientation](a))


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _encode_png_raw(samples: np.ndarray, colour: int) -> bytes:
    """Encode uint8/uint16 (H, W, C) samples as PNG, every row with the Up filter.

    Up compresses smooth images well and decodes in one vectorised step per row.
    """
    height, width, _ = samples.shape
    depth = 16 if samples.dtype == np.uint16 else 8
    raw = samples.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1).view(np.uint8)
    up = raw.copy()
    up[1:] -= raw[:-1]  # modulo 256, as the filter defines
    rows = np.empty((height, raw.shape[1] + 1), dtype=np.uint8)
    rows[:, 0] = 2
    rows[:, 1:] = up
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"".join(
        [
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
            _png_chunk(b"IEND", b""),
        ]
    )


# --------------------------------------------------------------------------- writing


def _check_pixels(pixels, bit_depth) -> np.ndarray:
    if isinstance(bit_depth, bool) or bit_depth not in (8, 16):
        raise KmsrInputError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    arr = np.asarray(pixels)
    integer_ok = (arr.dtype == np.uint8 and bit_depth == 8) or (arr.dtype == np.uint16 and bit_depth == 16)
    if not (np.issubdtype(arr.dtype, np.floating) or integer_ok):
        raise KmsrInputError(
            f"pixels must be floating point with values in [0, 1] (or uint8 for 8-bit, uint16 for 16-bit "
            f"samples), got dtype {arr.dtype} for bit_depth {bit_depth}"
        )
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise KmsrInputError(f"pixels must have shape (H, W) or (H, W, C), got {arr.shape}")
    if arr.shape[2] not in _CHANNELS_BY_COUNT:
        raise KmsrInputError(
            f"pixels must have 1, 3 or 4 channels (L, RGB, RGBA), got {arr.shape[2]} "
            f"(shape {arr.shape})"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise KmsrInputError(f"pixels must be at least 1x1, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise KmsrInputError("pixels must be finite, found NaN or Inf values")
    return arr


def encode_png(pixels: np.ndarray, bit_depth: int = 8) -> bytes:
    """Encode float pixels in [0, 1] ((H, W) or (H, W, C), C in 1, 3, 4) as PNG bytes.

    Values are clipped to [0, 1] and rounded to the nearest of 2**bit_depth levels; uint8
    (8-bit) or uint16 (16-bit) samples are written as they are.
    """
    arr = _check_pixels(pixels, bit_depth)
    if arr.dtype.kind == "u":
        samples = arr  # already quantised samples of the requested depth (large images stay small)
    else:
        maxval = 255 if bit_depth == 8 else 65535
        quantised = np.rint(np.clip(arr.astype(np.float64), 0.0, 1.0) * maxval)
        samples = quantised.astype(np.uint8 if bit_depth == 8 else np.uint16)
    channels = samples.shape[2]
    if bit_depth == 16 and channels > 1:
        # Pillow cannot write 16-bit colour PNGs: use the small encoder above.
        return _encode_png_raw(samples, 2 if channels == 3 else 6)
    import io

    from PIL import Image

    image = Image.fromarray(samples[..., 0] if channels == 1 else samples)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: str | os.PathLike, pixels: np.ndarray, *, bit_depth: int = 8) -> None:
    """Write pixels as PNG to ``path`` atomically ("-" writes to standard output).

    The file is written to a temporary name in the same folder and renamed over
    ``path``, so readers never see a half-written image and a failed write leaves any
    existing file intact.
    """
    data = encode_png(pixels, bit_depth)
    target = os.fspath(path)
    if isinstance(target, bytes):
        target = os.fsdecode(target)
    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise KmsrInputError(f"cannot write {target!r}: folder {folder!r} does not exist")
    if os.path.isdir(target):
        raise KmsrInputError(f"cannot write {target!r}: it is a directory")
    try:
        # Mode 0o666 lets the umask decide, like a plain open(); mkstemp would force 0o600.
        while True:
            # A short name, not the output's: a long but legal output name still has a temp name.
            tmp = os.path.join(folder, f".kmsr-{os.urandom(6).hex()}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileExistsError:
                continue
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:  # keep the permissions of a file being replaced
                os.chmod(tmp, os.stat(target).st_mode & 0o7777)
            except FileNotFoundError:
                pass
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {target!r}: {exc.strerror or exc}") from exc
