"""``fashion bench-photos``: what the cut-out step costs, per photo, on one core.

Each photo of a folder (``<class>/<image>``, e.g. the development photos) is
read into memory, then preprocessed and classified alone (batch of one, as an
upload is), with and without the foreground cut-out, the two interleaved photo
by photo so both see the same machine. The process is pinned to one core.
Prints p50/p95 per photo for both, their ratio, and the single-core throughput
both ways (what a bulk run of such photos would lose).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from worker.errors import ImageError
from worker.pipeline.classifier import Classifier
from worker.pipeline.preprocess import prepare
from worker.tools.benchmark import percentiles

LIMITS = {"max_bytes": 50 * 1024 * 1024, "max_pixels": 100_000_000}


def run_photo_bench(
    folder: Path, classifier: Classifier, *, rounds: int = 1, limit: int | None = None
) -> dict[str, Any]:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    paths = sorted(p for p in folder.glob("*/*") if p.is_file())[:limit]
    photos = [p.read_bytes() for p in paths]
    if not photos:
        raise ValueError(f"{folder} has no <class>/<image> files")
    timings: dict[str, list[float]] = {"with_cutout": [], "without_cutout": []}
    for data in photos[:3]:  # warm-up: the interpreter and OpenCV's first calls
        for cutout in (True, False):
            _classify(data, classifier, cutout)
    for _ in range(rounds):
        for data in photos:
            for cutout in (True, False):
                started = time.perf_counter()
                ok = _classify(data, classifier, cutout)
                elapsed = (time.perf_counter() - started) * 1000
                if ok:
                    timings["with_cutout" if cutout else "without_cutout"].append(elapsed)
    sizes = np.array([Image.open(io.BytesIO(data)).size for data in photos])
    result = {
        "photos": len(photos),
        "rounds": rounds,
        "median_size": [int(v) for v in np.median(sizes, axis=0)],
        "cores": 1,
        **{name: percentiles(samples) for name, samples in timings.items()},
    }
    with_cut, without = result["with_cutout"], result["without_cutout"]
    result["p95_ratio"] = round(with_cut["p95"] / without["p95"], 2)
    result["throughput_per_core"] = {
        name: round(1000 / float(np.mean(samples)), 1) for name, samples in timings.items()
    }
    return result


def _classify(data: bytes, classifier: Classifier, cutout: bool) -> bool:
    try:
        prepared = prepare(data, cutout=cutout, **LIMITS)
    except ImageError:
        return False
    classifier.classify([prepared])
    return True
