"""Train one architecture on Fashion-MNIST, calibrate it, and export it for the worker.

Run as ``fashion train --arch fashion-vgg --out runs/vgg-s1``. Reading top to
bottom: carve a validation set out of the 60 k training images; fit with the
architecture's recipe, keeping the weights with the best *validation* accuracy;
fit a softmax temperature on the validation logits; measure the test split once,
for the model card; export ``model.keras`` and the LiteRT ``model.tflite``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.architectures import RECIPES, Recipe, make_model
from training.calibrate import (
    calibrated_probabilities,
    choose_uncertain_threshold,
    expected_calibration_error,
    fit_temperature,
    risk_coverage,
)
from training.data import NUM_CLASSES, dataset_sha256, load_fashion_mnist, train_validation_split
from training.export import MODEL_FILENAME, export_tflite, logits_model, write_model_card
from worker.pipeline.preprocess import normalize


@dataclass(frozen=True)
class TrainingResult:
    out_dir: Path
    card: dict[str, Any]


def make_augmenter(seed: int) -> keras.Sequential:
    """Flips, shifts of up to ~3 px and random erasing: label-preserving for clothing."""
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
            keras.layers.RandomErasing(
                factor=0.5, scale=(0.02, 0.15), value_range=(0.0, 1.0), seed=seed
            ),
        ],
        name="augment",
    )


def make_dataset(
    images: np.ndarray, labels: np.ndarray, recipe: Recipe, *, seed: int, training: bool
) -> tf.data.Dataset:
    one_hot = keras.utils.to_categorical(labels, NUM_CLASSES)
    dataset = tf.data.Dataset.from_tensor_slices((normalize(images), one_hot))
    if training:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(recipe.batch_size)
    if training and recipe.augment:
        augmenter = make_augmenter(seed)
        dataset = dataset.map(
            lambda batch, target: (augmenter(batch, training=True), target),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_optimizer(recipe: Recipe, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = recipe.learning_rate
    if recipe.cosine_schedule:
        total_steps = recipe.epochs * steps_per_epoch
        # Short smoke runs keep at most a quarter of their steps for warm-up.
        warmup_steps = min(recipe.warmup_epochs * steps_per_epoch, total_steps // 4)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.learning_rate / 10
            if warmup_steps
            else recipe.learning_rate,
            decay_steps=total_steps - warmup_steps,
            warmup_target=recipe.learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    if recipe.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=recipe.weight_decay)
        # Decay the weights that shape features, not the norm scales and shifts or biases.
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        return optimizer
    return keras.optimizers.Adam(learning_rate)


def train(
    *,
    arch: str,
    out_dir: Path,
    seed: int = 1,
    split_seed: int | None = None,
    epochs: int | None = None,
    limit: int | None = None,
    data_dir: Path | None = None,
    verbose: int | None = None,
) -> TrainingResult:
    """Fit ``arch`` with its recipe, calibrate on validation, export; returns the model card.

    ``limit`` trains on the first ``limit`` training images only (smoke runs).
    ``split_seed`` picks the validation images (default: ``seed``); giving runs
    of different seeds one split keeps a common held-out set for ensembling.
    """
    if arch not in RECIPES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[arch] if epochs is None else replace(RECIPES[arch], epochs=epochs)
    if recipe.epochs < 1:
        raise ValueError("epochs must be at least 1")
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    keras.utils.set_random_seed(seed)
    dataset = load_fashion_mnist(data_dir)
    train_images, train_labels, validation_images, validation_labels = train_validation_split(
        dataset.train_images,
        dataset.train_labels,
        validation_size=recipe.validation_size,
        seed=seed if split_seed is None else split_seed,
    )
    if limit is not None:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
        validation_images, validation_labels = validation_images[:limit], validation_labels[:limit]

    model = make_model(arch, NUM_CLASSES)
    steps_per_epoch = int(np.ceil(len(train_images) / recipe.batch_size))
    model.compile(
        optimizer=make_optimizer(recipe, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / "model.keras"
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.CSVLogger(str(out_dir / "history.csv")),
        # Model selection looks at the validation split only, never the test set.
        keras.callbacks.ModelCheckpoint(
            str(checkpoint_path), monitor="val_accuracy", save_best_only=True
        ),
    ]
    if recipe.early_stopping_patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=recipe.early_stopping_patience
            )
        )
    started = time.perf_counter()
    history = model.fit(
        make_dataset(train_images, train_labels, recipe, seed=seed, training=True),
        validation_data=make_dataset(
            validation_images, validation_labels, recipe, seed=seed, training=False
        ),
        epochs=recipe.epochs,
        callbacks=callbacks,
        verbose=verbose,
    )
    training_seconds = time.perf_counter() - started

    best = keras.models.load_model(checkpoint_path)
    to_logits = logits_model(best)
    validation_logits = to_logits.predict(normalize(validation_images), verbose=0)
    temperature = fit_temperature(validation_logits, validation_labels)
    validation_accuracy = float((validation_logits.argmax(1) == validation_labels).mean())
    validation_probabilities = calibrated_probabilities(validation_logits, temperature)
    uncertain_threshold = choose_uncertain_threshold(validation_probabilities, validation_labels)

    # The one use of the test split: measuring the finished, calibrated model.
    test_logits = to_logits.predict(normalize(dataset.test_images), verbose=0)
    test_probabilities = calibrated_probabilities(test_logits, temperature)
    test_accuracy = float((test_probabilities.argmax(1) == dataset.test_labels).mean())
    test_ece = expected_calibration_error(test_probabilities, dataset.test_labels)
    uncalibrated_ece = expected_calibration_error(
        calibrated_probabilities(test_logits, 1.0), dataset.test_labels
    )

    export_tflite(best, out_dir / MODEL_FILENAME, temperature=temperature)
    card = write_model_card(
        out_dir,
        architecture=arch,
        params=best.count_params(),
        test_accuracy=test_accuracy,
        validation_accuracy=validation_accuracy,
        epochs=len(history.history["loss"]),
        seed=seed,
        training_seconds=training_seconds,
        extra={
            "split_seed": seed if split_seed is None else split_seed,
            "temperature": round(temperature, 4),
            "uncertain_threshold": uncertain_threshold,
            "validation_risk_coverage": risk_coverage(
                validation_probabilities, validation_labels, np.arange(0.5, 1.0, 0.05)
            ),
            "test_ece": round(test_ece, 4),
            "test_ece_uncalibrated": round(uncalibrated_ece, 4),
            "train_images": len(train_images),
            "validation_images": len(validation_images),
            "recipe": {key: value for key, value in recipe.__dict__.items()},
            "dataset_sha256": dataset_sha256(dataset.source),
        },
    )
    return TrainingResult(out_dir, card)
