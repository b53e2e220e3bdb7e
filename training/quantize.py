"""The quantized LiteRT artifacts of a finished run's serving model.

``fashion quantize RUN`` reads ``RUN/serving.keras`` (exactly what ``model.tflite``
computes) and writes, by ``--scheme``:

- ``int8``: ``RUN/model-int8.tflite``, full-integer: every weight and activation
  int8, calibrated on ``samples`` images of the run's *training* images (never
  its validation images, never the test split);
- ``dynamic``: ``RUN/model-dynamic.tflite``, dynamic-range: weights stored int8,
  activations quantized per batch at run time (no calibration set).

Both keep float32 input and outputs, so the worker's signature (``image`` →
``probabilities``, ``embedding``) is unchanged. The card gains an entry under the
scheme's name: file, sha256, how it was made, and its agreement with the float
artifact on the run's validation images. Which engine the worker runs is
``FASHION_MODEL_ENGINE`` (default: the card's ``default_engine``, ``float`` when
absent).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.data import FashionMnist, held_out_by, load_fashion_mnist
from training.export import (
    CARD_FILENAME,
    MODEL_FILENAME,
    QUANTIZED_FILENAMES,
    SERVING_FILENAME,
    sha256_of,
)
from worker.pipeline.classifier import Classifier
from worker.pipeline.preprocess import normalize


def held_out_indices(card: dict[str, Any], count: int) -> np.ndarray:
    """The validation images of the run (or of every member of an ensemble)."""
    if "members" in card and card.get("split_seed") is None:
        raise ValueError("an ensemble whose members held out different splits: give it one split")
    return held_out_by(card, count)


def representative_images(
    dataset: FashionMnist, held_out: np.ndarray, *, samples: int
) -> np.ndarray:
    """``samples`` of the run's training images (its ``held_out`` validation images left out)."""
    train_index = np.setdiff1d(np.arange(len(dataset.train_images)), held_out)
    picked = np.random.default_rng(0).choice(train_index, size=samples, replace=False)
    return normalize(dataset.train_images[np.sort(picked)])


def convert_int8(serving: keras.Model, images: np.ndarray) -> bytes:
    """Full-integer quantization with float32 input and outputs."""

    def batches() -> Iterator[list[np.ndarray]]:
        for image in images:
            yield [image[np.newaxis]]

    converter = tf.lite.TFLiteConverter.from_keras_model(serving)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = batches
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def convert_dynamic(serving: keras.Model) -> bytes:
    """Dynamic-range quantization: int8 weights, float32 input and outputs."""
    converter = tf.lite.TFLiteConverter.from_keras_model(serving)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


#: How each of ``QUANTIZED_ENGINES`` is made, as the card records it.
SCHEMES = {
    "int8": "full integer (weights and activations int8), float32 input/outputs",
    "dynamic": (
        "dynamic range (weights int8, activations quantized per batch at run time), "
        "float32 input/outputs"
    ),
}


def quantize_run(
    run_dir: Path,
    *,
    scheme: str = "int8",
    samples: int = 1_000,
    data_dir: Path | None = None,
    make_default: bool = False,
) -> dict[str, Any]:
    """Write ``run_dir``'s ``scheme`` artifact; record it in the card; return the card's entry.

    ``make_default`` makes ``scheme`` the card's ``default_engine``; without it a
    card whose default was ``scheme`` goes back to ``float``, any other default stays.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, not {scheme!r}")
    card_path = run_dir / CARD_FILENAME
    card = json.loads(card_path.read_text())
    serving = keras.models.load_model(run_dir / SERVING_FILENAME)
    dataset = load_fashion_mnist(data_dir)
    held_out = held_out_indices(card, len(dataset.train_images))
    target = run_dir / QUANTIZED_FILENAMES[scheme]
    calibration: dict[str, Any] = {}
    if scheme == "int8":
        images = representative_images(dataset, held_out, samples=samples)
        target.write_bytes(convert_int8(serving, images))
        calibration = {
            "representative_images": samples,
            "representative_from": "the run's training images, its validation images left out",
        }
    else:
        target.write_bytes(convert_dynamic(serving))
    entry: dict[str, Any] = {
        "file": target.name,
        "sha256": sha256_of(target),
        "bytes": target.stat().st_size,
        "float_bytes": (run_dir / MODEL_FILENAME).stat().st_size,
        "quantization": SCHEMES[scheme],
        **calibration,
    }
    card[scheme] = entry
    default = card.get("default_engine", "float")
    card["default_engine"] = scheme if make_default else "float" if default == scheme else default
    # Written now so the worker's Classifier can load the new engine; again with its parity.
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    validation = normalize(dataset.train_images[held_out])
    labels = dataset.train_labels[held_out]
    as_float = Classifier(run_dir / MODEL_FILENAME, engine="float").predict_proba(validation)
    quantized = Classifier(run_dir / MODEL_FILENAME, engine=scheme).predict_proba(validation)
    entry["validation"] = {
        "images": int(len(labels)),
        "float_accuracy": round(float((as_float.argmax(1) == labels).mean()), 4),
        f"{scheme}_accuracy": round(float((quantized.argmax(1) == labels).mean()), 4),
        "top1_agreement": round(float((as_float.argmax(1) == quantized.argmax(1)).mean()), 4),
        "max_probability_difference": round(float(np.abs(as_float - quantized).max()), 4),
    }
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    return entry
