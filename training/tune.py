"""Hyperparameter search with KerasTuner over report A's space, bounded by trials and time.

Report A tuned filters (32–128), kernel size (3–5) and learning rate
({1e-2, 1e-3, 1e-4}) of its two-convolution network; this reproduces that search.
Trials are scored on the validation split carved from the training images --
never on the test split.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import keras
import keras_tuner
from keras import layers

from training.architectures import INPUT_SHAPE, NUM_CLASSES
from training.data import load_fashion_mnist, train_validation_split
from worker.pipeline.preprocess import normalize

VALIDATION_SIZE = 5_000


def build_seed_a_space(hp: keras_tuner.HyperParameters) -> keras.Model:
    filters = hp.Int("filters", 32, 128, step=32)
    kernel = hp.Choice("kernel_size", [3, 5])
    inputs = keras.Input(shape=INPUT_SHAPE)
    x = layers.Conv2D(filters, kernel, activation="relu")(inputs)
    x = layers.Conv2D(filters, kernel, activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(32, activation="relu")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(hp.Choice("learning_rate", [1e-2, 1e-3, 1e-4])),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def tune(
    *,
    out_dir: Path,
    max_trials: int = 6,
    max_minutes: float = 20.0,
    epochs: int = 2,
    limit: int | None = 20_000,
    seed: int = 1,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """Run up to ``max_trials`` trials, starting no new one after ``max_minutes``."""
    if max_trials < 1 or epochs < 1 or max_minutes <= 0:
        raise ValueError("max_trials, epochs and max_minutes must be positive")
    dataset = load_fashion_mnist(data_dir)
    train_images, train_labels, validation_images, validation_labels = train_validation_split(
        dataset.train_images, dataset.train_labels, validation_size=VALIDATION_SIZE, seed=seed
    )
    if limit is not None:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
    tuner = keras_tuner.RandomSearch(
        build_seed_a_space,
        objective="val_accuracy",
        max_trials=max_trials,
        seed=seed,
        directory=str(out_dir),
        project_name="seed-a",
        overwrite=True,
    )
    deadline = time.monotonic() + max_minutes * 60
    trials_run = 0
    # One trial per search() call, so the time budget is checked between trials.
    while trials_run < max_trials and time.monotonic() < deadline:
        trials_run += 1
        tuner.oracle.max_trials = trials_run
        # KerasTuner reports progress on stdout; keep stdout for our own output.
        with contextlib.redirect_stdout(sys.stderr):
            tuner.search(
                normalize(train_images),
                train_labels,
                validation_data=(normalize(validation_images), validation_labels),
                epochs=epochs,
                batch_size=32,
                verbose=0,
            )
    finished = [trial for trial in tuner.oracle.trials.values() if trial.score is not None]
    if not finished:
        raise RuntimeError("every tuning trial failed; see the log above")
    trials = [
        {
            "hyperparameters": trial.hyperparameters.values,
            "val_accuracy": round(float(trial.score), 4) if trial.score is not None else None,
        }
        for trial in tuner.oracle.get_best_trials(num_trials=trials_run)
    ]
    return {
        "trials": trials,
        "best": trials[0] if trials else None,
        "stopped_by": "trials" if trials_run >= max_trials else "time",
    }
