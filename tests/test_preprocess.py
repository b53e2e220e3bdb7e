from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import png_bytes
from worker.errors import ImageError
from worker.preprocess import normalize, preprocess

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 4_000_000}


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_a_28x28_png_comes_back_pixel_for_pixel(fashion_mnist) -> None:
    pixels = fashion_mnist.test_images[0]
    assert np.array_equal(preprocess(png_bytes(pixels), **LIMITS), pixels)


def test_rgb_jpeg_is_converted_to_28x28_grayscale() -> None:
    image = Image.new("RGB", (300, 200), (200, 30, 30))
    result = preprocess(encode(image, "JPEG", quality=90), **LIMITS)
    assert result.shape == (28, 28) and result.dtype == np.uint8


def test_normalize_scales_to_unit_range_with_a_channel_axis() -> None:
    batch = np.array([[[0, 255]]], dtype=np.uint8)
    result = normalize(batch)
    assert result.shape == (1, 1, 2, 1) and result.dtype == np.float32
    assert result.min() == 0.0 and result.max() == 1.0


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 definitely not an image", "unsupported_format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt"),
    ],
)
def test_bad_bytes_get_a_stable_error_code(data: bytes, code: str) -> None:
    with pytest.raises(ImageError) as excinfo:
        preprocess(data, **LIMITS)
    assert excinfo.value.code == code
    assert excinfo.value.message


def test_truncated_png_is_corrupt() -> None:
    data = encode(Image.effect_noise((200, 200), 50).convert("L"), "PNG")
    with pytest.raises(ImageError) as excinfo:
        preprocess(data[: len(data) // 2], **LIMITS)
    assert excinfo.value.code == "corrupt"


def test_upload_over_the_byte_limit_is_too_large() -> None:
    data = encode(Image.new("L", (10, 10)), "PNG")
    with pytest.raises(ImageError) as excinfo:
        preprocess(data, max_bytes=len(data) - 1, max_pixels=10_000)
    assert excinfo.value.code == "too_large"


@pytest.mark.parametrize("side", [5_000, 20_000])
def test_pixel_bomb_is_refused_before_decoding(side: int) -> None:
    # One colour compresses to almost nothing; 20000² also trips Pillow's own bomb check.
    data = encode(Image.new("1", (side, side)), "PNG")
    assert len(data) < 1_000_000
    with pytest.raises(ImageError) as excinfo:
        preprocess(data, max_bytes=10_000_000, max_pixels=4_000_000)
    assert excinfo.value.code == "too_many_pixels"


def test_format_outside_the_allow_list_is_refused() -> None:
    data = encode(Image.new("RGB", (32, 32)), "ICO")
    with pytest.raises(ImageError) as excinfo:
        preprocess(data, **LIMITS)
    assert excinfo.value.code == "unsupported_format"
    assert "ICO" in excinfo.value.message
