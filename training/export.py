"""Export a trained Keras model to the artifact the worker runs, with its model card.

The worker never imports TensorFlow: it runs a LiteRT (TFLite) flatbuffer. The
model card records what the artifact is and how good it is, and its sha256 lets
the worker refuse a file that does not match its card.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from training.data import CLASS_NAMES
from worker.config import QUANTIZED_ENGINES
from worker.pipeline.preprocess import IMAGE_SIZE

MODEL_FILENAME = "model.tflite"
#: Each quantized engine's artifact: ``model-int8.tflite``, ``model-dynamic.tflite``.
QUANTIZED_FILENAMES = {engine: f"model-{engine}.tflite" for engine in QUANTIZED_ENGINES}
CARD_FILENAME = "model_card.json"
# The Keras form of exactly what model.tflite computes (for parity checks).
SERVING_FILENAME = "serving.keras"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def logits_model(model: keras.Model) -> keras.Model:
    """The same network, stopping at the ``logits`` layer (for calibration)."""
    return keras.Model(model.inputs, model.get_layer("logits").output)


def features_model(model: keras.Model) -> keras.Model:
    """The same network, returning ``[logits, embedding]``."""
    return keras.Model(
        model.inputs, [model.get_layer("logits").output, model.get_layer("embedding").output]
    )


def serving_model(
    models: keras.Model | list[keras.Model], *, temperature: float = 1.0
) -> keras.Model:
    """What the worker runs: calibrated probabilities and the L2-normalised embedding.

    Outputs are named, so the LiteRT signature exposes ``probabilities`` (softmax
    of logits / temperature) and ``embedding`` (penultimate layer, unit length).
    Given several models (an ensemble), their logits are averaged and their unit
    embeddings concatenated, so the joint cosine is the mean of the members'.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    members = models if isinstance(models, list) else [models]
    image = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    outputs = [features_model(member)(image) for member in members]
    if len(outputs) == 1:
        logits, embedding = outputs[0]
    else:
        logits = keras.layers.Average(name="mean_logits")([out[0] for out in outputs])
        embedding = keras.layers.Concatenate()(
            [keras.layers.UnitNormalization()(out[1]) for out in outputs]
        )
    scaled = keras.layers.Rescaling(1.0 / temperature, name="temperature")(logits)
    return keras.Model(
        image,
        {
            "probabilities": keras.layers.Softmax(name="probabilities")(scaled),
            "embedding": keras.layers.UnitNormalization(name="embedding")(embedding),
        },
        name="serving" if len(members) == 1 else "ensemble",
    )


def export_serving(serving: keras.Model, path: Path) -> Path:
    """Write ``serving`` as a float32 TFLite flatbuffer (dynamic batch) and as serving.keras."""
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(serving).convert())
    serving.save(path.with_name(SERVING_FILENAME))
    return path


def export_tflite(model: keras.Model, path: Path, *, temperature: float = 1.0) -> Path:
    """Export the serving form of ``model`` (see ``export_serving``)."""
    return export_serving(serving_model(model, temperature=temperature), path)


def ship(run_dir: Path, destination: Path) -> dict:
    """Copy a run's artifacts (float and whichever quantized ones it has), card and
    serving Keras model to ``destination`` (the worker's); a quantized artifact the
    run lacks is removed there."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / MODEL_FILENAME, destination / MODEL_FILENAME)
    for name in QUANTIZED_FILENAMES.values():
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, destination / name)
        else:
            (destination / name).unlink(missing_ok=True)
    shutil.copyfile(run_dir / CARD_FILENAME, destination / CARD_FILENAME)
    shutil.copyfile(run_dir / SERVING_FILENAME, destination / "model.keras")
    return json.loads((destination / CARD_FILENAME).read_text())


def write_model_card(
    out_dir: Path,
    *,
    architecture: str,
    params: int,
    test_accuracy: float,
    validation_accuracy: float,
    epochs: int,
    seed: int,
    training_seconds: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model_card.json`` beside ``model.tflite`` and return it."""
    digest = sha256_of(out_dir / MODEL_FILENAME)
    card = {
        "version": f"{architecture}-{digest[:12]}",
        "architecture": architecture,
        "params": params,
        "file": MODEL_FILENAME,
        "sha256": digest,
        "input": {"shape": [IMAGE_SIZE, IMAGE_SIZE, 1], "dtype": "float32", "range": [0, 1]},
        "classes": list(CLASS_NAMES),
        "test_accuracy": round(test_accuracy, 4),
        "validation_accuracy": round(validation_accuracy, 4),
        "epochs": epochs,
        "seed": seed,
        "training_seconds": round(training_seconds, 1),
        "trained_on": "Fashion-MNIST train split (60k) less a held-out validation set",
        "date": dt.datetime.now(dt.UTC).date().isoformat(),
        "framework": {"tensorflow": tf.__version__, "keras": keras.__version__},
        **(extra or {}),
    }
    (out_dir / CARD_FILENAME).write_text(json.dumps(card, indent=2) + "\n")
    return card
