"""Fine-tune a trained run on real photos, keeping Fashion-MNIST in the mix.

``fashion finetune-photos RUN --photos DIR/train --out DIR`` loads ``RUN``'s
``model.keras``, and trains it further on its own Fashion-MNIST training images
(the run's validation images stay out) plus the photos of ``DIR/<class>/``,
turned into 28×28 by the worker's own pipeline (``worker.pipeline.preprocess``, cut-out
included) and repeated ``photo_repeat`` times per epoch. Photos carry a *set*
of acceptable classes (``PHOTO_TARGETS``): the loss is −log of the summed
(``--set-loss sum``) or of the largest (``max``) probability in the set, so a
shoe photo may be any of the three shoe classes;
out-of-catalog photos (hat, shorts, skirt) are pulled towards the uniform
distribution, which teaches the ``uncertain`` flag. The augmentation is the
training recipe's. The result is a run folder like ``fashion train``'s (its
card records the fine-tuning), to be combined with ``fashion ensemble``.

Nothing here reads the Fashion-MNIST test split.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.data import NUM_CLASSES, held_out_by, load_fashion_mnist
from training.export import CARD_FILENAME, features_model
from training.photo_data import PHOTO_TARGETS, SET_LOSSES, load_photos, set_loss
from training.train import FIT_RECORD, make_augmenter
from worker.pipeline.preprocess import normalize


def run_card(run_dir: Path) -> dict[str, Any]:
    """A run's model card, or for a run only fitted so far (``fashion train --fit-only``)
    its ``fit.json`` — so photo tuning needs no test figure before a model is chosen."""
    if (run_dir / CARD_FILENAME).is_file():
        return json.loads((run_dir / CARD_FILENAME).read_text())
    if not (run_dir / FIT_RECORD).is_file():
        raise ValueError(f"{run_dir} holds neither {CARD_FILENAME} nor {FIT_RECORD}")
    record = json.loads((run_dir / FIT_RECORD).read_text())
    return {**record, "version": f"{record['architecture']}-s{record['seed']}-fit"}


def finetune_on_photos(
    run_dir: Path,
    photos_dir: Path,
    *,
    out_dir: Path,
    epochs: int = 3,
    learning_rate: float = 3e-4,
    photo_repeat: int = 5,
    loss: str = "max",
    freeze_norm: bool = False,
    batch_size: int = 128,
    limit: int | None = None,
    data_dir: Path | None = None,
    targets: Mapping[str, list[int] | None] = PHOTO_TARGETS,
) -> dict[str, Any]:
    if loss not in SET_LOSSES:  # before minutes of loading photos, not at the first batch
        raise ValueError(f"unknown set loss {loss!r}; choose one of {', '.join(SET_LOSSES)}")
    card = run_card(run_dir)
    seed = int(card["seed"])
    keras.utils.set_random_seed(seed)
    dataset = load_fashion_mnist(data_dir)
    held_out = held_out_by(card, len(dataset.train_images))
    train_index = np.setdiff1d(np.arange(len(dataset.train_images)), held_out)[:limit]
    photo_pixels, photo_masks = load_photos(photos_dir, targets)
    images = np.concatenate([dataset.train_images[train_index], *[photo_pixels] * photo_repeat])
    labels = np.concatenate(
        [
            keras.utils.to_categorical(dataset.train_labels[train_index], NUM_CLASSES),
            *[photo_masks] * photo_repeat,
        ]
    )
    augmenter = make_augmenter(seed)
    batches = (
        tf.data.Dataset.from_tensor_slices((normalize(images), labels))
        .shuffle(len(images), seed=seed)
        .batch(batch_size)
        .map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    member = keras.models.load_model(run_dir / "model.keras", compile=False)
    if freeze_norm:
        # A frozen batch-norm layer runs in inference mode: its statistics stay
        # Fashion-MNIST's instead of drifting towards the photo mix.
        for layer in member.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    model = keras.Model(member.inputs, member.get_layer("logits").output)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * len(batches))
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=card["recipe"]["weight_decay"])
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(optimizer=optimizer, loss=functools.partial(set_loss, reduce=loss))
    started = time.perf_counter()
    history = model.fit(batches, epochs=epochs, verbose=2)
    seconds = time.perf_counter() - started

    logits = features_model(member).predict(
        normalize(dataset.train_images[held_out]), batch_size=1024, verbose=0
    )[0]
    validation_accuracy = float((logits.argmax(1) == dataset.train_labels[held_out]).mean())
    out_dir.mkdir(parents=True, exist_ok=True)
    member.save(out_dir / "model.keras")
    finetuned = {
        **card,
        "version": f"{card['version']}-photos",
        "validation_accuracy": round(validation_accuracy, 4),
        "training_seconds": round(card["training_seconds"] + seconds, 1),
        "photo_finetune": {
            "from": card["version"],
            "dir": str(Path(photos_dir).resolve()),
            "photos": int(len(photo_pixels)),
            "photo_repeat": photo_repeat,
            "epochs": epochs,
            "learning_rate": learning_rate,
            "set_loss": loss,
            "freeze_norm": freeze_norm,
            "seconds": round(seconds, 1),
            "loss": [round(float(v), 4) for v in history.history["loss"]],
        },
    }
    # The test accuracy on the card was the run's before fine-tuning: not carried over.
    finetuned.pop("test_accuracy", None)
    (out_dir / CARD_FILENAME).write_text(json.dumps(finetuned, indent=2) + "\n")
    return finetuned
