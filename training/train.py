"""Train one architecture on Fashion-MNIST and export it for the worker.

Run as ``fashion train --arch small-cnn --epochs 6 --out DIR``. The validation set
is carved out of the 60 k training images; the 10 k test images are touched once,
after training, to report the accuracy written on the model card.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from training.architectures import make_model
from training.data import NUM_CLASSES, load_fashion_mnist, train_validation_split
from training.export import MODEL_FILENAME, export_tflite, write_model_card
from worker.preprocess import normalize

VALIDATION_SIZE = 5_000
BATCH_SIZE = 128
LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class TrainingResult:
    out_dir: Path
    validation_accuracy: float
    test_accuracy: float
    card: dict


def train(
    *,
    arch: str,
    epochs: int,
    seed: int,
    out_dir: Path,
    data_dir: Path | None = None,
    verbose: int = 1,
) -> TrainingResult:
    """Fit ``arch``, keep the weights with the best validation accuracy, export them."""
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    keras.utils.set_random_seed(seed)
    dataset = load_fashion_mnist(data_dir)
    train_images, train_labels, validation_images, validation_labels = train_validation_split(
        dataset.train_images, dataset.train_labels, validation_size=VALIDATION_SIZE, seed=seed
    )
    model = make_model(arch, NUM_CLASSES)
    steps = epochs * int(np.ceil(len(train_images) / BATCH_SIZE))
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / "model.keras"
    callbacks = [
        keras.callbacks.CSVLogger(str(out_dir / "history.csv")),
        # Model selection uses the validation split only, never the test set.
        keras.callbacks.ModelCheckpoint(
            str(checkpoint_path), monitor="val_accuracy", save_best_only=True
        ),
    ]
    started = time.perf_counter()
    model.fit(
        normalize(train_images),
        train_labels,
        validation_data=(normalize(validation_images), validation_labels),
        epochs=epochs,
        batch_size=BATCH_SIZE,
        callbacks=callbacks,
        verbose=verbose,
    )
    training_seconds = time.perf_counter() - started
    best = keras.models.load_model(checkpoint_path)
    _, validation_accuracy = best.evaluate(
        normalize(validation_images), validation_labels, verbose=0
    )
    _, test_accuracy = best.evaluate(normalize(dataset.test_images), dataset.test_labels, verbose=0)
    export_tflite(best, out_dir / MODEL_FILENAME)
    card = write_model_card(
        out_dir,
        architecture=arch,
        params=best.count_params(),
        test_accuracy=float(test_accuracy),
        validation_accuracy=float(validation_accuracy),
        epochs=epochs,
        seed=seed,
        training_seconds=training_seconds,
    )
    return TrainingResult(out_dir, float(validation_accuracy), float(test_accuracy), card)
