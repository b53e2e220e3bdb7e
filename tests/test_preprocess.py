from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.support.factories import png_bytes
from worker.errors import ImageError
from worker.pipeline import reduce
from worker.pipeline.preprocess import decode, flatten, normalize, preprocess

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 4_000_000}


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_a_28x28_png_comes_back_pixel_for_pixel(fashion_mnist) -> None:
    pixels = fashion_mnist.test_images[0]
    assert np.array_equal(preprocess(png_bytes(pixels), **LIMITS), pixels)


def product_photo(*, background: int, item: int, size=(400, 300), box=(40, 50, 140, 250)):
    """A flat-coloured rectangle (the item) off-centre on a uniform background."""
    image = Image.new("RGB", size, (background,) * 3)
    image.paste((item,) * 3, box)
    return image


def test_dark_item_on_light_background_is_negated_trimmed_and_centred() -> None:
    photo = product_photo(background=245, item=30)
    result = preprocess(encode(photo, "PNG"), **LIMITS)
    assert result.shape == (28, 28) and result.dtype == np.uint8
    # The 100×200 item fills the height and is centred; the background is black.
    assert result[:, 0].max() == 0 and result[:, -1].max() == 0
    assert result[14, 14] > 200
    rows = np.flatnonzero(result.max(axis=1) > 100)
    columns = np.flatnonzero(result.max(axis=0) > 100)
    assert rows[0] <= 1 and rows[-1] >= 26
    assert abs((columns[0] + columns[-1]) / 2 - 13.5) <= 1


def test_light_item_on_dark_background_is_not_negated() -> None:
    result = preprocess(encode(product_photo(background=10, item=220), "PNG"), **LIMITS)
    assert result[14, 14] > 200 and result[0, 0] == 0


def test_transparent_background_is_treated_as_white() -> None:
    image = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    image.paste((40, 40, 40, 255), (50, 20, 150, 180))
    result = preprocess(encode(image, "PNG"), **LIMITS)
    assert result[14, 14] > 200 and result[14, 0] == 0


def test_exif_orientation_is_applied() -> None:
    upright = product_photo(background=245, item=30, size=(300, 400), box=(100, 40, 200, 360))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned on its side; display rotated 90° clockwise
    data = encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)
    result = preprocess(data, **LIMITS)
    rows = np.flatnonzero(result.max(axis=1) > 100)
    columns = np.flatnonzero(result.max(axis=0) > 100)
    assert len(rows) > 2 * len(columns), "the tall item must stay tall"


def test_large_jpeg_is_decoded_reduced() -> None:
    data = encode(
        product_photo(background=245, item=30, size=(6000, 4000), box=(1000, 500, 3000, 3500)),
        "JPEG",
        quality=85,
    )
    image = decode(data, **{**LIMITS, "max_pixels": 50_000_000})
    assert max(image.size) <= 6000 // 8 * 2
    assert preprocess(data, max_bytes=10_000_000, max_pixels=50_000_000)[14, 14] > 200


@pytest.mark.parametrize("mode", ["RGBA", "LA", "RGB", "L", "I;16", "P", "1", "F"])
def test_a_large_image_is_reduced_band_by_band_as_pillow_reduces_it_whole(
    mode: str, monkeypatch
) -> None:
    """Reduced a band of rows at a time (so an RGBA or 16-bit 40 Mpx PNG costs one
    decoded image, not two), pixel for pixel what one whole ``reduce`` gives: the
    model's inputs do not change (no ``PREPROCESS_VERSION`` bump)."""
    monkeypatch.setattr(reduce, "BAND_PIXELS", 300_000)  # 7 bands and a part
    rng = np.random.default_rng(1)
    rgba = Image.fromarray(rng.integers(0, 256, (2311, 2090, 4), dtype=np.uint8), "RGBA")
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (2311, 2090), dtype=np.uint16))
    elif mode == "P":
        image = rgba.convert("RGB").convert("P")
        image.info["transparency"] = 0
    else:
        image = rgba.convert(mode)
    assert image.mode == mode
    reduced = reduce.to_working_size(image)
    whole = image.convert({"I;16": "I", "P": "RGBA", "1": "L"}.get(mode, mode)).reduce(2)
    assert (reduced.mode, reduced.size) == (whole.mode, whole.size) == (reduced.mode, (1045, 1156))
    assert np.array_equal(np.asarray(reduced), np.asarray(whole))


@pytest.mark.parametrize("kind", ["PNG", "TIFF"])
def test_a_large_image_decoded_in_a_child_is_what_the_process_would_have_decoded(
    kind: str, monkeypatch
) -> None:
    """Past ``CHILD_PIXELS`` a PNG or TIFF is decoded and reduced by a child process (a
    worker's pool process never holds the 160 MB of a 40 Mpx decode): the same
    pixels, mode and EXIF orientation come back."""
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (4100, 2100, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA")
    exif = image.getexif()
    exif[0x0112] = 6  # shown turned 90° clockwise
    data = encode(image, kind, exif=exif)
    limits = {"max_bytes": 100_000_000, "max_pixels": 50_000_000}

    by_a_child = decode(data, **limits)
    monkeypatch.setattr(reduce, "CHILD_PIXELS", 10**9)
    in_process = decode(data, **limits)

    assert (by_a_child.mode, by_a_child.size) == (in_process.mode, in_process.size)
    assert np.array_equal(np.asarray(by_a_child), np.asarray(in_process))
    upright = flatten(by_a_child)
    assert upright.size == (1025, 525)  # 2100×4100 reduced by 4, turned
    assert np.array_equal(np.asarray(upright), np.asarray(flatten(in_process)))


def test_an_image_the_child_cannot_decode_is_corrupt() -> None:
    header = encode(Image.new("RGB", (5000, 4000)), "PNG")
    with pytest.raises(ImageError) as error:
        decode(header[: len(header) // 2], max_bytes=10**8, max_pixels=5 * 10**7)
    assert error.value.code == "corrupt"


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits() -> None:
    pixels = np.full((100, 100), 60_000, dtype=np.uint16)
    pixels[20:80, 30:70] = 3_000
    result = preprocess(encode(Image.fromarray(pixels), "PNG"), **LIMITS)
    assert result[14, 14] > 200 and result[0, 0] == 0


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
        (encode(Image.new("L", (1, 1)), "PNG"), "too_small"),
        (encode(Image.new("RGB", (64, 64), (200, 10, 10)), "PNG"), "blank"),
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


def test_a_float_image_with_non_finite_pixels_is_classified_not_blank() -> None:
    """One +inf pixel in a float TIFF made the whole range infinite: "blank"."""
    item = np.full((64, 64), 10.0, dtype=np.float32)
    item[16:48, 20:44] = 900.0  # a bright item on a dark ground

    def tiff(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="F").save(buffer, format="TIFF")
        return buffer.getvalue()

    clean = preprocess(tiff(item), **LIMITS)
    spoiled = item.copy()
    spoiled[0, 0], spoiled[0, 1], spoiled[63, 63] = np.inf, -np.inf, np.nan
    assert np.array_equal(preprocess(tiff(spoiled), **LIMITS)[8:20, 8:20], clean[8:20, 8:20])
    with pytest.raises(ImageError) as nothing_finite:
        preprocess(tiff(np.full((64, 64), np.nan, dtype=np.float32)), **LIMITS)
    assert nothing_finite.value.code == "corrupt"
