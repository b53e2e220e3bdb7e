"""Inference alone, per engine: ``Classifier.predict`` on a batch, as the bulk task calls it.

``fashion bench-inference`` (and the ``engines`` entry of ``fashion bench``) times
every engine of the configured model (``float``; ``int8`` and ``dynamic`` when its
card lists those quantized artifacts) and, with ``--baseline``, every engine of another model, in
interleaved rounds on one process, and reports medians and ratios against the
configured model's float engine.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from worker.pipeline.classifier import Classifier, engines_of
from worker.pipeline.preprocess import normalize, preprocess
from worker.tools.harness import product_photos


def sample_batch(batch: int) -> np.ndarray:
    """``batch`` product photos through the pipeline: uint8 ``(batch, 28, 28)``."""
    photos, _ = product_photos(min(batch, 64))
    pixels = np.stack(
        [preprocess(photo, max_bytes=1 << 24, max_pixels=1 << 24) for photo in photos]
    )
    return np.resize(pixels, (batch, 28, 28))


def measure_engines(
    models: dict[str, Path],
    *,
    batch: int = 64,
    rounds: int = 100,
    threads: int = 1,
) -> dict[str, Any]:
    """Images/s of each (model, engine) at ``batch``, median of interleaved ``rounds``.

    The first model's float engine is the reference of every ``vs_float`` ratio.
    """
    images = normalize(sample_batch(batch))
    runners = {
        f"{name}/{engine}": Classifier(path, engine=engine, num_threads=threads)
        for name, path in models.items()
        for engine in engines_of(path)
    }
    timings: dict[str, list[float]] = {key: [] for key in runners}
    for _ in range(5):
        for classifier in runners.values():
            classifier.predict(images)
    for _ in range(rounds):
        for key, classifier in runners.items():
            start = time.perf_counter()
            classifier.predict(images)
            timings[key].append(time.perf_counter() - start)
    rates = {key: batch / statistics.median(values) for key, values in timings.items()}
    reference = rates[next(iter(runners))]
    return {
        "batch": batch,
        "rounds": rounds,
        "threads": threads,
        "engines": {
            key: {
                "version": runners[key].version,
                "images_per_s": round(rate, 1),
                "vs_float": round(rate / reference, 2),
            }
            for key, rate in rates.items()
        },
    }
