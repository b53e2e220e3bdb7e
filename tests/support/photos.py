"""Synthetic shop photos: garments on busy backgrounds, and folders laid out like the
shared photo collection."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from training.shop_photos import make_shop_photo


def a_rug(seed: int) -> Image.Image:
    """A striped, noisy rug, 400×600: a busy border all round."""
    rng = np.random.default_rng(seed)
    width, height = 400, 600
    stripes = (np.arange(height)[:, None] // 12 % 2) * 70 + 150
    rug = np.repeat(stripes, width, axis=1)[..., None] * np.array([1.0, 0.7, 0.5])
    return Image.fromarray(
        np.clip(rug + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    )


def jpeg(photo: Image.Image) -> bytes:
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def trousers_on_a_rug(seed: int = 0) -> bytes:
    """Dark trousers photographed on a striped, noisy rug."""
    photo = a_rug(seed)
    draw = ImageDraw.Draw(photo)
    colour = (25, 30, 60)
    draw.rectangle((130, 90, 270, 180), fill=colour)  # waist
    draw.polygon([(130, 180), (195, 180), (165, 520), (100, 520)], fill=colour)  # left leg
    draw.polygon([(205, 180), (270, 180), (300, 520), (235, 520)], fill=colour)  # right leg
    return jpeg(photo)


def write_photo_folder(root: Path, fashion_mnist) -> None:
    """pants/ (trousers), shoes/ (a sandal, a sneaker, an ankle boot), hat/ (out of the
    catalog: two bags), longsleeve/ (not scored) and one damaged file."""
    rng = np.random.default_rng(5)
    images, labels = fashion_mnist.train_images, fashion_mnist.train_labels

    def first(label: int, count: int) -> list[np.ndarray]:
        return [images[i] for i in np.flatnonzero(labels == label)[:count]]

    layout = {
        "pants": first(1, 3),
        "shoes": first(5, 1) + first(7, 1) + first(9, 1),
        "hat": first(8, 2),
        "longsleeve": first(2, 2),
    }
    for name, tiles in layout.items():
        (root / name).mkdir(parents=True)
        for index, tile in enumerate(tiles):
            (root / name / f"{index}.jpg").write_bytes(make_shop_photo(tile, rng))
    (root / "pants" / "damaged.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")


def hat_on_a_rug(seed: int = 0) -> bytes:
    """A dark brimmed hat (not in the catalog) on the same rug."""
    photo = a_rug(seed)
    draw = ImageDraw.Draw(photo)
    draw.ellipse((60, 330, 340, 400), fill=(40, 20, 20))  # brim
    draw.ellipse((120, 200, 280, 380), fill=(40, 20, 20))  # crown
    return jpeg(photo)
