"""Fuzzing the decoder: any bytes give a uint8 image or an ImageError, never anything else."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fermetric.data.imageio import decode_image_bytes
from fermetric.errors import ImageError


def _samples() -> list[bytes]:
    rng = np.random.default_rng(0)
    grey = Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8))
    rgb = Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
    out = []
    for image, fmt, kwargs in [
        (grey, "JPEG", {}),
        (rgb, "JPEG", {"progressive": True}),
        (grey, "PNG", {}),
        (rgb.convert("RGBA"), "PNG", {}),
        (rgb.convert("P"), "GIF", {}),
        (grey, "BMP", {}),
        (rgb, "TIFF", {}),
        (grey, "WEBP", {"lossless": True}),
    ]:
        buf = io.BytesIO()
        image.save(buf, fmt, **kwargs)
        out.append(buf.getvalue())
    return out


SAMPLES = _samples()
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(data: bytes) -> None:
    try:
        out = decode_image_bytes(data, source="fuzz")
    except ImageError as err:
        message = str(err)
        assert message.startswith("fuzz: ") and "\n" not in message
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 2 and min(out.shape) >= 1
    assert max(out.shape) <= 4096


@pytest.mark.filterwarnings("ignore::UserWarning")
@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    check(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL's own notes on damaged TIFF tags
@FUZZ
@given(
    st.sampled_from(range(len(SAMPLES))),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    st.floats(0.0, 1.0),
)
def test_mutated_real_images(which, flips, keep):
    data = bytearray(SAMPLES[which])
    for position, value in flips:
        data[position % len(data)] = value
    check(bytes(data[: max(1, int(len(data) * keep))]) if keep < 1.0 else bytes(data))


def test_unmutated_samples_decode():
    for data in SAMPLES:
        assert decode_image_bytes(data).ndim == 2
