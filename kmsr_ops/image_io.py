"""Reading and writing images as float32 arrays in [0, 1], shape (H, W, C), C in {1, 3, 4}.

Who decodes what:

* 16-bit colour PNG (RGB, RGBA, grey + alpha): imagecodecs' libpng codec, because Pillow (up
  to 13 at least) reads those as 8-bit and cannot write them; Pillow still parses the header
  and the EXIF block. Every other PNG, JPEG, BMP, WebP, PPM/PGM: Pillow.
* TIFF: tifffile (8/16-bit and packed 9-15-bit integer, and float samples, grey/RGB with or without alpha, any
  compression imagecodecs decodes); palette, CMYK, bilevel and other photometric kinds go to
  Pillow as before.
* HEIC/HEIF: pillow-heif (extra ``heif``); camera RAW by file suffix: rawpy (extra ``raw``).

``ImageData.bit_depth`` says what the source held: 8 or 16 (integer samples; the pixels are
then exactly k / 255 or k / 65535) or 32 (floating-point samples, e.g. a float TIFF; the
pixels are those values clipped to [0, 1]). Code that only knows 8 and 16 treats 32 as 16.

All the codecs are imported lazily to keep ``import kmsr_ops.image_io`` (and the CLI start)
cheap.
"""

from __future__ import annotations

import io
import os
import re
import sys
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
    "encode_tiff",
    "write_png",
    "write_image",
]

CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}
# Camera RAW is recognised by its file name only: most RAW formats are TIFF inside.
_RAW_SUFFIXES = frozenset({".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf"})
_TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
# What the readers here decode, by file name: the one list every command that searches folders uses.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm",
                            ".heic", ".heif"}) | _RAW_SUFFIXES


def images_in(folder: str | os.PathLike, *, recursive: bool = False) -> list:
    """The image files (by :data:`IMAGE_SUFFIXES`, any letter case) in ``folder``, sorted by path."""
    from pathlib import Path

    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
_CHANNELS_BY_COUNT = {count: name for name, count in CHANNELS.items()}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
# ISO base media file brands of HEIF stills (HEVC-coded, or the generic image brands).
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs",
                          b"mif1", b"msf1"})
# ITU-R BT.601 luma, the weights Pillow uses for RGB -> L, so both paths agree.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True, eq=False)
class ImageData:
    """A decoded image: ``pixels`` float32 (H, W, C) in [0, 1] and where it came from."""

    pixels: np.ndarray
    bit_depth: int  # bits per sample of the source: 8 or 16 (integers), 32 (floating point)
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
    """Decode an encoded image held in memory; ``name`` is used in error messages (and its
    suffix marks camera RAW files)."""
    if channels is not None and channels not in CHANNELS:
        raise KmsrInputError(f"channels must be one of 'L', 'RGB', 'RGBA' or None, got {channels!r}")
    data = bytes(data)
    if not data:
        raise ImageReadError(_msg(name, "file is empty"))
    samples, bit_depth = _decode(data, name)
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
    if bit_depth == 32:  # floating-point samples, already checked and clipped to [0, 1]
        return np.ascontiguousarray(samples, dtype=np.float32)
    scale = np.float32(255 if bit_depth == 8 else 65535)
    # float32 division of integers is exact to the rounding of v / max, as the tests expect.
    return np.ascontiguousarray(samples.astype(np.float32) / scale)


