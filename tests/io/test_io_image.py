import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from kinemate.errors import InputError, UsageError
from kinemate.io import read_image, write_image


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_rgb_png_roundtrip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    p = write_image(tmp_path / "a.png", arr)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (17, 23, 3)
    np.testing.assert_array_equal(out, arr)
    assert [f.name for f in tmp_path.iterdir()] == ["a.png"]  # no temp file left


@pytest.mark.parametrize(
    "mode,value,expected",
    [
        ("L", 100, (100, 100, 100)),
        ("1", 1, (255, 255, 255)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBA", (10, 20, 30, 0), (255, 255, 255)),  # transparent -> white
        ("LA", (50, 255), (50, 50, 50)),
    ],
)
def test_any_mode_to_rgb(tmp_path, mode, value, expected):
    suffix = ".tif" if mode == "CMYK" else ".png"
    p = _save(Image.new(mode, (5, 4), value), tmp_path / f"x{suffix}")
    out = read_image(p)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert tuple(int(v) for v in out[2, 3]) == expected


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.putpixel((1, 1), 1)
    p = tmp_path / "p.png"
    im.save(p, transparency=0)
    out = read_image(p)
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[1, 1]) == (0, 255, 0)


def test_16bit_is_scaled_not_clipped(tmp_path):
    arr = np.full((3, 3), 40000, dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    out = read_image(p)
    assert int(out[0, 0, 0]) == 40000 >> 8


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif, quality=100)
    out = read_image(p)
    assert out.shape == (20, 10, 3)
    assert out[:10].mean() > 200 and out[10:].mean() < 50  # left half is now on top


def _png_header_only(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def test_huge_header_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(100_000, 100_000))
    with pytest.raises(InputError, match="decompression bomb.*downscale"):
        read_image(p)
    # Below Pillow's own bomb limit but above kinemate's: refused from the header as well.
    p.write_bytes(_png_header_only(9000, 9000))
    with pytest.raises(InputError, match="9000x9000.*megapixels.*downscale"):
        read_image(p)


def test_max_pixels_configurable(tmp_path):
    p = write_image(tmp_path / "a.png", np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(InputError, match="limit"):
        read_image(p, max_pixels=5000)
    assert read_image(p, max_pixels=10_000).shape == (100, 100, 3)


def test_missing_dir_not_image_truncated(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="folder"):
        read_image(tmp_path)
    (tmp_path / "t.png").write_text("hello")
    with pytest.raises(InputError, match="not an image"):
        read_image(tmp_path / "t.png")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_image(tmp_path / "cut.png")


def test_write_image_bad_suffix_and_failure_leaves_nothing(tmp_path):
    with pytest.raises(UsageError, match="suffix"):
        write_image(tmp_path / "a.xyz", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.float32))
    assert list(tmp_path.iterdir()) == []
