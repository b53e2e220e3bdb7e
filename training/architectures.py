"""Model factories, one per ``--arch`` name.

Every model takes ``(28, 28, 1)`` float32 inputs scaled to ``[0, 1]`` by
``worker.preprocess.normalize`` and ends in a softmax over the ten classes. The
layer before the classifier is named ``embedding`` so that later stages can read
the penultimate features.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

INPUT_SHAPE = (28, 28, 1)


def make_small_cnn(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Two conv blocks with batch norm: the walking skeleton's first model.

    Small enough to train on a 2-core CPU in a few minutes; the model issue
    replaces it with something stronger.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for filters in (32, 64):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.4)(x)
    x = layers.Dense(128, activation="relu", name="embedding")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


ARCHITECTURES: dict[str, Callable[[tuple[int, int, int], int], keras.Model]] = {
    "small-cnn": make_small_cnn,
}


def make_model(name: str, num_classes: int = 10) -> keras.Model:
    """Build the architecture registered under ``name``."""
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {name!r}; known: {known}") from None
    return factory(INPUT_SHAPE, num_classes)
