"""Draw an upload beside the products offered for it, so a person can judge "similar".

Pillow only (the worker install has no matplotlib): the upload's photo, what the
model saw (28×28, enlarged), then each similar product's photo with its SKU,
category and cosine score.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from catalog.queries import SimilarProduct
from worker.errors import FashionError
from worker.pipeline.preprocess import decode, flatten
from worker.storage import ObjectStore

TILE = 160
#: Photos with more pixels than this are drawn as grey tiles, not decoded.
MAX_PIXELS = 40_000_000
CAPTION = 36


def _thumbnail(data: bytes | None) -> Image.Image:
    if data is None:
        return Image.new("RGB", (TILE, TILE), (200, 200, 200))
    try:
        # The pipeline's decode and flatten, as the worker reads a photo: its pixel
        # limit and working size (a bomb or a damaged photo becomes a grey tile, not a
        # crash or a gigabyte), upright, transparency on white.
        image = flatten(decode(data, max_bytes=len(data), max_pixels=MAX_PIXELS)).convert("RGB")
    except (FashionError, OSError):
        return Image.new("RGB", (TILE, TILE), (200, 200, 200))
    if max(image.size) <= 64:
        # Fashion-MNIST-sized photos are enlarged with hard edges so they stay legible.
        return image.resize((TILE, TILE), Image.Resampling.NEAREST)
    return ImageOps.pad(image, (TILE, TILE), color=(255, 255, 255))


def draw_similar(
    *,
    upload: bytes,
    model_input: Image.Image | None,
    label: str,
    similar: list[SimilarProduct],
    photos: dict[str, bytes | None],
    path: Path,
) -> Path:
    tiles: list[tuple[Image.Image, str]] = [(_thumbnail(upload), f"upload: {label}")]
    if model_input is not None:
        tiles.append(
            (
                model_input.convert("RGB").resize((TILE, TILE), Image.Resampling.NEAREST),
                "model input",
            )
        )
    for item in similar:
        tiles.append(
            (
                _thumbnail(photos.get(item.sku)),
                f"#{item.rank} {item.sku}\n{item.category} {item.score:.2f}",
            )
        )
    sheet = Image.new("RGB", (TILE * len(tiles), TILE + CAPTION), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (tile, caption) in enumerate(tiles):
        sheet.paste(tile, (index * TILE, 0))
        draw.multiline_text((index * TILE + 4, TILE + 2), caption, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def fetch_photos(
    store: ObjectStore, keys: dict[str, str | None], *, max_bytes: int
) -> dict[str, bytes | None]:
    """Each product's photo, read no further than ``max_bytes + 1`` (a larger one is
    drawn grey, like a missing one)."""
    photos: dict[str, bytes | None] = {}
    for sku, key in keys.items():
        try:
            photos[sku] = store.get(key, max_bytes=max_bytes) if key else None
        except Exception:  # noqa: BLE001 - a missing photo only leaves a grey tile
            photos[sku] = None
    return photos
