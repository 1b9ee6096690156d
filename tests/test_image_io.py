"""Tests for kmsr_ops.image_io.

Oracles never come from the code under test: test images are built with NumPy and
encoded by Pillow, by pypng (a pure-Python PNG codec, for the 16-bit colour PNGs Pillow
cannot write; chunks such as eXIf are added with its chunk writer), or by the tiny literal
TIFF builder below, which follows the format specification directly.
"""

import io
import os
import struct
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

from kmsr_ops.errors import ImageReadError, KmsrInputError
from kmsr_ops.image_io import (
    ImageData,
    encode_png,
    read_image,
    read_image_array,
    read_image_bytes,
    write_png,
)

RNG = np.random.default_rng(1234)


def unit(values, maxval):
    """The exact float32 a reader must return for integer samples."""
    return (np.asarray(values, dtype=np.float64) / maxval).astype(np.float32)


def save_pillow(path, array, fmt=None, **kwargs):
    Image.fromarray(array).save(path, format=fmt, **kwargs)
    return path


# --------------------------------------------------------------- PNGs written by pypng


def build_png(samples, colour, extra_chunks=(), **writer_options):
    """PNG bytes for uint8/uint16 (H, W, C) samples of PNG colour type ``colour``, written by
    pypng; ``extra_chunks`` ((type, body) pairs) go right after IHDR."""
    png = pytest.importorskip("png")
    height, width, channels = samples.shape
    depth = 16 if samples.dtype == np.uint16 else 8
    writer = png.Writer(width, height, greyscale=colour in (0, 4), alpha=colour in (4, 6),
                        bitdepth=depth, **writer_options)
    buf = io.BytesIO()
    writer.write(buf, samples.reshape(height, width * channels).tolist())
    if not extra_chunks:
        return buf.getvalue()
    chunks = list(png.Reader(bytes=buf.getvalue()).chunks())
    out = io.BytesIO()
    png.write_chunks(out, chunks[:1] + list(extra_chunks) + chunks[1:])
    return out.getvalue()


def build_tiff_rgb16(samples):
    """Uncompressed little-endian 16-bit RGB TIFF (Pillow cannot write one)."""
    height, width, _ = samples.shape
    data = samples.astype("<u2").tobytes()
    entries = [
        (256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, "bps"), (259, 3, 1, 1),
        (262, 3, 1, 2), (273, 4, 1, "data"), (277, 3, 1, 3), (278, 3, 1, height),
        (279, 4, 1, len(data)),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    bps_offset = 8 + ifd_size
    data_offset = bps_offset + 6
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if value == "bps":
            out += struct.pack("<HHII", tag, typ, count, bps_offset)
        elif value == "data":
            out += struct.pack("<HHII", tag, typ, count, data_offset)
        elif typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    return out + b"\x00\x00\x00\x00" + struct.pack("<HHH", 16, 16, 16) + data


# --------------------------------------------------------------- reading: exact values


@pytest.mark.parametrize("channels,shape", [("L", (5, 7)), ("RGB", (5, 7, 3)), ("RGBA", (5, 7, 4))])
def test_png_8bit_exact(tmp_path, channels, shape):
    samples = RNG.integers(0, 256, shape, dtype=np.uint8)
    samples.flat[0], samples.flat[1] = 0, 255
    path = save_pillow(tmp_path / "a.png", samples)
    image = read_image(path)
    assert isinstance(image, ImageData)
    assert image.channels == channels and image.bit_depth == 8 and image.path == str(path)
    assert image.pixels.dtype == np.float32
    expected = unit(samples, 255).reshape(5, 7, -1)
    np.testing.assert_array_equal(image.pixels, expected)


def test_png_16bit_grey_exact(tmp_path):
    samples = RNG.integers(0, 65536, (6, 4), dtype=np.uint16)
    samples[0, 0], samples[0, 1], samples[0, 2] = 0, 1, 65535
    path = save_pillow(tmp_path / "g16.png", samples)
    image = read_image(path)
    assert (image.channels, image.bit_depth, image.pixels.shape) == ("L", 16, (6, 4, 1))
    np.testing.assert_array_equal(image.pixels[..., 0], unit(samples, 65535))


@pytest.mark.parametrize("channels", [3, 4])
def test_png_16bit_colour_round_trip(tmp_path, channels):
    samples = RNG.integers(0, 65536, (9, 11, channels), dtype=np.uint16)
    samples[0, 0] = 0
    samples[0, 1] = 65535
    samples[0, 2] = 1  # would vanish in an 8-bit detour
    pixels = unit(samples, 65535)
    path = tmp_path / "c16.png"
    write_png(path, pixels, bit_depth=16)
    image = read_image(path)
    assert image.bit_depth == 16 and image.channels == ("RGB" if channels == 3 else "RGBA")
    np.testing.assert_array_equal(image.pixels, pixels)
    # Independent check of the writer: Pillow reads 16-bit colour PNGs keeping the high byte.
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im), (samples >> 8).astype(np.uint8))


