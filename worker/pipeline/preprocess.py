"""Turn uploaded bytes into the model's input, the same way everywhere.

The worker, ``fashion classify`` and training's evaluation all call
``preprocess``, so a photo is converted identically wherever it is classified.

Fashion-MNIST was made from Zalando product photos by trimming the edges close
to the corner colour, resizing the longest edge to 28, sharpening, extending the
short edge to 28 with the item centred, negating and converting to 8-bit
grayscale. A customer's upload goes through the same steps:

1. **Validate before decoding** (``decode``): byte limit, format allow-list,
   pixel limit read from the header, so a decompression bomb is refused before
   a single pixel is decoded; large JPEGs are decoded reduced (DCT scaling).
2. **Orient and flatten** (``to_grayscale``): EXIF orientation; the first frame
   of an animation; transparency composited onto white; every mode (RGB, RGBA,
   P, CMYK, L, LA, I;16, I, F, 1) to 8-bit grayscale.
3. **Background** (``estimate_background``): the median of the image's border.
   When the border is not plain (a phone photo on a bed, a door, a floor), the
   item is first cut out of its background and put on white
   (``worker.pipeline.foreground``, OpenCV GrabCut); product photos skip this step.
   ``prepare`` reports which it was (``ModelInput.busy_background``): the
   classifier judges "uncertain" on such photos with the model card's photo
   threshold, fitted on real photos (``fashion fit-photo-threshold``).
4. **Trim** (``trim_box``): the bounding box of pixels that differ from the
   background by more than 5 % of full intensity.
5. **Map to Fashion-MNIST's polarity** (``to_dark_background``): the
   background becomes 0 and the item bright -- a negation when the background
   is light, a plain shift when it is already dark.
6. **Resize** the longest edge to 28 with Lanczos antialiasing, **sharpen**
   mildly (an unsharp mask), and **centre** on a 28×28 black canvas.

``normalize`` is the one scaling to ``[0, 1]`` used in training and inference.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from worker.errors import ErrorCode, ImageError
from worker.pipeline import reduce
from worker.pipeline.foreground import border_ring, cut_out, needs_cutout

IMAGE_SIZE = 28
#: Bump whenever a change here changes the pixels ``prepare`` makes: catalog photos
#: whose kept model input was made by another version are fetched and prepared again.
PREPROCESS_VERSION = 2
# MPO is the multi-picture JPEG many phone cameras write; its first frame is used.
ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "TIFF", "BMP"})
MIN_SIDE = 8
# JPEGs are decoded at the smallest DCT scale (1/2, 1/4 or 1/8) that keeps at
# least this many pixels on each side: plenty for a 28-pixel result.
DRAFT_SIZE = 256
# Other formats decode whole, then are reduced to the working size before any
# conversion (``worker.pipeline.reduce``).
# A pixel belongs to the item when it differs from the background by more than
# this (Zalando's 5 % of the maximum intensity).
TRIM_THRESHOLD = 0.05 * 255
BORDER_WIDTH_FRACTION = 0.02
# The item is located on a copy reduced to at most this many pixels a side.
MASK_SIDE = 160
# Zalando sharpened after resizing. Pillow's SHARPEN kernel cost every model 1-2
# points on shop photos of the validation split (an enlarged tile was sharpened
# once already); this milder mask lost no real photo (docs/model.md, "Milder
# sharpening in the upload pipeline").
SHARPEN = ImageFilter.UnsharpMask(radius=1, percent=50, threshold=0)

# Leading bytes of the allowed formats: a file that starts like one of them but
# that Pillow cannot identify is a damaged image ("corrupt"), not a foreign file.
_SIGNATURES = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",
    b"MM\x00*",
    b"BM",
)


@dataclass(frozen=True)
class ModelInput:
    """One upload, ready for the model."""

    #: uint8 ``(28, 28)``, Fashion-MNIST style.
    pixels: np.ndarray
    #: The upload's border was not plain (a phone photo on a bed, a door, a
    #: floor), so the item was cut out of its background first.
    busy_background: bool


def _looks_like_allowed_image(data: bytes) -> bool:
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def normalize(images: np.ndarray) -> np.ndarray:
    """Scale uint8 ``(n, 28, 28)`` images to float32 ``(n, 28, 28, 1)`` in ``[0, 1]``.

    This is the one normalisation used for training and inference.
    """
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def decode(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Open ``data`` as an image, refusing what we cannot or will not decode."""
    if not data:
        raise ImageError(ErrorCode.EMPTY, "the upload is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(
            ErrorCode.TOO_LARGE, f"the upload is {len(data)} bytes; the limit is {max_bytes} bytes"
        )
    try:
        # Image.open reads the header only; pixels are decoded by load() below,
        # after the pixel limit has been checked.
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        if _looks_like_allowed_image(data):
            raise ImageError(
                ErrorCode.CORRUPT, "the image is damaged: its header is invalid"
            ) from exc
        raise ImageError(
            ErrorCode.UNSUPPORTED_FORMAT, "the upload is not a recognised image"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(
            ErrorCode.TOO_MANY_PIXELS, f"the image is too large to decode: {exc}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - Pillow's parsers raise many types on bad input
        raise ImageError(ErrorCode.CORRUPT, f"the image header could not be read: {exc}") from exc
    if image.format not in ALLOWED_FORMATS:
        raise ImageError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"{image.format} images are not accepted; use one of {sorted(ALLOWED_FORMATS)}",
        )
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            ErrorCode.TOO_MANY_PIXELS,
            f"the image is {width}×{height} pixels; the limit is {max_pixels} pixels",
        )
    if image.format == "WEBP" and width * height > reduce.WEBP_MAX_PIXELS:
        raise ImageError(
            ErrorCode.TOO_MANY_PIXELS,
            f"the WebP image is {width}×{height} pixels; a WebP is decoded whole, four "
            f"times over, so its limit is {reduce.WEBP_MAX_PIXELS} pixels",
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            ErrorCode.TOO_SMALL,
            f"the image is {width}×{height} pixels; each side must be at least {MIN_SIDE}",
        )
    if image.format in {"JPEG", "MPO"}:
        image.draft(
            "RGB" if image.mode in {"RGB", "CMYK", "YCbCr"} else image.mode,
            (DRAFT_SIZE, DRAFT_SIZE),
        )
    elif width * height > reduce.child_pixels(image.format):
        try:
            return reduce.in_a_child(data)
        except reduce.ChildDecodeError as exc:
            raise ImageError(ErrorCode.CORRUPT, f"the image could not be decoded: {exc}") from exc
    try:
        image.load()
        return reduce.to_working_size(image)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise OverflowError, struct.error…
        raise ImageError(ErrorCode.CORRUPT, f"the image could not be decoded: {exc}") from exc


