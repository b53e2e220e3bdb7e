"""Review-page thumbnails: upright, small, and never a full-size decode in the API."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from worker.api.thumbnails import THUMBNAIL_PIXELS, ThumbnailError, thumbnail


def encoded(image: Image.Image, kind: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["JPEG", "PNG"])
def test_a_photo_taken_sideways_is_shown_upright(kind: str) -> None:
    photo = Image.new("RGB", (900, 600), (10, 200, 10))
    exif = photo.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    shown = Image.open(io.BytesIO(thumbnail(encoded(photo, kind, exif=exif), max_pixels=10**8)))
    assert shown.size == (213, THUMBNAIL_PIXELS)


def test_a_40_megapixel_tiff_is_shrunk_in_a_child_process() -> None:
    huge = encoded(
        Image.new("RGB", (6324, 6324), (200, 40, 40)), "TIFF", compression="tiff_deflate"
    )
    shown = Image.open(io.BytesIO(thumbnail(huge, max_pixels=50_000_000)))
    assert shown.size == (THUMBNAIL_PIXELS, THUMBNAIL_PIXELS)


def test_too_many_pixels_or_no_image_is_a_thumbnail_error() -> None:
    with pytest.raises(ThumbnailError, match="too many pixels"):
        thumbnail(encoded(Image.new("L", (3000, 3000)), "PNG"), max_pixels=1_000_000)
    with pytest.raises(ThumbnailError, match="not a readable image"):
        thumbnail(b"GIF89a not really", max_pixels=1_000_000)
