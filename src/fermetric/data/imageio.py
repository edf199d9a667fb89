"""Decode image files, bytes, arrays and PIL images into uint8 grey or RGB arrays.

Every image that enters fermetric goes through :func:`decode_image_bytes` (files through
:func:`read_image`, in-memory images through :func:`to_array`), so datasets, prediction and
retrieval all see the same pixels. Design decisions (each with its default):

- **Decoder**: PIL. Orientation follows the EXIF ``Orientation`` tag
  (``ImageOps.exif_transpose``); a broken EXIF block is ignored rather than fatal.
- **Grey** is PIL's ``L`` conversion (ITU-R 601 luma: ``0.299 R + 0.587 G + 0.114 B``), also
  for arrays handed to :func:`to_array`, so a photo gives the same grey pixels however it
  arrives.
- **16-bit** images (``I;16`` PNG/TIFF) are scaled with ``round(v / 257)`` so that 65535 -> 255;
  PIL's own ``convert("L")`` clips instead, which turns most 16-bit photos white. 32-bit integer
  and float images are scaled the same way when they hold 16-bit / [0, 1] data, else min-max.
- **Transparency** (RGBA, LA, palette with a transparent index) is composited on **white**, so
  a cut-out face on a transparent background does not become a face on black.
- **CMYK / YCbCr / palette / 1-bit** are converted by PIL (``convert("RGB")``/``("L")``).
- **Multi-frame** files (GIF, multi-page TIFF): the first frame.
- **Size**: an image larger than ``max_side`` (default 4096) on its longer side is downscaled,
  preserving aspect ratio. JPEGs are first decoded at a reduced DCT scale (``Image.draft``:
  1/2, 1/4 or 1/8) so a 12000x12000 photo never exists at full size in memory; other formats
  are decoded fully and then reduced. PIL's decompression-bomb *warning* (more than
  ``Image.MAX_IMAGE_PIXELS`` pixels) therefore becomes this controlled downscaling; its *error*
  (more than twice that, a genuinely absurd size) becomes an :class:`ImageError`.
- **Fast path**: a plain 8-bit single-channel JPEG or PNG without EXIF or transparency (all of
  FER2013, FER+, CK+, JAFFE) is decoded by OpenCV, about 3x faster than PIL for 48x48 files
  and outside the GIL. Both libraries decode such files with libjpeg-turbo / libpng to the same
  pixels (a real-data test checks bit equality); anything else, and any file OpenCV cannot
  decode completely, takes the PIL path, so behaviour (errors included) is PIL's.
- **Errors**: anything that cannot be decoded raises :class:`ImageError` with the one-line
  message ``"<source>: <reason>"``; no other exception escapes (a fuzz test checks this).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
import warnings
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

try:  # OpenCV is a dependency; the fast path is simply skipped if it cannot be imported
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

Mode = Literal["grey", "rgb"]
MODES = ("grey", "rgb")
DEFAULT_MAX_SIDE = 4096

# Image.open runs PIL's decompression-bomb check, which warns through the global `warnings`
# filters. `warnings.catch_warnings` is not thread-safe, and datasets are decoded from a thread
# pool, so the (fast, header-only) open step is serialised; pixel decoding runs in parallel.
_OPEN_LOCK = threading.Lock()


class ImageWarning(UserWarning):
    """An image was read, but not all of it (e.g. only the first frame of an animation)."""


def _fail(source: str, reason: str) -> ImageError:
    reason = " ".join(str(reason).split())  # one line, whatever PIL said
    return ImageError(f"{source}: {reason}")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def non_regular_kind(path: str | os.PathLike) -> str | None:
    """``"FIFO"``, ``"socket"``, ``"character device"`` or ``"block device"`` for a path (symlinks
    followed) that is none of file, directory or missing; ``None`` otherwise. Raises OSError for a
    symlink loop (``ELOOP``) like ``os.stat``."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    for test, kind in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return kind
    return None


