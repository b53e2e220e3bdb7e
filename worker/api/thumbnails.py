"""Thumbnails for the review page, made so that no upload can make the API hold
gigabytes.

A JPEG is decoded reduced (``draft``: 1/8 of each side at most), in the API process.
So is any image of at most ``IN_PROCESS_PIXELS``. Anything else (TIFF, PNG, WebP,
GIF or BMP) can only be decoded whole: one 6324×6324 TIFF of 286 KB raised the API
from 217 to 708 MB, nine at once to 3.2 GB, kept until restart. Those are decoded
in a short-lived child process (``python -m worker.api.thumbnails``), one at a time
per API process, with its address space capped at ``CHILD_MEMORY_BYTES``; its
memory is returned to the system when it exits. Nothing larger than
``FASHION_MAX_IMAGE_PIXELS`` is decoded anywhere.
"""

from __future__ import annotations

import io
import resource
import subprocess
import sys
import threading

from PIL import ExifTags, Image, ImageOps

#: Pixels on the long side of a thumbnail (JPEG).
THUMBNAIL_PIXELS = 320
#: Decoded in the API process at most: 4 Mpx, ~16 MB as RGBA, plus a copy.
IN_PROCESS_PIXELS = 4_000_000
#: A child's address space (a 50 Mpx RGBA image and its RGB copy fit).
CHILD_MEMORY_BYTES = 2 * 1024**3
CHILD_TIMEOUT_S = 30
_one_child_at_a_time = threading.Semaphore(1)


class ThumbnailError(ValueError):
    """The photo cannot be shown (too many pixels, not an image, or its decode failed)."""


def thumbnail(data: bytes, *, max_pixels: int) -> bytes:
    """A JPEG of at most ``THUMBNAIL_PIXELS`` on the long side (EXIF rotation applied)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise ThumbnailError(f"{image.width}×{image.height} is too many pixels")
            if image.format == "JPEG" or pixels <= IN_PROCESS_PIXELS:
                return _shrink(image)
    except (OSError, Image.DecompressionBombError) as exc:
        raise ThumbnailError(f"not a readable image: {exc}") from exc
    return _shrink_in_a_child(data)


def _shrink(image: Image.Image) -> bytes:
    """Shrunk first, then turned upright and converted: no full-size copy is made
    (a 6324×6324 RGBA PNG peaked at 486 MB converting first, 333 MB this way; an RGB
    TIFF 491 and 182 MB)."""
    image.draft("RGB", (THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    orientation = image.getexif().get(ExifTags.Base.Orientation)
    image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    if orientation:
        image.getexif()[ExifTags.Base.Orientation] = orientation
    image = ImageOps.exif_transpose(image).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def _shrink_in_a_child(data: bytes) -> bytes:
    with _one_child_at_a_time:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "worker.api.thumbnails"],
                input=data,
                capture_output=True,
                timeout=CHILD_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ThumbnailError(f"the decode took over {CHILD_TIMEOUT_S} s") from exc
    if done.returncode != 0 or not done.stdout:
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["killed"]
        raise ThumbnailError(f"the decode failed: {reason[0]}")
    return done.stdout


def main() -> None:
    """The child: an image on stdin, its thumbnail on stdout. It caps its own address
    space first (``preexec_fn`` is not safe in the API's threaded process)."""
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))
    Image.MAX_IMAGE_PIXELS = None  # the parent checked the size against the setting
    with Image.open(io.BytesIO(sys.stdin.buffer.read())) as image:
        sys.stdout.buffer.write(_shrink(image))


if __name__ == "__main__":
    main()
