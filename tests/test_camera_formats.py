"""Camera formats in and out (issue #15): 16-bit and float TIFF, HEIC/HEIF, camera RAW.

Every file read here is written by another library (tifffile, Pillow, pillow-heif; the DNG by
tifffile from the DNG tags) and every expected value comes from that library's own decode, from
the samples written, or from the sRGB formula.
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from conftest import cli_in_process
from PIL import Image, ImageOps

from kmsr_ops.errors import ImageReadError
from kmsr_ops.image_io import images_in, read_image, read_image_bytes, write_image

tifffile = pytest.importorskip("tifffile")
RNG = np.random.default_rng(77)


def unit(values, maxval):
    return (np.asarray(values, dtype=np.float64) / maxval).astype(np.float32)


def sr_errors(capsys, *args):
    """``kmsr sr ARGS``: (exit code, the ``error:`` lines, stderr)."""
    code, _, err = cli_in_process(capsys, "sr", *args, "--model", "bicubic", "--scale", "2", "--device", "cpu")
    assert "Traceback" not in err, err
    return code, [ln for ln in err.splitlines() if ln.startswith("error:")], err


# --------------------------------------------------------------------------- TIFF in


@pytest.mark.parametrize("shape,channels,options", [
    ((6, 5, 3), "RGB", {"photometric": "rgb"}),
    ((6, 5, 4), "RGBA", {"photometric": "rgb", "extrasamples": ["unassalpha"], "compression": "zlib"}),
    ((6, 5), "L", {"photometric": "minisblack", "compression": "lzw"}),
])
def test_16bit_tiff_from_tifffile_read_exactly(tmp_path, shape, channels, options):
    samples = RNG.integers(0, 65536, shape, dtype=np.uint16)
    samples.flat[:3] = [0, 1, 65535]
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, samples, **options)
    image = read_image(path)
    assert (image.bit_depth, image.channels) == (16, channels)
    np.testing.assert_array_equal(image.pixels, unit(samples, 65535).reshape(image.pixels.shape))


@pytest.mark.parametrize("bits", [10, 12])
def test_packed_12bit_tiff_has_white_at_one(tmp_path, bits):
    """A packed 12-bit (or 10-bit) TIFF as scanners and cameras write it: white is 2**bits - 1."""
    top = 2**bits - 1
    samples = RNG.integers(0, top + 1, (5, 7, 3), dtype=np.uint16)
    samples.flat[:3] = [0, 1, top]
    tifffile.imwrite(tmp_path / "p.tif", samples, photometric="rgb", bitspersample=bits)
    with tifffile.TiffFile(tmp_path / "p.tif") as tif:  # the file really is packed, and decodes to the samples
        assert tif.pages[0].bitspersample == bits
        np.testing.assert_array_equal(tif.pages[0].asarray(), samples)
    image = read_image(tmp_path / "p.tif")
    assert (image.bit_depth, image.channels) == (16, "RGB")
    assert image.pixels.flat[2] == 1.0
    np.testing.assert_allclose(image.pixels, unit(samples, top), atol=0.51 / 65535 + 1e-7)


def test_planar_and_grey_alpha_tiff(tmp_path):
    rgb = RNG.integers(0, 65536, (3, 4, 6), dtype=np.uint16)  # (S, Y, X): planar "separate"
    tifffile.imwrite(tmp_path / "p.tif", rgb, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif").pixels, unit(np.moveaxis(rgb, 0, -1), 65535))
    la = RNG.integers(0, 256, (4, 6, 2), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "la.tif", la, photometric="minisblack", extrasamples=["unassalpha"])
    image = read_image(tmp_path / "la.tif")
    assert (image.bit_depth, image.channels) == (8, "RGBA")
    np.testing.assert_array_equal(image.pixels, unit(la[..., [0, 0, 0, 1]], 255))


def test_float_tiff_keeps_float_values(tmp_path):
    grey = RNG.random((5, 7)).astype(np.float32)
    grey[0, :3] = [-0.25, 1.5, 0.123456789]  # outside [0, 1]: clipped
    tifffile.imwrite(tmp_path / "f.tif", grey)
    image = read_image(tmp_path / "f.tif")
    assert (image.bit_depth, image.channels, image.pixels.dtype) == (32, "L", np.float32)
    np.testing.assert_array_equal(image.pixels[..., 0], np.clip(grey, 0, 1))
    assert image.pixels[0, 2, 0] == np.float32(0.123456789)  # not on a 1/65535 grid
    rgb = RNG.random((4, 3, 3))  # float64 samples come back as float32
    tifffile.imwrite(tmp_path / "d.tiff", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "d.tiff").pixels, rgb.astype(np.float32))
    bad = grey.copy()
    bad[1, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", bad)
    with pytest.raises(ImageReadError, match="nan.tif.*NaN"):
        read_image(tmp_path / "nan.tif")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_exif_orientation_matches_pillow(tmp_path, orientation):
    samples = RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    im = Image.fromarray(samples)
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.tif", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.tif")))
    np.testing.assert_array_equal(read_image(tmp_path / "o.tif").pixels, unit(expected, 255))


def test_16bit_tiff_orientation_tag_from_tifffile(tmp_path):
    samples = np.zeros((4, 6), dtype=np.uint16)
    samples[0, 0] = 65535  # top-left before turning
    tifffile.imwrite(tmp_path / "o.tif", samples, extratags=[(274, 3, 1, 6, True)])  # 6: rotate 90 clockwise
    pixels = read_image(tmp_path / "o.tif").pixels
    assert pixels.shape == (6, 4, 1)
    assert pixels[0, -1, 0] == 1.0 and pixels.sum() == 1.0  # now top-right


def test_jpeg_orientation_still_applied(tmp_path):
    samples = np.zeros((16, 24, 3), dtype=np.uint8)
    samples[:8, :8] = 255
    exif = Image.Exif()
    exif[0x0112] = 3  # upside down
    Image.fromarray(samples).save(tmp_path / "o.jpg", quality=95, exif=exif.tobytes())
    pixels = read_image(tmp_path / "o.jpg").pixels
    assert pixels.shape == (16, 24, 3)
    assert pixels[-8:, -8:].mean() > 0.9 and pixels[:8, :8].mean() < 0.1


# --------------------------------------------------------------------------- TIFF out


@pytest.mark.parametrize("bit_depth,dtype", [(8, np.uint8), (16, np.uint16), (32, np.float32)])
@pytest.mark.parametrize("shape", [(5, 4), (5, 4, 3), (5, 4, 4)])
def test_tiff_written_by_kmsr_read_by_tifffile(tmp_path, bit_depth, dtype, shape):
    pixels = RNG.random(shape).astype(np.float32)
    pixels.flat[:2] = [-0.5, 1.5]
    path = tmp_path / "w.tiff"
    write_image(path, pixels, bit_depth=bit_depth)
    got = tifffile.imread(path)
    assert got.dtype == dtype and got.shape == shape
    clipped = np.clip(pixels.astype(np.float64), 0, 1)
    expected = clipped.astype(np.float32) if bit_depth == 32 else np.rint(clipped * np.iinfo(dtype).max).astype(dtype)
    np.testing.assert_array_equal(got, expected)
    if len(shape) == 3 and shape[2] == 4:
        with tifffile.TiffFile(path) as tif:
            assert [int(e) for e in tif.pages[0].extrasamples] == [2]  # unassociated alpha
    assert [p.name for p in tmp_path.iterdir()] == ["w.tiff"]  # no temporary file left


def test_write_image_png_for_float_source_and_refuses_other_suffixes(tmp_path):
    from kmsr_ops.errors import KmsrInputError

    samples = RNG.integers(0, 65536, (3, 4, 3), dtype=np.uint16)
    write_image(tmp_path / "a.png", samples, bit_depth=32)  # a float source: PNG holds 16 bits
    import imagecodecs

    np.testing.assert_array_equal(imagecodecs.png_decode((tmp_path / "a.png").read_bytes()), samples)
    with pytest.raises(KmsrInputError, match="b.jpg"):
        write_image(tmp_path / "b.jpg", samples, bit_depth=16)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


# --------------------------------------------------------------------------- HEIC


def _heic(samples, **save):
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif (extra heif) is not installed")
    mode = {(np.dtype(np.uint8), 3): "RGB", (np.dtype(np.uint16), 3): "RGB;16"}[samples.dtype, samples.shape[2]]
    heif = pillow_heif.from_bytes(mode=mode, size=(samples.shape[1], samples.shape[0]), data=samples.tobytes())
    buf = io.BytesIO()
    heif.save(buf, quality=-1, **save)
    return buf.getvalue()


def _pillow_heif_decode(data):
    import pillow_heif

    return np.asarray(pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False))


def test_heic_round_trip_matches_pillow_heif(tmp_path):
    y, x = np.mgrid[0:24, 0:32]
    samples = np.dstack([x * 8, y * 10, (x + y) * 4]).astype(np.uint8)
    path = tmp_path / "a.heic"
    path.write_bytes(_heic(samples))
    image = read_image(path)
    expected = _pillow_heif_decode(path.read_bytes())
    assert (image.bit_depth, image.channels, image.pixels.shape) == (8, "RGB", (24, 32, 3))
    np.testing.assert_array_equal(image.pixels, unit(expected, 255))
    assert np.abs(image.pixels - unit(samples, 255)).max() < 0.1  # and it is the picture written


def test_10bit_heic_is_16bit_with_white_at_one(tmp_path):
    samples = np.full((16, 16, 3), 65535, dtype=np.uint16)
    samples[:8] = 32768
    data = _heic(samples)
    image = read_image_bytes(data, "w.heic")
    assert image.bit_depth == 16
    ten_bit = _pillow_heif_decode(data) >> 6  # pillow-heif puts the 10 bits high in uint16
    np.testing.assert_allclose(image.pixels, ten_bit / 1023.0, atol=0.5 / 65535)
    assert np.abs(image.pixels[12:] - 1.0).max() < 4 / 1023


def test_heic_orientation_is_applied_once(tmp_path):
    samples = np.zeros((40, 64, 3), dtype=np.uint8)
    samples[:12, :12] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # pillow-heif stores it as the HEIF rotation, which libheif applies
    pixels = read_image_bytes(_heic(samples, exif=exif.tobytes()), "o.heic").pixels
    assert pixels.shape == (64, 40, 3)
    assert pixels[:12, -12:].mean() > 0.9 and pixels[:12, :12].mean() < 0.1  # top-left went top-right


# --------------------------------------------------------------------------- camera RAW


def _dng(value=20000, height=32, width=48, orientation=1):
    """A flat grey Bayer (RGGB) DNG: identity colour matrix, neutral white balance, no black level."""
    identity = [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]
    tags = [
        (33421, 3, 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, 1, 4, (0, 1, 1, 2), True),  # CFAPattern RGGB
        (50706, 1, 4, (1, 4, 0, 0), True),  # DNGVersion
        (50708, 2, 0, "kmsr test camera", True),  # UniqueCameraModel
        (50721, 10, 9, tuple(v for pair in identity for v in pair), True),  # ColorMatrix1
        (50778, 3, 1, 21, True),  # CalibrationIlluminant1 D65
        (50728, 5, 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
        (50717, 3, 1, 65535, True),  # WhiteLevel
        (50714, 3, 1, 0, True),  # BlackLevel
        (274, 3, 1, orientation, True),
    ]
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.full((height, width), value, dtype=np.uint16), photometric=32803, subfiletype=0,
                     extratags=tags, metadata=None)
    return buf.getvalue()


def test_dng_demosaiced_16bit_srgb_without_auto_brightening(tmp_path):
    pytest.importorskip("rawpy", reason="rawpy (extra raw) is not installed")
    path = tmp_path / "flat.DNG"
    path.write_bytes(_dng(20000))
    image = read_image(path)
    assert (image.bit_depth, image.channels, image.pixels.shape) == (16, "RGB", (32, 48, 3))
    linear = 20000 / 65535
    srgb = 1.055 * linear ** (1 / 2.4) - 0.055  # the sRGB curve; auto-brightening would push it up
    inner = image.pixels[4:-4, 4:-4]
    assert np.abs(inner - srgb).max() < 3 / 65535
    turned = read_image_bytes(_dng(20000, orientation=6), "turned.nef")
    assert turned.pixels.shape == (48, 32, 3)


def test_raw_without_the_extra_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rawpy", None)  # import rawpy now raises ImportError
    path = tmp_path / "shot.cr2"
    path.write_bytes(_dng())
    with pytest.raises(ImageReadError, match=r"shot\.cr2.*pip install 'kmsr\[raw\]'"):
        read_image(path)
    out = tmp_path / "out.png"
    code, errors, err = sr_errors(capsys, path, "-o", out)
    assert code == 1 and len(errors) == 1, err
    assert str(path) in errors[0] and "pip install 'kmsr[raw]'" in errors[0], err
    assert not out.exists()


_FAKE_HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(range(200))


def test_heic_without_pillow_heif_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    path = tmp_path / "phone.heic"
    path.write_bytes(_FAKE_HEIC)
    out = tmp_path / "out.png"
    code, errors, err = sr_errors(capsys, path, "-o", out)
    assert code == 1 and len(errors) == 1, err
    assert str(path) in errors[0] and "pip install 'kmsr[heif]'" in errors[0], err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["heic", "tif"])
def test_corrupt_heic_and_tiff_through_the_cli(tmp_path, capsys, kind):
    if kind == "heic":
        pytest.importorskip("pillow_heif", reason="pillow-heif (extra heif) is not installed")
        data = _FAKE_HEIC
    else:
        buf = io.BytesIO()
        tifffile.imwrite(buf, RNG.integers(0, 65536, (32, 32, 3), dtype=np.uint16), photometric="rgb")
        data = buf.getvalue()[: len(buf.getvalue()) // 2]
    path = tmp_path / f"broken.{kind}"
    path.write_bytes(data)
    out = tmp_path / "out.tif"
    code, errors, err = sr_errors(capsys, path, "-o", out)
    assert code == 1 and len(errors) == 1, err
    assert str(path) in errors[0] and ("corrupt" in errors[0] or "truncated" in errors[0]), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


# --------------------------------------------------------------------------- kmsr sr and discovery


def test_sr_tiff_in_tiff_out_keeps_16_bits(tmp_path, capsys):
    import imagecodecs

    y, x = np.mgrid[0:16, 0:16]
    samples = np.dstack([x * 4000 + 7, y * 4000 + 3, (x + y) * 2000 + 1]).astype(np.uint16)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, samples, photometric="rgb")
    code, errors, err = sr_errors(capsys, src, "-o", tmp_path / "out.tif")
    assert code == 0 and not errors, err
    code, errors, err = sr_errors(capsys, src, "-o", tmp_path / "out.png")
    assert code == 0 and not errors, err
    got = tifffile.imread(tmp_path / "out.tif")
    assert got.dtype == np.uint16 and got.shape == (32, 32, 3)
    assert np.any(got % 257 != 0)  # not 8-bit values stretched to 16 bits
    np.testing.assert_array_equal(got, imagecodecs.png_decode((tmp_path / "out.png").read_bytes()))


def test_sr_float_tiff_gives_float_tiff(tmp_path, capsys):
    src = tmp_path / "f.tif"
    tifffile.imwrite(src, RNG.random((12, 12)).astype(np.float32))
    code, errors, err = sr_errors(capsys, src, "-o", tmp_path / "big.tiff")
    assert code == 0 and not errors, err
    got = tifffile.imread(tmp_path / "big.tiff")
    assert got.dtype == np.float32 and got.shape == (24, 24)


def test_camera_suffixes_are_discovered(tmp_path):
    names = ["a.heic", "b.HEIF", "c.dng", "d.CR2", "e.cr3", "f.nef", "g.arw", "h.orf", "i.rw2", "j.raf", "k.TIF"]
    for n in names + ["notes.txt", "l.xmp"]:
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in images_in(tmp_path)] == sorted(names)
