from __future__ import annotations

import io

import numpy as np
from PIL import Image

from training.shop_photos import compare, make_shop_photo
from worker.pipeline.classifier import BUNDLED_MODEL, Classifier


def test_shop_photo_is_a_light_background_rgb_jpeg(fashion_mnist) -> None:
    data = make_shop_photo(fashion_mnist.test_images[0], np.random.default_rng(0))
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.mode == "RGB"
    assert min(image.size) >= 28 * 8 * 1.3
    corner = np.asarray(image)[:5, :5].mean()
    assert corner > 200


def test_pipeline_on_shop_photos_stays_close_to_raw_tiles(fashion_mnist) -> None:
    # A loose check on 400 images; bench figures on the full split are in docs/uploads.md.
    result = compare(
        Classifier(BUNDLED_MODEL), fashion_mnist.test_images[:400], fashion_mnist.test_labels[:400]
    )
    assert result["images"] == 400
    assert result["gap_points"] <= 5.0, result
