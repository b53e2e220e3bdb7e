"""Shop-photo versions of Fashion-MNIST images, to check the upload pipeline end to end.

Each 28×28 tile is turned into what a product photo looks like: negated to a
dark item on a light background, upscaled ×8–16, placed off-centre on a larger,
slightly tinted canvas, in RGB, mildly blurred and noisy, saved as JPEG at
quality 75–92. ``worker.pipeline.preprocess`` must undo all that: the same model's
accuracy on these photos should be within 2 points of its accuracy on the raw
tiles.

Design decisions about the pipeline are checked on photos made from the
*validation* split; the *test* split's photos are only used to report.

Run ``python -m training.shop_photos [--split test|validation] [--count N]``.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from training.data import load_fashion_mnist, train_validation_split
from worker.config import ENGINES, get_settings
from worker.pipeline.classifier import BUNDLED_MODEL, Classifier
from worker.pipeline.preprocess import normalize, preprocess

VALIDATION_SIZE = 5_000
SEED = 7


def make_shop_photo(tile: np.ndarray, rng: np.random.Generator) -> bytes:
    """One 28×28 Fashion-MNIST tile → JPEG bytes of a plausible product photo."""
    scale = int(rng.integers(8, 17))
    item = Image.fromarray(255 - tile).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    canvas_side = int(28 * scale * rng.uniform(1.3, 1.8))
    tint = tuple(int(value) for value in rng.integers(225, 256, size=3))
    canvas = Image.new("RGB", (canvas_side, canvas_side), tint)
    # The item's grey levels scale the tint, so its background merges with the canvas.
    item_rgb = Image.merge(
        "RGB", [item.point(lambda value, c=channel: value * c // 255) for channel in tint]
    )
    slack = canvas_side - item.width
    left, top = (int(value) for value in rng.integers(0, slack + 1, size=2))
    canvas.paste(item_rgb, (left, top))
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    noisy = np.asarray(canvas, dtype=np.float32) + rng.normal(
        0, rng.uniform(1, 4), (canvas_side, canvas_side, 3)
    )
    photo = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=int(rng.integers(75, 93)))
    return buffer.getvalue()


def shop_photos(tiles: np.ndarray, seed: int = SEED) -> Iterator[bytes]:
    rng = np.random.default_rng(seed)
    for tile in tiles:
        yield make_shop_photo(tile, rng)


def split_tiles(split: str) -> tuple[np.ndarray, np.ndarray]:
    dataset = load_fashion_mnist(get_settings().mnist_dir)
    if split == "test":
        return dataset.test_images, dataset.test_labels
    _, _, images, labels = train_validation_split(
        dataset.train_images, dataset.train_labels, validation_size=VALIDATION_SIZE, seed=1
    )
    return images, labels


def compare(
    classifier: Classifier, images: np.ndarray, labels: np.ndarray, *, seed: int = SEED
) -> dict[str, float]:
    """Accuracy of the same model on raw tiles and on their shop-photo versions."""
    settings = get_settings()
    raw = classifier.predict_proba(normalize(images)).argmax(axis=1)
    converted = np.stack(
        [
            preprocess(
                photo, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
            )
            for photo in shop_photos(images, seed)
        ]
    )
    pipeline = classifier.predict_proba(normalize(converted)).argmax(axis=1)
    raw_accuracy = float((raw == labels).mean())
    pipeline_accuracy = float((pipeline == labels).mean())
    return {
        "images": len(labels),
        "raw_accuracy": round(raw_accuracy, 4),
        "shop_photo_accuracy": round(pipeline_accuracy, 4),
        "gap_points": round((raw_accuracy - pipeline_accuracy) * 100, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=["validation", "test"], default="validation")
    parser.add_argument("--count", type=int, default=2_000, help="images to convert")
    parser.add_argument(
        "--save", type=int, default=0, help="also write this many JPEGs to ./shop-photos"
    )
    parser.add_argument(
        "--model", type=Path, default=BUNDLED_MODEL, help="a .tflite with its card beside it"
    )
    parser.add_argument("--engine", choices=ENGINES, help="default: the card's default_engine")
    arguments = parser.parse_args()
    images, labels = split_tiles(arguments.split)
    images, labels = images[: arguments.count], labels[: arguments.count]
    if arguments.save:
        folder = Path("shop-photos")
        folder.mkdir(exist_ok=True)
        for index, photo in zip(range(arguments.save), shop_photos(images), strict=False):
            (folder / f"{arguments.split}-{index:04d}-label{labels[index]}.jpg").write_bytes(photo)
    classifier = Classifier(arguments.model, engine=arguments.engine)
    result = compare(classifier, images, labels)
    print(json.dumps({"split": arguments.split, "model_version": classifier.version, **result}))


if __name__ == "__main__":
    main()