def _decode(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """(samples, bit_depth): uint8/uint16 (or float32 in [0, 1] for bit depth 32), (H, W[, C])
    with C in {1, 3, 4}, EXIF orientation applied."""
    if os.path.splitext(name)[1].lower() in _RAW_SUFFIXES:
        return _decode_raw(data, name)
    if _is_heif(data):
        return _decode_heif(data, name)
    if data[:4] in _TIFF_SIGNATURES:
        decoded = _decode_tiff(data, name)
        if decoded is not None:
            return decoded
    return _decode_with_pillow(data, name)


def _check_size(width: int, height: int, name: str) -> None:
    """Pillow's decompression-bomb limit, for the decoders that are not Pillow."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > 2 * limit:
        raise ImageReadError(_msg(name, f"image is too large ({width}x{height} pixels)"))


def _missing_extra(name: str, what: str, extra: str, module: str) -> ImageReadError:
    return ImageReadError(_msg(name, f"{what} need the {module} package, which is not installed: "
                                     f"pip install 'kmsr[{extra}]'"))


def _orientation_from(exif) -> int:
    """The EXIF orientation (1-8) in a PIL ``Image.Exif``; 1 when absent or out of range."""
    try:
        value = int(exif.get(0x0112, 1))
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation like PIL.ImageOps.exif_transpose, on an (H, W[, C]) array."""
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


# Pillow raw modes that hold 16 bits per sample; if one feeds an 8-bit image mode, Pillow
# has dropped the low byte. ("BGR;16" and friends are packed 5-6-5 pixels, not matched.)
_WIDE_RAWMODE = re.compile(r"^(RGB|RGBA|RGBX|LA|CMYK|L);16[BLN]?$")


def _rawmodes(im) -> list:
    return [
        t.args[0] if isinstance(t.args, tuple) and t.args else t.args
        for t in getattr(im, "tile", None) or []
    ]


def _decode_with_pillow(data: bytes, name: str) -> tuple[np.ndarray, int]:
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

    if im.format == "PNG" and im.mode in ("RGB", "RGBA", "LA") and any(
        isinstance(r, str) and _WIDE_RAWMODE.match(r) for r in _rawmodes(im)
    ):
        return _decode_png16(data, im, name), 16
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
            return _float_samples(np.asarray(im), name), 32
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
    wide = any(isinstance(r, str) and _WIDE_RAWMODE.match(r) for r in _rawmodes(im))
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


def _float_samples(samples: np.ndarray, name: str) -> np.ndarray:
    """Floating-point samples as float32 clipped to [0, 1]; NaN or Inf is refused."""
    samples = np.asarray(samples, dtype=np.float32)
    if not np.all(np.isfinite(samples)):
        raise ImageReadError(_msg(name, "floating-point samples hold NaN or infinite values"))
    return np.clip(samples, 0.0, 1.0)


# --------------------------------------------------------------------------- 16-bit PNG


def _decode_png16(data: bytes, im, name: str) -> np.ndarray:
    """A 16-bit RGB/RGBA/grey+alpha PNG that Pillow has opened (header only) as uint16
    (H, W, 3 or 4) samples, a tRNS colour key turned into alpha, EXIF orientation applied."""
    if im.info.get("interlace"):
        # libpng decodes these, but warns on stderr each time through imagecodecs' reader.
        raise ImageReadError(_msg(name, "interlaced 16-bit colour PNG is not supported; "
                                        "re-save it without interlacing"))
    import imagecodecs

    try:
        samples = imagecodecs.png_decode(data)  # libpng expands a tRNS key into alpha
    except Exception as exc:  # noqa: BLE001 - imagecodecs.PngError, MemoryError, ...
        text = str(exc)
        if "too small" in text or "Not enough image data" in text:
            reason = f"file is truncated ({text})"
        else:
            reason = f"corrupt PNG data ({type(exc).__name__}: {text})"
        raise ImageReadError(_msg(name, reason)) from None
    samples = np.asarray(samples, dtype=np.uint16)
    if samples.ndim == 3 and samples.shape[2] == 2:  # grey + alpha -> RGBA
        samples = samples[..., [0, 0, 0, 1]]
    orientation = 1
    if b"eXIf" in data:  # Pillow finds an eXIf chunk after the image data only by loading it all
        try:
            orientation = _orientation_from(im.getexif())
        except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, as Pillow does
            orientation = 1
    return _apply_orientation(samples, orientation)


# --------------------------------------------------------------------------- TIFF


def _decode_tiff(data: bytes, name: str) -> tuple[np.ndarray, int] | None:
    """Decode grey/RGB TIFFs (with or without alpha; 8, 9-16 or 32-bit integer or float samples)
    with tifffile; None for the kinds that Pillow handles (palette, CMYK, YCbCr, bilevel)."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            photometric = int(page.photometric)
            dtype = page.dtype
            if (
                photometric not in (1, 2)  # MINISBLACK, RGB
                or dtype is None
                or dtype.kind not in "uif"
                or (dtype.kind != "f" and page.bitspersample not in (8, 16, 32) and not 9 <= page.bitspersample <= 15)
            ):
                return None
            _check_size(page.imagewidth, page.imagelength, name)
            samples = page.asarray()
            bits = int(page.bitspersample)
            axes = page.axes
            extras = tuple(int(e) for e in page.extrasamples)
            tag = page.tags.get(274)  # Orientation
            orientation = int(tag.value) if tag is not None and 1 <= int(tag.value) <= 8 else 1
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises TiffFileError, ValueError, struct.error, ...
        text = str(exc)
        if "failed to read" in text or isinstance(exc, EOFError):
            reason = f"file is truncated ({text})"
        else:
            reason = f"corrupt or unsupported TIFF data ({type(exc).__name__}: {text})"
        raise ImageReadError(_msg(name, reason)) from None

    if axes == "SYX":  # planar configuration "separate"
        samples = np.moveaxis(samples, 0, -1)
    elif axes == "YX":
        samples = samples[..., None]
    elif axes != "YXS":
        raise ImageReadError(_msg(name, f"TIFF sample layout {axes!r} is not supported (one grey or colour image expected)"))
    colour = 3 if photometric == 2 else 1
    if samples.shape[2] < colour:
        raise ImageReadError(_msg(name, f"corrupt TIFF (RGB with {samples.shape[2]} samples per pixel)"))
    alpha_kind = extras[0] if extras and samples.shape[2] > colour else 0  # 1 associated, 2 unassociated

    if dtype.kind == "f":
        samples, bit_depth, maxval = _float_samples(samples, name), 32, 1.0
    elif dtype.kind == "i":
        raise ImageReadError(_msg(name, f"signed integer TIFF samples ({dtype}) are not supported"))
    elif dtype.itemsize == 4:
        if samples.size and samples.max() > 65535:
            raise ImageReadError(_msg(name, "32-bit integer samples are not supported"))
        samples, bit_depth, maxval = samples.astype(np.uint16), 16, 65535
    else:
        bit_depth = 8 * dtype.itemsize
        maxval = 255 if bit_depth == 8 else 65535
        if 9 <= bits <= 15:
            # Packed 9-15-bit samples (12-bit scanner and camera TIFFs) arrive as uint16 with
            # white at 2**bits - 1: stretched to 0-65535 so that white stays 1.0.
            samples = np.rint(samples.astype(np.float64) * (65535 / (2**bits - 1))).astype(np.uint16)

    picked = samples[..., :colour]
    if alpha_kind in (1, 2):
        alpha = samples[..., colour : colour + 1]
        if alpha_kind == 1:  # premultiplied colour: divide the alpha back out, as Pillow does
            a = alpha.astype(np.float64)
            c = np.where(a > 0, picked.astype(np.float64) * maxval / np.maximum(a, 1e-30), 0.0)
            c = np.clip(c, 0, maxval)
            picked = (c if dtype.kind == "f" else np.rint(c)).astype(samples.dtype)
        if colour == 1:
            picked = np.repeat(picked, 3, axis=2)
        picked = np.concatenate([picked, alpha], axis=2)
    return _apply_orientation(np.ascontiguousarray(picked), orientation), bit_depth


# --------------------------------------------------------------------------- HEIF, RAW


def _is_heif(data: bytes) -> bool:
    if len(data) < 12 or data[4:8] != b"ftyp":
        return False
    box = data[8 : 8 + max(0, int.from_bytes(data[:4], "big") - 8)]
    if data[8:12] in (b"mif1", b"msf1") and b"avif" in box:
        return False  # AVIF shares the generic brands; Pillow reads it
    return data[8:12] in _HEIF_BRANDS


def _decode_heif(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """HEIC/HEIF through pillow-heif; libheif applies the file's rotation and mirroring
    (which a HEIF writer sets from the EXIF orientation), so EXIF is not applied again."""
    try:
        import pillow_heif
    except ImportError:
        raise _missing_extra(name, "HEIC/HEIF images", "heif", "pillow-heif") from None
    try:
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
        _check_size(heif.size[0], heif.size[1], name)
        depth = int(heif.info.get("bit_depth") or 8)
        samples = np.asarray(heif)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - pillow-heif raises ValueError, RuntimeError, ...
        raise ImageReadError(_msg(name, f"corrupt or unsupported HEIF data ({type(exc).__name__}: {exc})")) from None
    if samples.ndim == 3 and samples.shape[2] == 2:
        samples = samples[..., [0, 0, 0, 1]]
    if samples.dtype == np.uint8:
        return np.ascontiguousarray(samples), 8
    # 10/12-bit images come as uint16 with the samples in the high bits: rescale them to
    # 0-65535 so that white stays 1.0.
    top = (1 << depth) - 1
    values = (samples >> (16 - depth)).astype(np.float64)
    return np.rint(values * (65535 / top)).astype(np.uint16), 16


def _decode_raw(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Camera RAW through rawpy (LibRaw): the camera's white balance, demosaiced (AHD), sRGB
    primaries and tone curve, no auto-brightening, 16 bits; LibRaw applies the orientation."""
    try:
        import rawpy
    except ImportError:
        raise _missing_extra(name, "camera RAW files", "raw", "rawpy") from None
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            _check_size(raw.sizes.width, raw.sizes.height, name)
            rgb = raw.postprocess(use_camera_wb=True, no_auto_bright=True, output_bps=16,
                                  gamma=(2.4, 12.92), output_color=rawpy.ColorSpace.sRGB)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - rawpy's LibRaw*Error family, MemoryError, ...
        raise ImageReadError(_msg(name, f"corrupt or unsupported camera RAW data ({type(exc).__name__}: {exc})")) from None
    return np.ascontiguousarray(rgb, dtype=np.uint16), 16


# --------------------------------------------------------------------------- writing


def _check_pixels(pixels, bit_depth, depths=(8, 16)) -> np.ndarray:
    if isinstance(bit_depth, bool) or bit_depth not in depths:
        allowed = ", ".join(map(str, depths[:-1])) + f" or {depths[-1]}"
        raise KmsrInputError(f"bit_depth must be {allowed}, got {bit_depth!r}")
    arr = np.asarray(pixels)
    integer_ok = (
        (arr.dtype == np.uint8 and bit_depth in (8, 32))
        or (arr.dtype == np.uint16 and bit_depth in (16, 32))
    )
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


def _quantise(arr: np.ndarray, bit_depth: int) -> np.ndarray:
    """Checked pixels as the samples to store: uint8/uint16 for 8/16 bits, float32 for 32."""
    if bit_depth == 32:
        if arr.dtype.kind == "u":
            return (arr.astype(np.float64) / np.iinfo(arr.dtype).max).astype(np.float32)
        return np.clip(arr, 0.0, 1.0).astype(np.float32)
    if arr.dtype.kind == "u":
        return arr  # already quantised samples of the requested depth (large images stay small)
    maxval = 255 if bit_depth == 8 else 65535
    quantised = np.rint(np.clip(arr.astype(np.float64), 0.0, 1.0) * maxval)
    return quantised.astype(np.uint8 if bit_depth == 8 else np.uint16)


def encode_png(pixels: np.ndarray, bit_depth: int = 8) -> bytes:
    """Encode float pixels in [0, 1] ((H, W) or (H, W, C), C in 1, 3, 4) as PNG bytes.

    Values are clipped to [0, 1] and rounded to the nearest of 2**bit_depth levels; uint8
    (8-bit) or uint16 (16-bit) samples are written as they are.
    """
    samples = _quantise(_check_pixels(pixels, bit_depth), bit_depth)
    channels = samples.shape[2]
    if bit_depth == 16 and channels > 1:
        # Pillow cannot write 16-bit colour PNGs: libpng through imagecodecs does.
        import imagecodecs

        return bytes(imagecodecs.png_encode(np.ascontiguousarray(samples)))
    from PIL import Image

    image = Image.fromarray(samples[..., 0] if channels == 1 else samples)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_tiff(pixels: np.ndarray, bit_depth: int = 16) -> bytes:
    """Encode pixels as a deflate-compressed TIFF: 8 or 16-bit integer samples (quantised as
    :func:`encode_png` does) or, for ``bit_depth=32``, float32 samples clipped to [0, 1]
    (uint8/uint16 input is divided by 255/65535). Grey is MINISBLACK, colour RGB, RGBA has
    an unassociated alpha."""
    import tifffile

    samples = _quantise(_check_pixels(pixels, bit_depth, depths=(8, 16, 32)), bit_depth)
    channels = samples.shape[2]
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        samples[..., 0] if channels == 1 else samples,
        photometric="minisblack" if channels == 1 else "rgb",
        extrasamples=("unassalpha",) if channels == 4 else None,
        compression="zlib",
        metadata=None,
    )
    return buffer.getvalue()