@pytest.mark.parametrize(
    "colour,channels,depth", [(2, 3, 16), (6, 4, 16), (4, 2, 16), (2, 3, 8), (0, 1, 16)]
)
def test_png_decoder_against_pypng(colour, channels, depth):
    dtype = np.uint16 if depth == 16 else np.uint8
    samples = RNG.integers(0, 1 << depth, (7, 5, channels)).astype(dtype)
    data = build_png(samples, colour)
    image = read_image_bytes(data, "lit.png")
    assert image.bit_depth == depth
    out = image.pixels
    expected = samples if channels != 2 else samples[..., [0, 0, 0, 1]]
    np.testing.assert_array_equal(out, unit(expected, (1 << depth) - 1))


def test_png_16bit_rgb_large_values_exact():
    samples = RNG.integers(0, 65536, (6, 4, 3)).astype(np.uint16)
    samples[0, 0] = [0, 1, 65535]
    data = build_png(samples, 2)
    np.testing.assert_array_equal(read_image_bytes(data).pixels, unit(samples, 65535))


@pytest.mark.parametrize("mode_samples", ["rgb8", "grey16"])
def test_png_decoder_against_pillow_encoder(mode_samples):
    # Pillow picks filters per row (Sub, Up, Paeth, ...), a realistic mix.
    y, x = np.mgrid[0:24, 0:30]
    base = (x * 7 + y * 3) % 256
    if mode_samples == "rgb8":
        samples = np.dstack([base, 255 - base, (base // 2) + RNG.integers(0, 9, base.shape)])
        samples = samples.astype(np.uint8)
    else:
        samples = (base * 257 + RNG.integers(0, 200, base.shape)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(samples).save(buf, format="PNG")
    decoded = read_image_bytes(buf.getvalue(), "p.png").pixels
    np.testing.assert_array_equal(decoded, unit(samples, 255 if mode_samples == "rgb8" else 65535).reshape(24, 30, -1))


def test_png_16bit_rgb_with_trns_key_becomes_alpha():
    samples = np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint16)
    data = build_png(samples, 2, transparent=(4, 5, 6))  # pypng writes the tRNS chunk
    image = read_image_bytes(data)
    assert image.channels == "RGBA"
    np.testing.assert_array_equal(image.pixels[0, :, 3], [1.0, 0.0])


def test_interlaced_16bit_colour_png_is_refused():
    samples = np.zeros((2, 2, 3), dtype=np.uint16)
    data = build_png(samples, 2, interlace=True)
    assert data[28] == 1  # interlace method byte of IHDR
    with pytest.raises(ImageReadError, match="interlaced.*'i.png'|'i.png'.*interlaced"):
        read_image_bytes(bytes(data), "i.png")


def test_jpeg_high_quality_close(tmp_path):
    y, x = np.mgrid[0:32, 0:48]
    samples = np.dstack([x * 5, y * 7, (x + y) * 3]).astype(np.uint8)
    path = save_pillow(tmp_path / "a.jpg", samples, quality=98, subsampling=0)
    image = read_image(path)
    assert image.channels == "RGB" and image.bit_depth == 8 and image.pixels.shape == (32, 48, 3)
    assert np.abs(image.pixels - unit(samples, 255)).max() < 6 / 255


def test_tiff_8bit_rgb_and_16bit_grey(tmp_path):
    rgb = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    grey = RNG.integers(0, 65536, (4, 6), dtype=np.uint16)
    image = read_image(save_pillow(tmp_path / "a.tif", rgb))
    np.testing.assert_array_equal(image.pixels, unit(rgb, 255))
    image = read_image(save_pillow(tmp_path / "b.tiff", grey))
    assert (image.channels, image.bit_depth) == ("L", 16)
    np.testing.assert_array_equal(image.pixels[..., 0], unit(grey, 65535))


def test_tiff_16bit_colour_is_read_exactly_not_truncated(tmp_path):
    # Once refused (Pillow truncates these to 8 bits); tifffile reads them whole.
    samples = RNG.integers(0, 65536, (2, 3, 3), dtype=np.uint16)
    samples[0, 0] = [1, 40000, 65535]
    path = tmp_path / "c16.tif"
    path.write_bytes(build_tiff_rgb16(samples))
    image = read_image(path)
    assert (image.channels, image.bit_depth) == ("RGB", 16)
    np.testing.assert_array_equal(image.pixels, unit(samples, 65535))


def test_bmp(tmp_path):
    rgb = RNG.integers(0, 256, (5, 3, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_image_array(save_pillow(tmp_path / "a.bmp", rgb)), unit(rgb, 255))
    grey = RNG.integers(0, 256, (5, 3), dtype=np.uint8)
    image = read_image(save_pillow(tmp_path / "g.bmp", grey))
    assert image.channels == "L"
    np.testing.assert_array_equal(image.pixels[..., 0], unit(grey, 255))


def test_palette_png(tmp_path):
    palette = [10, 20, 30, 200, 100, 0, 255, 255, 255]
    index = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    im = Image.frombytes("P", (3, 2), index.tobytes())
    im.putpalette(palette)
    im.save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    colours = np.array(palette, dtype=np.uint8).reshape(3, 3)
    assert image.channels == "RGB"
    np.testing.assert_array_equal(image.pixels, unit(colours[index], 255))

    im.save(tmp_path / "pt.png", transparency=1)  # palette entry 1 fully transparent
    image = read_image(tmp_path / "pt.png")
    assert image.channels == "RGBA"
    np.testing.assert_array_equal(image.pixels[..., 3], (index != 1).astype(np.float32))
    np.testing.assert_array_equal(image.pixels[..., :3], unit(colours[index], 255))


def test_la_and_rgb_trns_png(tmp_path):
    la = RNG.integers(0, 256, (3, 4, 2), dtype=np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    image = read_image(tmp_path / "la.png")
    assert image.channels == "RGBA"
    np.testing.assert_array_equal(image.pixels, unit(la[..., [0, 0, 0, 1]], 255))

    rgb = np.array([[[1, 2, 3], [9, 9, 9]]], dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "t.png", transparency=(9, 9, 9))
    image = read_image(tmp_path / "t.png")
    assert image.channels == "RGBA"
    np.testing.assert_array_equal(image.pixels[0, :, 3], [1.0, 0.0])


# --------------------------------------------------------------- EXIF orientation


def _marked_image():
    samples = np.zeros((40, 64, 3), dtype=np.uint8)
    samples[:12, :12] = 255  # bright top-left corner
    return samples


@pytest.mark.parametrize("orientation,corner", [(6, "top-right"), (8, "bottom-left")])
def test_jpeg_exif_orientation(tmp_path, orientation, corner):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save_pillow(tmp_path / "o.jpg", _marked_image(), quality=95, exif=exif.tobytes())
    pixels = read_image_array(path)
    assert pixels.shape == (64, 40, 3)
    blocks = {
        "top-left": pixels[:12, :12], "top-right": pixels[:12, -12:],
        "bottom-left": pixels[-12:, :12], "bottom-right": pixels[-12:, -12:],
    }
    for name, block in blocks.items():
        assert (block.mean() > 0.9) == (name == corner), name


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16bit_png_exif_orientation_matches_pillow(orientation):
    samples = RNG.integers(0, 256, (3, 5, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    expected = np.asarray(ImageOps.exif_transpose(_with_exif(samples, exif)))
    wide = samples.astype(np.uint16) * 257
    data = build_png(wide, 2, extra_chunks=[(b"eXIf", exif.tobytes())])
    pixels = read_image_bytes(data).pixels
    np.testing.assert_array_equal(pixels, unit(expected, 255))


def _with_exif(samples, exif):
    buf = io.BytesIO()
    Image.fromarray(samples).save(buf, format="PNG", exif=exif.tobytes())
    return Image.open(io.BytesIO(buf.getvalue()))


# --------------------------------------------------------------- reading: failures


def _valid_png_bytes():
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("random.png", RNG.integers(0, 256, 500, dtype=np.uint8).tobytes(), "not an image"),
        ("text.png", b"hello, this is not an image\n" * 10, "not an image"),
        ("empty.png", b"", "empty"),
        ("half.png", _valid_png_bytes()[: len(_valid_png_bytes()) // 2], "truncated"),
    ],
)
def test_bad_files_raise_image_read_error(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value) and reason in str(info.value)
    assert isinstance(info.value, ValueError)


def test_truncated_jpeg_and_16bit_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    jpeg = tmp_path / "cut.jpg"
    jpeg.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg.*truncated"):
        read_image(jpeg)
    png = build_png(RNG.integers(0, 65536, (16, 16, 3)).astype(np.uint16), 2)
    cut = tmp_path / "cut16.png"
    cut.write_bytes(png[: len(png) // 2])
    with pytest.raises(ImageReadError, match="cut16.png.*truncated"):
        read_image(cut)
    corrupt = bytearray(png)
    corrupt[60] ^= 0xFF
    with pytest.raises(ImageReadError, match="bad16.png.*(CRC|corrupt)"):
        read_image_bytes(bytes(corrupt), "bad16.png")


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageReadError, match="nope.png.*does not exist"):
        read_image(missing)
    with pytest.raises(ImageReadError, match="directory") as info:
        read_image(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_read_bytes_and_stdin(monkeypatch):
    samples = RNG.integers(0, 256, (2, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(samples).save(buf, format="PNG")
    image = read_image_bytes(buf.getvalue())
    assert image.path == "<stdin>"
    np.testing.assert_array_equal(image.pixels[..., 0], unit(samples, 255))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(buf.getvalue())))
    np.testing.assert_array_equal(read_image("-").pixels, image.pixels)
    with pytest.raises(ImageReadError, match="'<stdin>'"):
        read_image_bytes(b"junk")


def test_channel_conversion(tmp_path):
    grey = RNG.integers(0, 256, (3, 4), dtype=np.uint8)
    rgba = RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    save_pillow(tmp_path / "g.png", grey)
    save_pillow(tmp_path / "c.png", rgba)
    as_rgb = read_image_array(tmp_path / "g.png", channels="RGB")
    np.testing.assert_array_equal(as_rgb, unit(np.dstack([grey] * 3), 255))
    np.testing.assert_array_equal(
        read_image_array(tmp_path / "c.png", channels="RGB"), unit(rgba[..., :3], 255)
    )
    image = read_image(tmp_path / "c.png", channels="L")
    assert image.channels == "L" and image.pixels.shape == (3, 4, 1)
    pillow_luma = np.asarray(Image.fromarray(rgba[..., :3]).convert("L"))
    assert np.abs(image.pixels[..., 0] - unit(pillow_luma, 255)).max() <= 1 / 255
    opaque = read_image_array(tmp_path / "g.png", channels="RGBA")
    assert opaque.shape == (3, 4, 4) and np.all(opaque[..., 3] == 1.0)
    with pytest.raises(KmsrInputError, match="channels"):
        read_image_array(tmp_path / "g.png", channels="BGR")


# --------------------------------------------------------------- writing


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 1), (4, 5, 3), (4, 5, 4)])
def test_write_png_8bit_read_by_pillow(tmp_path, shape):
    pixels = RNG.random(shape)
    pixels.flat[:3] = [-0.5, 1.5, 0.2]  # clipped to 0 and 1; 0.2 * 255 = 51 exactly
    path = tmp_path / "w.png"
    write_png(path, pixels)
    with Image.open(path) as im:
        got = np.asarray(im)
    expected = np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(got, expected.reshape(got.shape))
    assert got.flat[0] == 0 and got.flat[1] == 255 and got.flat[2] == 51


def test_write_png_16bit_grey_read_by_pillow(tmp_path):
    samples = RNG.integers(0, 65536, (3, 7), dtype=np.uint16)
    write_png(tmp_path / "g.png", unit(samples, 65535), bit_depth=16)
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(im).astype(np.uint16), samples)


def test_encode_png_and_stdout(monkeypatch):
    pixels = unit(RNG.integers(0, 256, (2, 2, 3)), 255)
    data = encode_png(pixels, 8)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    fake = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr(sys, "stdout", fake)
    write_png("-", pixels)
    assert fake.buffer.getvalue() == data


def test_write_png_replaces_atomically(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"old content")
    os.chmod(path, 0o640)
    pixels = unit(RNG.integers(0, 256, (3, 3, 3)), 255)
    write_png(path, pixels)
    assert os.listdir(tmp_path) == ["out.png"]
    assert os.stat(path).st_mode & 0o777 == 0o640
    np.testing.assert_array_equal(read_image_array(path), pixels)

    before = path.read_bytes()
    with pytest.raises(KmsrInputError):
        write_png(path, np.full((3, 3), np.nan))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.png"]


def test_write_png_failure_leaves_no_temp_and_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    path.write_bytes(b"old content")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="out.png"):
        write_png(path, np.zeros((2, 2)))
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["out.png"]


def test_write_png_missing_folder(tmp_path):
    with pytest.raises(KmsrInputError, match="does not exist"):
        write_png(tmp_path / "no" / "x.png", np.zeros((2, 2)))


@pytest.mark.parametrize(
    "pixels,bit_depth,match",
    [
        (np.full((2, 2), np.nan), 8, "finite"),
        (np.full((2, 2, 3), np.inf), 16, "finite"),
        (np.zeros(4), 8, r"shape \(H, W\)"),
        (np.zeros((2, 2, 3, 1)), 8, r"shape \(H, W\)"),
        (np.zeros((2, 2, 2)), 8, "1, 3 or 4 channels.*got 2"),
        (np.zeros((2, 2, 5)), 8, "got 5"),
        (np.zeros((0, 2)), 8, "at least 1x1"),
        (np.zeros((2, 2), dtype=np.uint8), 16, "floating point.*got dtype uint8 for bit_depth 16"),
        (np.zeros((2, 2), dtype=np.int32), 8, "floating point.*got dtype int32"),
        (np.zeros((2, 2)), 12, "bit_depth must be 8 or 16, got 12"),
        (np.zeros((2, 2)), True, "bit_depth"),
    ],
)
def test_write_png_rejects_bad_input(tmp_path, pixels, bit_depth, match):
    with pytest.raises(KmsrInputError, match=match):
        write_png(tmp_path / "x.png", pixels, bit_depth=bit_depth)
    assert os.listdir(tmp_path) == []


def test_integer_samples_are_written_as_they_are(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(5)
    a8 = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    write_png(tmp_path / "a.png", a8)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), a8)
    g16 = rng.integers(0, 65536, size=(5, 4), dtype=np.uint16)
    write_png(tmp_path / "g.png", g16, bit_depth=16)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g.png")).astype(np.uint16), g16)
