"""Two models judged on the same real photos, photo by photo (``fashion compare-photos``).

On a few hundred photos, two equally good models differ by several photos, so a
release compares its candidate with the shipped model *paired*. The photos both
models get right, or both get wrong, say nothing about which model is better;
only the discordant ones do. Reported:

- each model's accuracy on the mapped photos and its flag rates;
- the discordant counts and the photos themselves;
- the exact McNemar test (scipy's two-sided binomial test on the discordant
  photos) and the standard error of the paired difference;
- with a margin, whether the candidate is non-inferior, that is, whether it gets
  at most ``margin`` fewer photos right than the baseline.

The photos go through the worker's preprocessing once; each model judges the same
28×28 inputs (``training.photos.read_photos`` / ``judge_photos``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from training.photo_folders import DEFAULT_MAPPING, PhotoFolderError
from training.photos import judge_photos, read_photos, share
from worker.pipeline.classifier import Classifier

ROLES = ("candidate", "baseline")


def compare_photos(
    folder: Path,
    candidate: Classifier,
    baseline: Classifier,
    *,
    mapping: Mapping[str, list[int] | str | None] | None = None,
    margin: int | None = None,
    cutout: bool = True,
) -> dict[str, Any]:
    """Judge ``folder``'s photos with both models and compare them photo by photo.

    ``margin`` (photos): the candidate is non-inferior when it gets at most this
    many fewer mapped photos right than the baseline.
    """
    mapping = dict(DEFAULT_MAPPING if mapping is None else mapping)
    rows, unreadable = read_photos(folder, mapping, cutout=cutout)
    models = dict(zip(ROLES, (candidate, baseline), strict=True))
    judged = {role: judge_photos(rows, model, mapping) for role, model in models.items()}
    mapped = [i for i, row in enumerate(rows) if mapping[row["class"]] is not None]
    if not mapped:
        raise PhotoFolderError(f"{folder}: no photo of a mapped class to compare the models on")
    out_of_catalog = [i for i, row in enumerate(rows) if mapping[row["class"]] is None]
    right = {role: np.array([judged[role][i]["correct"] for i in mapped]) for role in ROLES}
    only_candidate = right["candidate"] & ~right["baseline"]
    only_baseline = right["baseline"] & ~right["candidate"]
    count = len(mapped)
    wins, losses = int(only_candidate.sum()), int(only_baseline.sum())
    difference = wins - losses

    def flagged(role: str, indices: list[int]) -> float | None:
        return share([judged[role][i]["uncertain"] for i in indices])

    def paths(which: np.ndarray) -> list[str]:
        return [str(rows[mapped[k]]["path"]) for k in np.flatnonzero(which)]

    figures = {
        role: {
            "model_version": model.version,
            "engine": model.engine,
            "correct": int(right[role].sum()),
            "accuracy": share(list(right[role])),
            "uncertain_scored": flagged(role, mapped),
            "uncertain_out_of_catalog": flagged(role, out_of_catalog),
        }
        for role, model in models.items()
    }
    discordant = wins + losses
    return {
        "folder": str(folder),
        "cutout": cutout,
        "scored_photos": count,
        "out_of_catalog_photos": len(out_of_catalog),
        "models": figures,
        "both_right": int((right["candidate"] & right["baseline"]).sum()),
        "both_wrong": int((~right["candidate"] & ~right["baseline"]).sum()),
        "only_candidate": wins,
        "only_baseline": losses,
        "difference_photos": difference,
        "difference": round(difference / count, 4),
        # The standard error of the mean of the paired differences (each -1, 0 or 1).
        "standard_error": round(math.sqrt(discordant - difference**2 / count) / count, 4),
        "mcnemar_p": round(float(binomtest(wins, discordant).pvalue), 4) if discordant else 1.0,
        "margin_photos": margin,
        "non_inferior": None if margin is None else difference >= -margin,
        "only_candidate_photos": paths(only_candidate),
        "only_baseline_photos": paths(only_baseline),
        "unreadable": unreadable,
        "mapping": mapping,
    }
