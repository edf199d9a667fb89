"""Image decoding: colour modes, bit depths, orientation, sizes, and one-line errors."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from fermetric.data import imageio
from fermetric.data.imageio import decode_image_bytes, read_image, to_array
from fermetric.errors import ImageError


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, computed independently of PIL."""
    rgb = rgb.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


@pytest.fixture
def quadrants() -> np.ndarray:
    """A 40x60 grey image with four distinct flat quadrants (orientation is visible)."""
    a = np.zeros((40, 60), np.uint8)
    a[:20, :30], a[:20, 30:], a[20:, :30], a[20:, 30:] = 30, 90, 160, 230
    return a


# -- plain decoding -----------------------------------------------------------------------------


def test_png_grey_is_lossless_and_rgb_mode_replicates(rng, tmp_path):
    a = rng.integers(0, 256, (17, 23), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(a).save(path)
    grey = read_image(path)
    assert grey.dtype == np.uint8 and grey.shape == (17, 23)
    np.testing.assert_array_equal(grey, a)
    rgb = read_image(path, mode="rgb")
    assert rgb.shape == (17, 23, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], a)


def test_rgb_to_grey_is_601_luma(rng):
    rgb = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    grey = decode_image_bytes(encode(Image.fromarray(rgb), "PNG"))
    assert np.abs(grey.astype(float) - luma(rgb)).max() <= 1.0
    np.testing.assert_array_equal(decode_image_bytes(encode(Image.fromarray(rgb), "PNG"), mode="rgb"), rgb)


def test_grey_jpeg_fast_path_matches_pil(rng):
    smooth = (np.add.outer(np.arange(48), np.arange(48)) * 2 + rng.integers(0, 20, (48, 48))).astype(np.uint8)
    for fmt, kwargs in (("JPEG", {"quality": 90}), ("JPEG", {"progressive": True}), ("PNG", {})):
        data = encode(Image.fromarray(smooth), fmt, **kwargs)
        assert imageio._decode_plain_grey(data, 4096) is not None  # the fast path is taken...
        expected = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
        np.testing.assert_array_equal(decode_image_bytes(data), expected)  # ...with PIL's pixels


def test_one_pixel_images():
    for fmt in ("PNG", "JPEG", "BMP", "GIF", "TIFF"):
        out = decode_image_bytes(encode(Image.new("L", (1, 1), 77), fmt))
        assert out.shape == (1, 1) and abs(int(out[0, 0]) - 77) <= 2, fmt


# -- bit depths and colour modes --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_is_scaled_not_clipped(fmt):
    values = np.array([[0, 257, 257 * 100, 32768, 65535, 1000]], dtype=np.uint16)
    out = decode_image_bytes(encode(Image.fromarray(values), fmt))
    np.testing.assert_array_equal(out, [[0, 1, 100, 128, 255, 4]])  # round(v / 257)
    # PIL's own conversion would clip everything above 255 to white
    assert np.asarray(Image.fromarray(values).convert("L")).tolist() != out.tolist()


def test_float_tiff_in_unit_range_is_scaled():
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(decode_image_bytes(encode(Image.fromarray(values), "TIFF")), [[0, 128, 255]])


def test_cmyk_jpeg_reads_as_rgb():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:8] = (200, 40, 40)
    rgb[8:] = (30, 180, 90)
    data = encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=98)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image_bytes(data, mode="rgb")
    assert out.shape == (16, 16, 3)
    assert np.abs(out[2:6, 2:14].astype(int) - rgb[2:6, 2:14]).max() <= 8
    assert np.abs(out[10:14, 2:14].astype(int) - rgb[10:14, 2:14]).max() <= 8


def test_rgba_is_composited_on_white():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # fully transparent -> white
    rgba[0, 1] = (0, 0, 0, 255)  # opaque black
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    rgba[1, :] = (255, 0, 0, 255)  # opaque red
    out = decode_image_bytes(encode(Image.fromarray(rgba), "PNG"), mode="rgb")
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0])
    assert abs(int(out[0, 2, 0]) - 127) <= 1
    np.testing.assert_array_equal(out[1, 0], [255, 0, 0])
    grey = decode_image_bytes(encode(Image.fromarray(rgba), "PNG"))
    assert grey[0, 0] == 255 and grey[0, 1] == 0


def test_la_and_transparent_palette_are_composited_on_white():
    la = Image.merge("LA", [Image.new("L", (2, 1), 10), Image.frombytes("L", (2, 1), bytes([0, 255]))])
    np.testing.assert_array_equal(decode_image_bytes(encode(la, "PNG")), [[255, 10]])
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    data = encode(palette, "PNG", transparency=0)
    np.testing.assert_array_equal(decode_image_bytes(data, mode="rgb"), [[[255, 255, 255], [200, 100, 50]]])


def test_palette_and_1bit_images():
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 0), 1)
    np.testing.assert_array_equal(
        decode_image_bytes(encode(palette, "GIF"), mode="rgb"), [[[10, 20, 30], [200, 100, 50]]]
    )
    bits = Image.frombytes("1", (8, 1), bytes([0b10100000]))
    np.testing.assert_array_equal(decode_image_bytes(encode(bits, "PNG")), [[255, 0, 255, 0, 0, 0, 0, 0]])


