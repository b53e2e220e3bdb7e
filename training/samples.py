"""Regenerate the small sample set ``fashion demo`` ships with (``worker/samples``).

Products: three Fashion-MNIST *training* images per class, 28×28 PNG, with a
made-up name, price and stock (the third of each class is out of stock, so the
demo shows that sold-out items are never offered). Uploads: one *test* image per
class, rendered as a product photo (dark item on a light, tinted canvas, JPEG;
see ``training.shop_photos``). Forty small PNGs from
Fashion-MNIST (MIT licence, Zalando SE) -- a sample, not the data set.

Run: ``python -m training.samples`` (needs the dataset, see ``training.data``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from training.data import CLASS_NAMES, load_fashion_mnist
from training.shop_photos import make_shop_photo
from worker.config import get_settings

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "worker" / "samples"
PRODUCTS_PER_CLASS = 3
SEED = 20261122

SKU_PREFIXES = ("TEE", "TRS", "PUL", "DRS", "COA", "SAN", "SHI", "SNK", "BAG", "BOO")


def _first_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> list[int]:
    chosen: list[int] = []
    for label in range(len(CLASS_NAMES)):
        candidates = np.flatnonzero(labels == label)
        chosen.extend(int(i) for i in rng.choice(candidates, size=per_class, replace=False))
    return chosen


def main() -> None:
    dataset = load_fashion_mnist(get_settings().mnist_dir)
    rng = np.random.default_rng(SEED)
    products_dir = SAMPLES_DIR / "products"
    uploads_dir = SAMPLES_DIR / "uploads"
    products_dir.mkdir(parents=True, exist_ok=True)
    uploads_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    for position, index in enumerate(_first_indices(dataset.train_labels, PRODUCTS_PER_CLASS, rng)):
        label = int(dataset.train_labels[index])
        number = position % PRODUCTS_PER_CLASS + 1
        sku = f"{SKU_PREFIXES[label]}-{number:03d}"
        image_file = f"products/{sku}.png"
        Image.fromarray(dataset.train_images[index]).save(SAMPLES_DIR / image_file)
        rows.append(
            {
                "sku": sku,
                "name": f"{CLASS_NAMES[label]} no. {number}",
                "category": CLASS_NAMES[label],
                "price": f"{rng.integers(15, 120)}.{rng.choice([0, 50, 95]):02d}",
                "stock_quantity": 0 if number == PRODUCTS_PER_CLASS else int(rng.integers(1, 40)),
                "image": image_file,
                "source": f"fashion-mnist train #{index}",
            }
        )
    with (SAMPLES_DIR / "catalog.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    for old in uploads_dir.glob("*"):
        old.unlink()
    for index in _first_indices(dataset.test_labels, 1, rng):
        label = int(dataset.test_labels[index])
        name = CLASS_NAMES[label].lower().replace("/", "-").replace(" ", "-")
        (uploads_dir / f"{name}.jpg").write_bytes(make_shop_photo(dataset.test_images[index], rng))


if __name__ == "__main__":
    main()