def read_image(path: str | os.PathLike, mode: Mode = "grey", max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Read an image file as uint8 ``[H, W]`` (``mode="grey"``) or ``[H, W, 3]`` (``"rgb"``).

    Raises:
        ImageError: ``"<path>: <reason>"`` for a missing file, a directory, an empty, truncated
            or non-image file, or an absurdly large image.
    """
    _check_mode(mode)
    path = os.fspath(path)
    try:
        kind = non_regular_kind(path)
        if kind is not None:  # opening a FIFO blocks until a writer comes; a device never ends
            raise _fail(path, f"is a {kind}, not a regular file")
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise _fail(path, "is a directory, expected an image file") from None
    except FileNotFoundError:
        raise _fail(path, "symlink loop or dangling symlink" if os.path.islink(path) else "no such file") from None
    except PermissionError:
        reason = "is a directory, expected an image file" if os.path.isdir(path) else "permission denied"
        raise _fail(path, reason) from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _fail(path, "symlink loop") from None
        raise _fail(path, f"cannot read file ({err.strerror or err})") from None
    return decode_image_bytes(data, mode=mode, max_side=max_side, source=str(path))


def decode_image_bytes(
    data: bytes,
    mode: Mode = "grey",
    max_side: int = DEFAULT_MAX_SIDE,
    source: str = "<bytes>",
) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, TIFF, BMP, GIF, WebP...) held in memory.

    ``source`` names the image in error messages (a path, ``csv:12``...).
    """
    _check_mode(mode)
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    if not data:
        raise _fail(source, "empty file (0 bytes)")
    fast = _decode_plain_grey(data, max_side)
    if fast is not None:
        return fast if mode == "grey" else np.repeat(fast[:, :, None], 3, axis=2)
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise _fail(source, "not an image file (unknown or damaged format)") from None
    except Image.DecompressionBombError:
        raise _fail(
            source,
            "image is absurdly large (over twice PIL.Image.MAX_IMAGE_PIXELS); raise that limit if the file is trusted",
        ) from None
    except Exception as err:  # PIL raises many types on malformed headers
        raise _fail(source, f"not a readable image ({type(err).__name__}: {err})") from None
    with image:
        try:
            frames = getattr(image, "n_frames", 1)  # counting seeks through every frame's header
        except Exception as err:  # a damaged later TIFF page (PIL: TypeError "Missing dimensions"...)
            raise _fail(source, f"truncated or corrupt image data ({type(err).__name__}: {err})") from None
        if frames > 1:  # animated GIF/WebP/APNG, multi-page TIFF: say what is analysed
            warnings.warn(
                f"{source}: holds {frames} frames (animated or multi-page); only the first is read",
                ImageWarning,
                stacklevel=2,
            )
        try:
            return _to_uint8(_load_reduced(image, max_side), mode, max_side)
        except ImageError as err:  # our own reasons (unsupported mode...): name the source
            raise _fail(source, str(err)) from None
        except MemoryError:
            raise _fail(source, f"not enough memory to decode a {image.size[0]}x{image.size[1]} image") from None
        except Exception as err:
            raise _fail(source, f"truncated or corrupt image data ({type(err).__name__}: {err})") from None


_ORIENTATION = 0x0112  # EXIF Orientation tag
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


def _jpeg_frame(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, components, bits) from a JPEG's start-of-frame segment, or None."""
    pos = 2
    while pos + 10 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            bits = data[pos + 4]
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return width, height, data[pos + 9], bits
        if marker == 0xDA or length < 2:  # start of scan before any frame header: malformed
            return None
        pos += 2 + length
    return None


def _decode_plain_grey(data: bytes, max_side: int) -> np.ndarray | None:
    """OpenCV decode of a complete 8-bit grey JPEG/PNG without EXIF or transparency, else None.

    The byte checks keep every case with PIL-specific handling on the PIL path: EXIF
    orientation, transparency (tRNS), bit depths other than 8, truncated files (a JPEG must
    end with its EOI marker, a PNG with its IEND chunk; OpenCV would return a partial image),
    and any image larger than ``max_side`` or PIL's decompression-bomb limit (the header's size
    is read first, so OpenCV never decodes a large image at full size).
    """
    if cv2 is None or b"Exif" in data or b"eXIf" in data:
        return None
    if data[:3] == b"\xff\xd8\xff":
        frame = _jpeg_frame(data)
        # one 8-bit component (grey), complete (ends with EOI): colour JPEGs go to PIL undecoded
        if frame is None or frame[2:] != (1, 8) or data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
            return None
        size = frame[:2]
    elif data[:8] == _PNG_SIGNATURE:
        # IHDR: bit depth 8, colour type 0 (grey), no tRNS chunk, complete file
        if len(data) < 33 or data[24] != 8 or data[25] != 0 or b"tRNS" in data or not data.endswith(_PNG_END):
            return None
        size = (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
    else:
        return None
    limit = Image.MAX_IMAGE_PIXELS
    if size is None or min(size) < 1 or max(size) > max_side or (limit is not None and size[0] * size[1] > limit):
        return None
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if array is None or array.ndim != 2 or array.dtype != np.uint8 or array.shape != (size[1], size[0]):
        return None
    return array


def _reduced_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` shrunk to fit ``max_side`` (aspect ratio kept, at least 1 px)."""
    w, h = size
    scale = max_side / max(w, h)
    if scale >= 1:
        return w, h
    return max(1, round(w * scale)), max(1, round(h * scale))


def _load_reduced(image: Image.Image, max_side: int) -> Image.Image:
    """Apply the JPEG DCT-domain reduction (``draft``) before decoding, then decode and orient.

    ``draft`` picks the largest 1/2, 1/4, 1/8 scale whose result is still at least the requested
    size, so the decoded image is less than twice ``max_side`` on its longer side.
    """
    if image.format == "JPEG" and max(image.size) > max_side:
        image.draft(None, _reduced_size(image.size, max_side))
    image.load()
    if image.size[0] < 1 or image.size[1] < 1:
        raise ImageError(f"image has no pixels ({image.size[0]}x{image.size[1]})")
    try:
        if image.getexif().get(_ORIENTATION, 1) in (None, 1):
            return image  # upright: exif_transpose would only copy it (a 12000 px photo's worth of memory)
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not make a readable image unreadable
        return image


def _scale_wide(values: np.ndarray, kind: str) -> np.ndarray:
    """uint8 from 16-bit, 32-bit integer or float pixel values, scaled rather than clipped."""
    values = values.astype(np.float64, copy=False)
    if values.size == 0:
        return values.astype(np.uint8)
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if kind == "float" and lo >= 0.0 and hi <= 1.0:
        scaled = values * 255.0
    elif kind == "int" and lo >= 0.0 and hi <= 255.0:
        scaled = values  # an 8-bit image stored as 32-bit integers
    elif kind in ("int16", "int") and lo >= 0.0 and hi <= 65535.0:
        scaled = values / 257.0  # 65535 -> 255 exactly
    else:  # anything else: stretch its own range
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    return np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """RGBA / LA / transparent palette images composited on white."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_uint8(image: Image.Image, mode: Mode, max_side: int) -> np.ndarray:
    pil_mode = image.mode
    if pil_mode.startswith("I;16") or pil_mode in ("I", "F"):
        # wide grey: scale to 8 bit ourselves (PIL's convert clips), then treat as L
        kind = "int16" if pil_mode.startswith("I;16") else ("float" if pil_mode == "F" else "int")
        if pil_mode.startswith("I;16"):
            image = image.convert("I")  # native-endian int32 view of any I;16 variant
        image = Image.fromarray(_scale_wide(np.asarray(image), kind))  # 2-D uint8 -> "L"
    elif (
        pil_mode in ("RGBA", "LA", "La", "RGBa", "PA")
        or (pil_mode == "P" and "transparency" in image.info)
        or (pil_mode in ("L", "RGB") and "transparency" in image.info)
    ):
        image = _flatten_alpha(image)
    elif pil_mode not in ("L", "RGB"):
        try:
            image = image.convert("RGB")  # CMYK, YCbCr, P, 1, LAB, HSV...
        except ValueError:
            raise ImageError(f"unsupported colour mode {pil_mode!r}") from None
    target = "L" if mode == "grey" else "RGB"
    if image.mode != target:
        image = image.convert(target)
    if max(image.size) > max_side:
        image = image.resize(_reduced_size(image.size, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.array(image, dtype=np.uint8)  # a writable copy, detached from PIL


def to_array(
    image, mode: Mode = "grey", channel_order: Literal["rgb", "bgr"] = "rgb", max_side: int = DEFAULT_MAX_SIDE
) -> np.ndarray:
    """Anything a user may hand the prediction API -> uint8 ``[H,W]`` grey or ``[H,W,3]`` RGB.

    Accepts a path (``str``/``PathLike``), encoded ``bytes``, a ``PIL.Image`` or a numpy array
    ``[H,W]``, ``[H,W,1]``, ``[H,W,3]`` or ``[H,W,4]``. ``channel_order="bgr"`` says a colour
    array comes from OpenCV. Arrays: uint8 is used as is, uint16 is scaled by 1/257, floats in
    [0, 1] by 255 (others are min-max stretched); a 4th channel is alpha, composited on white.
    """
    _check_mode(mode)
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, mode=mode, max_side=max_side)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image_bytes(bytes(image), mode=mode, max_side=max_side)
    if isinstance(image, Image.Image):
        try:
            image.load()
            try:
                image = ImageOps.exif_transpose(image)
            except Exception:
                pass
            return _to_uint8(image, mode, max_side)
        except ImageError as err:
            raise ImageError(f"<PIL image>: {err}") from None
        except Exception as err:
            raise _fail("<PIL image>", f"cannot convert ({type(err).__name__}: {err})") from None
    if hasattr(image, "__array__") and not isinstance(image, np.ndarray):
        image = np.asarray(image)  # e.g. a CPU torch tensor
    if not isinstance(image, np.ndarray):
        raise ImageError(f"<{type(image).__name__}>: expected a path, bytes, a PIL image or a numpy array")
    return _array_to_uint8(image, mode, channel_order, max_side)


def _array_to_uint8(array: np.ndarray, mode: Mode, channel_order: str, max_side: int) -> np.ndarray:
    shape = array.shape
    if array.ndim == 3 and shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) or 0 in array.shape:
        raise ImageError(f"<array {shape}>: expected [H,W], [H,W,1], [H,W,3] or [H,W,4] with H,W >= 1")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = _scale_wide(array, "int16")
    elif np.issubdtype(array.dtype, np.floating):
        array = _scale_wide(array, "float")
    elif array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.integer):
            raise ImageError(f"<array {array.dtype}>: expected an integer, float or bool pixel type")
        array = _scale_wide(array, "int")
    if array.ndim == 3 and channel_order == "bgr":
        order = [2, 1, 0, 3][: array.shape[2]]
        array = array[:, :, order]
    image = Image.fromarray(np.ascontiguousarray(array))  # uint8 [H,W] / [H,W,3] / [H,W,4] -> L / RGB / RGBA
    return _to_uint8(image, mode, max_side)