def write_png(path: str | os.PathLike, pixels: np.ndarray, *, bit_depth: int = 8) -> None:
    """Write pixels as PNG to ``path`` atomically ("-" writes to standard output).

    The file is written to a temporary name in the same folder and renamed over
    ``path``, so readers never see a half-written image and a failed write leaves any
    existing file intact.
    """
    _write_bytes(path, encode_png(pixels, bit_depth))


def write_image(path: str | os.PathLike, pixels: np.ndarray, *, bit_depth: int = 8) -> None:
    """Write pixels atomically in the format the suffix of ``path`` names.

    ``.tif``/``.tiff``: TIFF with ``bit_depth`` 8, 16 or 32 (float32 samples). ``.png`` and
    "-" (standard output): PNG, with 32 (a float source) written as 16-bit. Other suffixes
    are refused.
    """
    target = os.fsdecode(os.fspath(path))
    suffix = os.path.splitext(target)[1].lower()
    if target != "-" and suffix in _TIFF_SUFFIXES:
        _write_bytes(target, encode_tiff(pixels, bit_depth))
    elif target == "-" or suffix == ".png":
        write_png(target, pixels, bit_depth=16 if bit_depth == 32 else bit_depth)
    else:
        raise KmsrInputError(f"cannot write {target!r}: kmsr writes .png, .tif and .tiff images, not {suffix or 'files without a suffix'}")


def _write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``data`` to ``path`` through a temporary file renamed over it ("-": standard output)."""
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
