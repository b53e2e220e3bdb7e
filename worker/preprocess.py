"""Turn uploaded bytes into the model's input, the same way everywhere.

The worker, ``fashion classify`` and training's evaluation all call these
functions, so a photo is converted identically at training and serving time.

Walking-skeleton version: decode, grayscale, resize to 28×28, scale to
``[0, 1]``. Faithful Fashion-MNIST conversion of real photos (trimming,
centring, negation) is a later issue.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from worker.errors import ImageError

IMAGE_SIZE = 28
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"})
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
        raise ImageError("empty", "the upload is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(
            "too_large", f"the upload is {len(data)} bytes; the limit is {max_bytes} bytes"
        )
    try:
        # Image.open reads the header only; pixels are decoded by load() below,
        # after the pixel limit has been checked.
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        if _looks_like_allowed_image(data):
            raise ImageError("corrupt", "the image is damaged: its header is invalid") from exc
        raise ImageError("unsupported_format", "the upload is not a recognised image") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError("too_many_pixels", f"the image is too large to decode: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("corrupt", f"the image header could not be read: {exc}") from exc
    if image.format not in ALLOWED_FORMATS:
        raise ImageError(
            "unsupported_format",
            f"{image.format} images are not accepted; use one of {sorted(ALLOWED_FORMATS)}",
        )
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            "too_many_pixels",
            f"the image is {width}×{height} pixels; the limit is {max_pixels} pixels",
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError("corrupt", f"the image could not be decoded: {exc}") from exc
    return image


def to_model_pixels(image: Image.Image) -> np.ndarray:
    """Grayscale and resize a decoded image to uint8 ``(28, 28)``."""
    image = ImageOps.exif_transpose(image)
    gray = image.convert("L")
    resized = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


def preprocess(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Bytes of one upload → uint8 ``(28, 28)``, or an ``ImageError`` with a stable code."""
    return to_model_pixels(decode(data, max_bytes=max_bytes, max_pixels=max_pixels))
