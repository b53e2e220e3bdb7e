"""Reduce a decoded image to the pipeline's working size, in bounded memory.

A JPEG is decoded reduced already (``preprocess.decode``'s draft); the other formats
decode whole, and the decoded image is reduced by a box filter to at most
``WORKING_SIDE`` pixels a side before any conversion. The pipeline needs 28 (and
160 to find the item): a 40 Mpx PNG converted at full size took ~1 GB.

Decoded whole, a 6324×6324 RGB or RGBA PNG is 160 MB (Pillow keeps 4 bytes a pixel):
on top of a worker's pool process (~145 MB with its model) that peaked at 315 MB. So
an image of more than ``CHILD_PIXELS`` that cannot be decoded reduced is decoded and
reduced in a short-lived child (``python -m worker.pipeline.reduce``: Pillow only,
its address space capped), which hands back the reduced pixels; the caller never
holds the whole decode, and the child's memory goes back to the system as it exits.
"""

from __future__ import annotations

import io
import json
import resource
import sys

from PIL import ExifTags, Image

from worker.files import ChildFailed, run_child

WORKING_SIDE = 1024
#: Reduced a band of rows of about this many pixels at a time.
BAND_PIXELS = 2_000_000
#: Larger images that cannot be decoded reduced are decoded in a child (64 MB as RGB).
CHILD_PIXELS = 16_000_000
#: Pillow holds a WebP four times while it decodes one (libwebp's frame, its bytes, the
#: buffer they are read from, the image: 16 bytes a pixel; a 6324×6324 one took a
#: child to 638 MB, a 4000×4000 one to 268 MB): decoded in a child past
#: ``WEBP_CHILD_PIXELS``, refused (``too_many_pixels``) past ``WEBP_MAX_PIXELS``.
WEBP_CHILD_PIXELS = 4_000_000
WEBP_MAX_PIXELS = 16_000_000
CHILD_MEMORY_BYTES = 2 * 1024**3
CHILD_TIMEOUT_S = 60


def child_pixels(image_format: str | None) -> int:
    """Past how many pixels an image of ``image_format`` is decoded in a child."""
    return WEBP_CHILD_PIXELS if image_format == "WEBP" else CHILD_PIXELS


class ChildDecodeError(ValueError):
    """The child could not decode the image (its reason), or took too long."""


def to_working_size(image: Image.Image) -> Image.Image:
    """``image`` reduced by a whole factor to at most ``WORKING_SIDE`` pixels a side (its
    metadata, EXIF orientation included, kept); small images are returned as they are.

    Reduced a band of rows at a time: a mode that must be converted first (16-bit, a
    palette, 1-bit) or one whose box filter works on premultiplied alpha (Pillow's own
    ``reduce`` of RGBA makes a whole ``RGBa`` copy) costs one band more than the
    decoded image, not a second image (a 6324×6324 RGBA PNG: 160 MB, not 320)."""
    factor = max(image.size) // WORKING_SIDE
    if factor < 2:
        return image
    if image.mode in {"I;16", "I;16B", "I;16L"}:
        mode = "I"
    elif image.mode in {"P", "PA"}:
        mode = "RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB"
    elif image.mode == "1":
        mode = "L"
    else:
        mode = image.mode
    # Pillow reduces LA and RGBA premultiplied, then converts back; so does each band.
    work = {"LA": "La", "RGBA": "RGBa"}.get(mode, mode)
    width, height = image.size
    rows = max(1, BAND_PIXELS // (width * factor)) * factor
    reduced = Image.new(mode, (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(top + rows, height)))
        if band.mode != mode:
            band = band.convert(mode)
        band = band.reduce(factor) if work == mode else band.convert(work).reduce(factor)
        reduced.paste(band if work == mode else band.convert(mode), (0, top // factor))
    reduced.info = image.info.copy()
    return reduced


def in_a_child(data: bytes) -> Image.Image:
    """``data`` decoded (its first frame) and reduced to the working size by a child
    process: the image's mode, its pixels and its EXIF orientation, nothing else."""
    try:
        answer = run_child("worker.pipeline.reduce", data, timeout=CHILD_TIMEOUT_S)
    except ChildFailed as exc:
        raise ChildDecodeError(str(exc)) from exc
    header, _, pixels = answer.partition(b"\n")
    shape = json.loads(header)
    image = Image.frombytes(shape["mode"], tuple(shape["size"]), pixels)
    if shape["orientation"]:
        image.getexif()[ExifTags.Base.Orientation] = shape["orientation"]
    return image


def main() -> None:
    """The child: an image on stdin; on stdout a JSON line (mode, size, EXIF
    orientation) and the reduced image's raw pixels. The parent checked the format and
    the pixel limit; the child caps its own address space first."""
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(io.BytesIO(sys.stdin.buffer.read())) as image:
        image.load()
        # Read after the load: Pillow turns a TIFF upright as it loads it (and drops
        # the tag); a PNG or WebP keeps its tag for ``flatten`` to apply.
        orientation = image.getexif().get(ExifTags.Base.Orientation)
        reduced = to_working_size(image)  # past CHILD_PIXELS, always reduced
    header = {"mode": reduced.mode, "size": reduced.size, "orientation": orientation}
    sys.stdout.buffer.write(json.dumps(header).encode() + b"\n" + reduced.tobytes())


if __name__ == "__main__":
    main()
