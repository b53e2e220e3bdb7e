"""Fit the ``uncertain`` threshold for photos on a busy background.

The card's ``uncertain_threshold`` is fitted on Fashion-MNIST validation tiles
(the lowest confidence at which the answers kept are 97 % right). Real photos
are harder -- the model is right on ~87 % of in-catalog phone photos against
94 % of tiles -- and less confident, so that threshold flags a quarter of the
in-catalog photos customers send: too many to ask each of them to confirm.

The photo threshold is fitted on real photos with a **flag budget**: the
highest threshold (on a 0.01 grid) at which at most ``max_flagged`` of the
in-catalog ("mapped") photos are flagged. Below it sit most out-of-catalog
photos and the least sure answers; the budget is the share of customers the
shop is willing to ask "is this a …?". Only photos whose background is busy
count, since only those are judged with this threshold.

Fit it on photos you will not report on (the shipped card's is fitted on the
development photos' ``train/``, and ``fashion evaluate --photos`` reports on
``validation/``). The command also estimates what the rule does on photos it
was not fitted on: repeated stratified two-fold cross-fitting (fit on half of
each class, measure on the other half) gives the spread of the flagged shares.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from training.photo_data import photo_source, photo_sources
from training.photo_folders import DEFAULT_MAPPING, PhotoFolderError
from training.photos import score_photos
from worker.pipeline.classifier import CARD_FILENAME, Classifier

GRID = np.round(np.arange(0.0, 1.0001, 0.01), 2)


def fit_threshold(confidences: np.ndarray, max_flagged: float) -> float:
    """The highest grid threshold at which at most ``max_flagged`` of ``confidences``
    fall below it (are flagged)."""
    if len(confidences) == 0:
        raise ValueError("no confidences to fit a threshold on")
    if not 0 <= max_flagged < 1:
        raise ValueError(f"max_flagged must be in [0, 1), got {max_flagged}")
    flagged = (np.asarray(confidences)[:, None] < GRID[None, :]).mean(axis=0)
    return float(GRID[flagged <= max_flagged].max())


def cross_fit(
    classes: np.ndarray,
    mapped: np.ndarray,
    confidences: np.ndarray,
    max_flagged: float,
    *,
    repeats: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Flagged shares on photos the threshold was not fitted on.

    Each repeat splits every class at random into two halves, fits on the mapped
    photos of one half and measures both shares on the other, and vice versa.
    """
    rng = np.random.default_rng(seed)
    mapped_flagged, out_flagged, thresholds = [], [], []
    for _ in range(repeats):
        first = np.zeros(len(classes), dtype=bool)
        for name in np.unique(classes):
            members = rng.permutation(np.flatnonzero(classes == name))
            first[members[: len(members) // 2]] = True
        for fit_half in (first, ~first):
            held = ~fit_half
            threshold = fit_threshold(confidences[mapped & fit_half], max_flagged)
            thresholds.append(threshold)
            mapped_flagged.append(float((confidences[mapped & held] < threshold).mean()))
            if (~mapped & held).any():
                out_flagged.append(float((confidences[~mapped & held] < threshold).mean()))

    def spread(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        low, median, high = np.quantile(values, [0.1, 0.5, 0.9])
        return {"p10": round(low, 4), "median": round(median, 4), "p90": round(high, 4)}

    return {
        "repeats": repeats,
        "mapped_flagged": spread(mapped_flagged),
        "out_of_catalog_flagged": spread(out_flagged),
        "threshold": spread(thresholds),
    }


def fit_photo_threshold(
    folder: Path,
    model: Path,
    *,
    mapping: dict[str, list[int] | str | None] | None = None,
    max_flagged: float = 0.12,
    repeats: int = 200,
    write: bool = False,
) -> dict[str, Any]:
    """Fit the photo threshold of ``model`` on ``folder``; with ``write``, store it in
    the model card beside ``model`` (the ``.tflite`` itself is unchanged)."""
    mapping = dict(DEFAULT_MAPPING if mapping is None else mapping)
    classifier = Classifier(model)
    rows, unreadable = score_photos(folder, classifier, mapping)
    busy = [row for row in rows if row["busy_background"]]
    classes = np.array([row["class"] for row in busy])
    mapped = np.array([mapping[row["class"]] is not None for row in busy], dtype=bool)
    if not mapped.any():
        raise PhotoFolderError(f"{folder}: no photo of a mapped class on a busy background")
    confidences = np.array([row["judged_confidence"] for row in busy])
    correct = np.array([bool(row.get("correct", False)) for row in busy])
    threshold = fit_threshold(confidences[mapped], max_flagged)
    kept = mapped & (confidences >= threshold)
    fit = {
        "folder": str(folder),
        "rule": "highest threshold (0.01 grid) flagging at most max_flagged of the mapped "
        "photos on a busy background",
        "max_flagged": max_flagged,
        "photos": len(busy),
        "mapped_photos": int(mapped.sum()),
        "out_of_catalog_photos": int((~mapped).sum()),
        "plain_background_photos_left_out": len(rows) - len(busy),
        "mapped_flagged": round(float((confidences[mapped] < threshold).mean()), 4),
        "out_of_catalog_flagged": (
            round(float((confidences[~mapped] < threshold).mean()), 4) if (~mapped).any() else None
        ),
        "accuracy_kept": round(float(correct[kept].mean()), 4) if kept.any() else None,
        "accuracy_all": round(float(correct[mapped].mean()), 4),
        "cross_fit": cross_fit(classes, mapped, confidences, max_flagged, repeats=repeats),
        "date": dt.date.today().isoformat(),
    }
    result = {
        "warning": _trained_on(classifier.card, folder),
        "model_version": classifier.version,
        "uncertain_threshold": classifier.uncertain_threshold,
        "previous_photo_uncertain_threshold": classifier.card.get("photo_uncertain_threshold"),
        "photo_uncertain_threshold": threshold,
        "fit": fit,
        "unreadable": unreadable,
        "written": None,
    }
    if write:
        card_path = model.with_name(CARD_FILENAME)
        card = json.loads(card_path.read_text())
        card["photo_uncertain_threshold"] = threshold
        card["photo_threshold_fit"] = fit
        card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        result["written"] = str(card_path)
    return result


def _trained_on(card: dict[str, Any], folder: Path) -> str | None:
    """A warning when the model's card says it, or one of its members, trained on
    ``folder`` (or a pack of it), from the first epoch or by photo fine-tuning: it is
    surer on those photos than on new ones, so a threshold fitted there flags more new
    photos than its budget (docs/model.md: 10 % there, 19.5 % on unseen)."""
    if not any(
        Path(source).exists() and photo_source(Path(source)).resolve() == folder.resolve()
        for source in photo_sources(card)
    ):
        return None
    return (
        f"{card['version']} was trained on {folder}: it is surer on these photos than on "
        "new ones, so this threshold will flag more than the budget on new photos; fit it "
        "on photos the model never saw (fashion split-photos, then train on fit/)"
    )