# -- EXIF orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orientation, expected",
    [
        (1, lambda a: a),
        (2, lambda a: a[:, ::-1]),
        (3, lambda a: a[::-1, ::-1]),
        (6, lambda a: np.rot90(a, -1)),  # stored rotated: display turns it 90 degrees clockwise
        (8, lambda a: np.rot90(a, 1)),
    ],
)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(quadrants, orientation, expected, fmt):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(quadrants), fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    out = decode_image_bytes(data)
    want = expected(quadrants)
    assert out.shape == want.shape
    if fmt == "PNG":
        np.testing.assert_array_equal(out, want)
    else:  # JPEG: each flat quadrant keeps its grey level (away from the ringing at edges)
        h, w = want.shape
        for rows in (slice(3, h // 2 - 3), slice(h // 2 + 3, h - 3)):
            for cols in (slice(3, w // 2 - 3), slice(w // 2 + 3, w - 3)):
                assert abs(out[rows, cols].mean() - want[rows, cols].mean()) <= 3


# -- sizes ------------------------------------------------------------------------------------


def test_large_image_is_downscaled_to_max_side():
    wide = Image.fromarray(np.tile(np.arange(250, dtype=np.uint8), (10, 20)))  # 5000 x 10
    out = decode_image_bytes(encode(wide, "PNG"), max_side=1000)
    assert out.shape == (2, 1000)


def test_jpeg_is_reduced_by_draft_before_decoding():
    data = encode(Image.new("L", (1200, 1000), 128), "JPEG")
    with Image.open(io.BytesIO(data)) as im:
        reduced = imageio._load_reduced(im, max_side=300)
        assert reduced.size == (300, 250)  # decoded at 1/4 scale, never at full size
    assert decode_image_bytes(data, max_side=300).shape == (250, 300)


def test_decompression_bomb_warning_becomes_downscaling(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    data = encode(Image.new("L", (1200, 1000), 90), "JPEG")  # 1.2 Mpx: PIL warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the bomb warning must not reach the caller
        out = decode_image_bytes(data, max_side=512)
    assert out.shape == (427, 512) and abs(int(out.mean()) - 90) <= 1


def test_absurd_image_size_is_an_image_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    data = encode(Image.new("L", (2100, 1000)), "PNG")  # 2.1 Mpx: over twice the limit
    with pytest.raises(ImageError, match="absurdly large"):
        decode_image_bytes(data, source="big.png")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (a decompression-bomb shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


def test_absurd_header_with_default_limit():
    with pytest.raises(ImageError) as err:
        decode_image_bytes(png_header_only(100_000, 100_000), source="bomb.png")
    assert str(err.value).startswith("bomb.png: ") and "\n" not in str(err.value)


# -- errors -------------------------------------------------------------------------------------


def assert_one_line_error(path, reason_part: str):
    with pytest.raises(ImageError) as err:
        read_image(path)
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    assert reason_part in message, message


def test_file_errors_are_one_line_image_errors(tmp_path, rng):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert_one_line_error(empty, "empty file")

    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\nsecond line\n")
    assert_one_line_error(text, "not an image")

    assert_one_line_error(tmp_path / "missing.png", "no such file")
    assert_one_line_error(tmp_path, "is a directory")

    photo = encode(Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)), "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(photo[: len(photo) // 2])
    assert_one_line_error(cut, "truncated")

    png = encode(Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)), "PNG")
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png[: len(png) // 2])
    with pytest.raises(ImageError, match=r"cut\.png: "):
        read_image(cut_png)


def test_bad_mode_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError):
        decode_image_bytes(b"x", mode="bgr")


# -- to_array -----------------------------------------------------------------------------------


def test_to_array_numpy_inputs():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(to_array(grey), grey)
    np.testing.assert_array_equal(to_array(grey[:, :, None]), grey)
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 255  # pure blue in OpenCV order
    rgb = to_array(bgr, mode="rgb", channel_order="bgr")
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 255])
    np.testing.assert_array_equal(to_array(bgr, mode="rgb", channel_order="rgb")[0, 0], [255, 0, 0])
    assert to_array(bgr, channel_order="bgr")[0, 0] == round(0.114 * 255)
    np.testing.assert_array_equal(to_array(np.array([[0.0, 1.0]])), [[0, 255]])
    np.testing.assert_array_equal(to_array(np.array([[0, 65535]], dtype=np.uint16)), [[0, 255]])
    np.testing.assert_array_equal(to_array(np.array([[False, True]])), [[0, 255]])
    rgba = np.zeros((1, 1, 4), np.uint8)  # transparent -> white
    assert to_array(rgba)[0, 0] == 255


def test_to_array_other_inputs(tmp_path, quadrants):
    path = tmp_path / "q.png"
    Image.fromarray(quadrants).save(path)
    np.testing.assert_array_equal(to_array(path), quadrants)
    np.testing.assert_array_equal(to_array(str(path)), quadrants)
    np.testing.assert_array_equal(to_array(path.read_bytes()), quadrants)
    np.testing.assert_array_equal(to_array(Image.fromarray(quadrants)), quadrants)
    assert to_array(Image.fromarray(quadrants), mode="rgb").shape == (40, 60, 3)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((0, 4), np.uint8),
        np.zeros((2, 2, 2, 2), np.uint8),
        "no/such/file.png",
        3.5,
    ],
)
def test_to_array_rejects_bad_input(bad):
    with pytest.raises(ImageError):
        to_array(bad)
