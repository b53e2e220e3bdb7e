"""Seconds per training step of an architecture's recipe, with XLA and without.

``python -m training.bench_step --arch resnet20 --steps 20 --rounds 3`` fits
``steps`` batches of real Fashion-MNIST training images (the recipe's batch size,
augmentation, optimiser and the set loss that ``fashion train`` compiles) in
interleaved rounds — XLA on, then off — and times each batch from a callback,
so tracing and compiling (the first batch of each fit) are left out; it prints
the median seconds per step of each and their ratio. Keras leaves XLA off on CPU-only machines;
``training.train`` turns it on under TensorFlow, and this is the measurement
behind that choice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import keras

from training.architectures import RECIPES, make_model
from training.augment import Batches
from training.data import NUM_CLASSES, load_fashion_mnist
from training.photo_data import SetLoss
from training.train import make_optimizer
from worker.pipeline.preprocess import normalize


class _StepTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def measure_steps(arch: str, *, steps: int = 20, rounds: int = 3) -> dict[str, Any]:
    """Median seconds per step with XLA (``xla``) and without (``no_xla``), and their ratio."""
    recipe = RECIPES[arch]
    dataset = load_fashion_mnist()
    count = steps * recipe.batch_size
    batches = Batches(
        normalize(dataset.train_images[:count]),
        keras.utils.to_categorical(dataset.train_labels[:count], NUM_CLASSES),
        batch_size=recipe.batch_size,
        policy=recipe.augmentation,
        seed=1,
    )
    models = {}
    for xla in (True, False):
        keras.utils.set_random_seed(1)
        model = make_model(arch)
        model.compile(
            optimizer=make_optimizer(recipe, steps, per_epoch_schedule=True),
            loss=SetLoss(),
            jit_compile=xla,
        )
        models[xla] = model
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for xla, model in models.items():
            timer = _StepTimer()
            model.fit(batches, epochs=1, verbose=0, callbacks=[timer])
            seconds[xla].extend(timer.seconds[1:])  # the first step traces and compiles
    xla, no_xla = statistics.median(seconds[True]), statistics.median(seconds[False])
    return {
        "arch": arch,
        "batch_size": recipe.batch_size,
        "steps": steps,
        "rounds": rounds,
        "backend": keras.backend.backend(),
        "xla_s_per_step": round(xla, 4),
        "no_xla_s_per_step": round(no_xla, 4),
        "speedup": round(no_xla / xla, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet20", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, default=20, help="batches per timed fit")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = measure_steps(args.arch, steps=args.steps, rounds=args.rounds)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['arch']}, batch {result['batch_size']}, {result['backend']}: "
        f"{result['xla_s_per_step']:.3f} s/step with XLA, "
        f"{result['no_xla_s_per_step']:.3f} s/step without ({result['speedup']:.2f}×; "
        f"medians of {result['rounds']} rounds of {result['steps']} steps)"
    )


if __name__ == "__main__":
    main()
