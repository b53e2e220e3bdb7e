"""Reduce a decoded image to the pipeline's working size, in bounded memory.

A JPEG is decoded reduced already (``preprocess.decode``'s draft); the other formats
decode whole, and the decoded image is reduced by a box filter to at most
``WORKING_SIDE`` pixels a side before any conversion. The pipeline needs 28 (and
160 to find the item): a 40 Mpx PNG converted at full size took ~1 GB.
"""

from __future__ import annotations

from PIL import Image

WORKING_SIDE = 1024
#: Reduced a band of rows of about this many pixels at a time.
BAND_PIXELS = 2_000_000


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
