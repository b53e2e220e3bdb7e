"""The learning-rate range test (Smith, 2017): one short run with a rising rate.

The learning rate grows exponentially from ``start`` to ``stop`` over ``steps``
batches while the training loss is recorded; the useful range ends a little
before the loss starts to climb. Uses training images only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
from matplotlib.figure import Figure

from training.architectures import RECIPES, make_model
from training.data import NUM_CLASSES, load_fashion_mnist
from worker.pipeline.preprocess import normalize

SMOOTHING = 0.9
DIVERGENCE_FACTOR = 4.0


class _RangeTest(keras.callbacks.Callback):
    def __init__(self, rates: np.ndarray) -> None:
        super().__init__()
        self.rates = rates
        self.losses: list[float] = []
        self._smoothed = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.model.optimizer.learning_rate.assign(float(self.rates[len(self.losses)]))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = len(self.losses) + 1
        self._smoothed = SMOOTHING * self._smoothed + (1 - SMOOTHING) * float(logs["loss"])
        self.losses.append(self._smoothed / (1 - SMOOTHING**step))
        if step >= len(self.rates) or self.losses[-1] > DIVERGENCE_FACTOR * min(self.losses):
            self.model.stop_training = True


def lr_find(
    *,
    arch: str,
    png: Path,
    start: float = 1e-6,
    stop: float = 1.0,
    steps: int = 200,
    data_dir: Path | None = None,
    seed: int = 1,
) -> dict[str, Any]:
    """Run the range test for ``arch``; write the loss-vs-rate plot to ``png``."""
    if not 0 < start < stop:
        raise ValueError("need 0 < start < stop")
    recipe = RECIPES.get(arch)
    if recipe is None:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(RECIPES))}")
    keras.utils.set_random_seed(seed)
    dataset = load_fashion_mnist(data_dir)
    count = min(steps * recipe.batch_size, len(dataset.train_images))
    images = normalize(dataset.train_images[:count])
    labels = keras.utils.to_categorical(dataset.train_labels[:count], NUM_CLASSES)
    model = make_model(arch)
    model.compile(optimizer=keras.optimizers.Adam(start), loss="categorical_crossentropy")
    rates = np.geomspace(start, stop, steps)
    test = _RangeTest(rates)
    model.fit(images, labels, batch_size=recipe.batch_size, epochs=1, callbacks=[test], verbose=0)
    tried = rates[: len(test.losses)]
    losses = np.asarray(test.losses)
    best = int(np.argmin(losses))
    # The rate where the loss falls fastest per decade of learning rate, before
    # the minimum (fastai's "steep" rule); the minimum itself is confounded by
    # training progress in a run this short.
    # The first tenth of the steps is skipped: the smoothed loss is still settling.
    start = len(losses) // 10
    if best - start > 2:
        slopes = np.gradient(losses[start : best + 1], np.log10(tried[start : best + 1]))
        suggestion = float(tried[start + int(np.argmin(slopes))])
    else:
        suggestion = float(tried[best])
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    axes.semilogx(tried, test.losses)
    axes.axvline(suggestion, linestyle="--", color="grey", label=f"suggested {suggestion:.1e}")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss (smoothed)")
    axes.set_title(f"Learning-rate range test, {arch}")
    axes.legend()
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=120)
    return {
        "arch": arch,
        "steps": len(test.losses),
        "min_loss_rate": float(tried[best]),
        "suggested_rate": suggestion,
        "recipe_rate": recipe.learning_rate,
        "png": str(png),
    }
