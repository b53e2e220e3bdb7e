"""Review-page thumbnails: upright, small, made once by the worker's bounded decode, and
never in the API process."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from worker.api.thumbnails import ThumbnailError, thumbnail
from worker.errors import ImageError, ObjectMissingError
from worker.pipeline.thumbnail import THUMBNAIL_PIXELS, make
from worker.storage import get_store, thumbnail_key

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 50_000_000}


def encoded(image: Image.Image, kind: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def forty_megapixel_rgba_png() -> bytes:
    """6324×6324, half of it transparent: the kind that cannot be decoded reduced."""
    pixels = np.zeros((6324, 6324, 4), dtype=np.uint8)
    pixels[:, :, 0] = 200
    pixels[:, : 6324 // 2, 3] = 255
    return encoded(Image.fromarray(pixels, "RGBA"), "PNG")


@pytest.mark.parametrize("kind", ["JPEG", "PNG"])
def test_a_photo_taken_sideways_is_shown_upright(kind: str) -> None:
    photo = Image.new("RGB", (900, 600), (10, 200, 10))
    exif = photo.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    shown = Image.open(io.BytesIO(make(encoded(photo, kind, exif=exif), **LIMITS)))
    assert shown.format == "JPEG"
    assert shown.size == (213, THUMBNAIL_PIXELS)


def test_a_40_megapixel_rgba_png_is_shrunk_with_its_transparency_on_white() -> None:
    shown = Image.open(io.BytesIO(make(forty_megapixel_rgba_png(), **LIMITS))).convert("RGB")
    assert shown.size == (THUMBNAIL_PIXELS, THUMBNAIL_PIXELS)
    assert shown.getpixel((10, 160))[0] > 150 and shown.getpixel((10, 160))[1] < 60  # red
    assert min(shown.getpixel((310, 160))) > 240  # transparent: white


def test_what_the_worker_refuses_is_refused_with_its_code() -> None:
    with pytest.raises(ImageError) as too_many:
        make(encoded(Image.new("L", (3000, 3000)), "PNG"), max_bytes=10**7, max_pixels=10**6)
    with pytest.raises(ImageError) as corrupt:
        make(b"GIF89a not really", **LIMITS)
    assert (too_many.value.code, corrupt.value.code) == ("too_many_pixels", "corrupt")


CHILD_PEAK_PROBE = """
import resource
import subprocess
import sys

done = subprocess.run(
    [sys.executable, "-m", "worker.pipeline.thumbnail", "10000000", "50000000"],
    stdin=open(sys.argv[1], "rb"), capture_output=True, check=True,
)
print(done.stdout.startswith(b"\\xff\\xd8"))  # a JPEG
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
"""


@pytest.mark.processes
def test_the_child_that_makes_a_thumbnail_of_a_40_megapixel_png_stays_within_300_mb(
    tmp_path,
) -> None:
    """Decoded whole and converted at full size (the first child), a 6324×6324 RGBA PNG
    peaked at 486 MB; shrunk before converting, 333 MB."""
    path = tmp_path / "huge.png"
    path.write_bytes(forty_megapixel_rgba_png())
    made, peak_mb = subprocess.run(
        [sys.executable, "-c", CHILD_PEAK_PROBE, str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert made == "True"
    assert int(peak_mb) <= 300, f"the child peaked at {peak_mb} MB"


def test_the_review_page_makes_a_thumbnail_once_and_serves_the_stored_one(
    local_settings,
) -> None:
    store = get_store(local_settings)
    photo = encoded(Image.new("RGB", (1200, 800), (10, 200, 10)), "TIFF")
    store.put("uploads/sideways", photo)

    first = thumbnail(store, "uploads/sideways", local_settings)
    store.delete("uploads/sideways")  # the photo is no longer read once its thumbnail is kept
    second = thumbnail(store, "uploads/sideways", local_settings)

    assert first == second == store.get(thumbnail_key("uploads/sideways"))
    assert Image.open(io.BytesIO(first)).size == (THUMBNAIL_PIXELS, 213)


def test_a_photo_that_is_gone_or_unreadable_has_no_thumbnail(local_settings) -> None:
    store = get_store(local_settings)
    store.put("uploads/not-an-image", b"GIF89a not really")
    with pytest.raises(ObjectMissingError):
        thumbnail(store, "uploads/gone", local_settings)
    with pytest.raises(ThumbnailError, match="corrupt"):
        thumbnail(store, "uploads/not-an-image", local_settings)
    assert not store.exists(thumbnail_key("uploads/not-an-image"))