def flatten(image: Image.Image) -> Image.Image:
    """Orient by EXIF, take the first frame, composite alpha on white: mode RGB or L."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        pixels = np.asarray(image, dtype=np.float32)
        # A float image may hold ±inf or NaN (one +inf pixel made the range infinite
        # and the whole photo "blank"): the range is the finite pixels', the others
        # are clipped to it.
        finite = np.isfinite(pixels)
        if not finite.any():
            raise ImageError(ErrorCode.CORRUPT, "the image has no finite pixel value")
        low, high = float(pixels[finite].min()), float(pixels[finite].max())
        pixels = np.nan_to_num(pixels, nan=low, posinf=high, neginf=low)
        scaled = (pixels - low) / (high - low) * 255 if high > low else np.zeros_like(pixels)
        return Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    return image if image.mode in {"RGB", "L"} else image.convert("RGB")


def to_grayscale(image: Image.Image) -> Image.Image:
    """``flatten``, then 8-bit grayscale (mode ``L``)."""
    return flatten(image).convert("L")


def estimate_background(gray: np.ndarray) -> float:
    """The median intensity of a thin border ring: robust to noise and to an item
    that touches one edge."""
    return float(np.median(border_ring(gray, BORDER_WIDTH_FRACTION)))


def trim_box(gray: np.ndarray, background: float) -> tuple[int, int, int, int] | None:
    """``(left, top, right, bottom)`` of the pixels that stand out, or None if none do."""
    mask = np.abs(gray.astype(np.float32) - background) > TRIM_THRESHOLD
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


def find_item(gray_image: Image.Image, background: float) -> tuple[int, int, int, int] | None:
    """The trim box, found on a reduced, median-filtered copy and scaled back.

    Area-averaging down to at most ``MASK_SIDE`` pixels and a median filter
    remove JPEG noise, dithering and dust that would otherwise widen the box;
    the pixels that are kept come from the full-resolution image.
    """
    factor = max(1, int(np.ceil(max(gray_image.size) / MASK_SIDE)))
    small = gray_image.reduce(factor) if factor > 1 else gray_image
    box = trim_box(np.asarray(small.filter(ImageFilter.MedianFilter(3))), background)
    if box is None:
        return None
    left, top, right, bottom = (value * factor for value in box)
    return left, top, min(right, gray_image.width), min(bottom, gray_image.height)


def to_dark_background(gray: np.ndarray, background: float) -> np.ndarray:
    """Map the background to 0 and the item to bright values, as in Fashion-MNIST."""
    pixels = gray.astype(np.float32)
    if background >= 128:
        mapped = (background - pixels) / max(background, 1.0) * 255
    else:
        mapped = (pixels - background) / max(255 - background, 1.0) * 255
    return np.clip(mapped, 0, 255).astype(np.uint8)


def to_model_input(image: Image.Image, *, cutout: bool = True) -> ModelInput:
    """A decoded image → uint8 ``(28, 28)`` in Fashion-MNIST's style.

    ``cutout=False`` skips the foreground step (for comparisons only); the
    background is still reported as busy or plain."""
    flat = flatten(image)
    gray_image = flat.convert("L")
    gray = np.asarray(gray_image)
    ring = border_ring(gray, BORDER_WIDTH_FRACTION)
    background = float(np.median(ring))  # estimate_background, from the ring at hand
    if gray.shape == (IMAGE_SIZE, IMAGE_SIZE) and background < 128:
        # Already a Fashion-MNIST tile: converting it again could only blur it.
        return ModelInput(gray.copy(), busy_background=False)
    busy = needs_cutout(ring, TRIM_THRESHOLD)
    if cutout and busy:
        # A photo on a busy background: keep only the item, on white.
        gray = cut_out(flat, gray)
        gray_image = Image.fromarray(gray)
        background = estimate_background(gray)
    box = find_item(gray_image, background)
    if box is None:
        raise ImageError(
            ErrorCode.BLANK, "the image is one uniform colour: there is no item to classify"
        )
    item = Image.fromarray(to_dark_background(gray, background)).crop(box)
    scale = IMAGE_SIZE / max(item.size)
    size = (max(1, round(item.width * scale)), max(1, round(item.height * scale)))
    item = item.resize(size, Image.Resampling.LANCZOS)
    if SHARPEN is not None:
        item = item.filter(SHARPEN)
    canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    canvas.paste(item, ((IMAGE_SIZE - size[0]) // 2, (IMAGE_SIZE - size[1]) // 2))
    return ModelInput(np.asarray(canvas, dtype=np.uint8), busy_background=busy)


def prepare(data: bytes, *, max_bytes: int, max_pixels: int, cutout: bool = True) -> ModelInput:
    """Bytes of one upload → its ``ModelInput``, or an ``ImageError`` with a stable code."""
    return to_model_input(decode(data, max_bytes=max_bytes, max_pixels=max_pixels), cutout=cutout)


def preprocess(data: bytes, *, max_bytes: int, max_pixels: int, cutout: bool = True) -> np.ndarray:
    """Bytes of one upload → uint8 ``(28, 28)`` (``prepare``'s pixels), or an ``ImageError``."""
    return prepare(data, max_bytes=max_bytes, max_pixels=max_pixels, cutout=cutout).pixels
