"""Score a model on real photos laid out as ``<folder>/<class>/<image>``.

Each photo goes through the worker's own pipeline (``worker.pipeline.preprocess`` then
``worker.pipeline.classifier``), so the figures are what a customer gets. Photo classes
are mapped onto Fashion-MNIST classes (``DEFAULT_MAPPING``, matching
``../shared/data/clothing-photos``; another folder brings a JSON mapping file):

- a class mapped to one or more Fashion-MNIST classes is scored: a photo is
  right when the summed probability of its classes beats every other class
  (so a shoe photo may be any of Sandal, Sneaker, Ankle boot);
- a class mapped to ``null`` is not in the catalog: the photo should come back
  ``uncertain`` (calibrated confidence below the model card's threshold: its
  photo threshold for a photo on a busy background, as in the worker);
- a class mapped to ``"skip"``, or missing from the mapping, is not scored.

Reports accuracy over the scored photos, per class, the confusion of scored
classes against predicted Fashion-MNIST classes, the share of out-of-catalog
photos flagged ``uncertain`` and of scored photos flagged ``uncertain``; with a
report folder, a PNG grid of examples (the photo, what the model saw, the label).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageOps

from training.data import CLASS_NAMES
from training.photo_folders import (
    DEFAULT_MAPPING,
    MAX_BYTES,
    MAX_PIXELS,
    PhotoFolderError,
    photo_files,
)
from worker.errors import ImageError
from worker.pipeline.classifier import Classifier, judged_confidence
from worker.pipeline.preprocess import normalize, prepare

GRID_PER_CLASS = 3


def score_photos(
    folder: Path,
    classifier: Classifier,
    mapping: Mapping[str, list[int] | str | None],
    *,
    cutout: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each scored or out-of-catalog photo through the worker's pipeline.

    Returns rows (``class``, ``path``, ``pixels``, ``busy_background``,
    ``probabilities``, ``uncertain`` and, for a mapped class, ``correct``) and
    the unreadable files (path → error code).
    """
    rows, unreadable = read_photos(folder, mapping, cutout=cutout)
    return judge_photos(rows, classifier, mapping), unreadable


def read_photos(
    folder: Path, mapping: Mapping[str, list[int] | str | None], *, cutout: bool = True
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The worker's preprocessing of each scored or out-of-catalog photo: rows
    (``class``, ``path``, ``pixels``, ``busy_background``) and the unreadable files
    (path → error code)."""
    files = photo_files(folder)
    rows: list[dict[str, Any]] = []
    unreadable: dict[str, str] = {}
    for name, paths in files.items():
        target = mapping.get(name, "skip")
        if target == "skip":
            continue
        for path in paths:
            try:
                prepared = prepare(
                    path.read_bytes(), max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, cutout=cutout
                )
            except ImageError as exc:
                unreadable[str(path)] = exc.code
                continue
            rows.append(
                {
                    "class": name,
                    "path": path,
                    "pixels": prepared.pixels,
                    "busy_background": prepared.busy_background,
                }
            )
    if not rows:
        raise PhotoFolderError(f"{folder}: no photo of a scored or out-of-catalog class")
    return rows, unreadable


def judge_photos(
    rows: list[dict[str, Any]],
    classifier: Classifier,
    mapping: Mapping[str, list[int] | str | None],
) -> list[dict[str, Any]]:
    """``read_photos``'s rows, each a copy with what ``classifier`` made of it:
    ``probabilities``, ``judged_confidence``, ``uncertain`` and, for a mapped
    class, ``correct`` (the summed probability of its classes beats every other)."""
    probabilities = classifier.predict_proba(normalize(np.stack([r["pixels"] for r in rows])))
    thresholds = classifier.thresholds([r["busy_background"] for r in rows])
    judged = judged_confidence(probabilities)
    judged_rows = []
    for row, p, threshold, sure in zip(rows, probabilities, thresholds, judged, strict=True):
        row = {**row, "probabilities": p, "judged_confidence": float(sure)}
        row["uncertain"] = bool(sure < threshold)
        target = mapping[row["class"]]
        if target is not None:
            inside = p[target].sum()
            outside = np.delete(p, target).max()
            row["correct"] = bool(inside > outside)
        judged_rows.append(row)
    return judged_rows


def evaluate_photos(
    folder: Path,
    classifier: Classifier,
    *,
    mapping: Mapping[str, list[int] | str | None] | None = None,
    report_dir: Path | None = None,
    cutout: bool = True,
) -> dict[str, Any]:
    mapping = dict(DEFAULT_MAPPING if mapping is None else mapping)
    rows, unreadable = score_photos(folder, classifier, mapping, cutout=cutout)

    scored = [r for r in rows if mapping[r["class"]] is not None]
    out_of_catalog = [r for r in rows if mapping[r["class"]] is None]
    scored_classes = sorted({r["class"] for r in scored})
    per_class = {
        name: {
            "accuracy": share([r["correct"] for r in scored if r["class"] == name]),
            "uncertain": share([r["uncertain"] for r in scored if r["class"] == name]),
            "photos": sum(1 for r in scored if r["class"] == name),
        }
        for name in scored_classes
    }
    confusion = {
        name: np.bincount(
            [int(r["probabilities"].argmax()) for r in scored if r["class"] == name],
            minlength=len(CLASS_NAMES),
        ).tolist()
        for name in scored_classes
    }
    result: dict[str, Any] = {
        "model_version": classifier.version,
        "engine": classifier.engine,
        "folder": str(folder),
        "cutout": cutout,
        "photos": len(rows),
        "scored_photos": len(scored),
        "accuracy": share([r["correct"] for r in scored]),
        "per_class": per_class,
        "min_class_accuracy": min((c["accuracy"] for c in per_class.values()), default=None),
        "confusion": {"columns": list(CLASS_NAMES), "rows": confusion},
        "uncertain_threshold": classifier.uncertain_threshold,
        "photo_uncertain_threshold": classifier.photo_uncertain_threshold,
        "busy_background": share([r["busy_background"] for r in rows]),
        "uncertain_scored": share([r["uncertain"] for r in scored]),
        "out_of_catalog_photos": len(out_of_catalog),
        "uncertain_out_of_catalog": share([r["uncertain"] for r in out_of_catalog]),
        "unreadable": unreadable,
        "mapping": mapping,
    }
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        result["plots"] = {"examples": str(plot_examples(rows, report_dir / "photo-examples.png"))}
    return result


def share(flags: list[bool]) -> float | None:
    """The share of true flags, to 4 decimals; None for no flags."""
    return round(float(np.mean(flags)), 4) if flags else None


def plot_examples(rows: list[dict[str, Any]], path: Path) -> Path:
    """A grid of examples per class: the photo, what the model saw, its answer."""
    classes = sorted({r["class"] for r in rows})
    picked = [
        example
        for name in classes
        for example in [r for r in rows if r["class"] == name][:GRID_PER_CLASS]
    ]
    columns = 2 * GRID_PER_CLASS
    figure_rows = len(classes)
    figure = Figure(figsize=(columns * 1.6, figure_rows * 1.9))
    axes = np.atleast_2d(figure.subplots(figure_rows, columns))
    for axis in axes.ravel():
        axis.axis("off")
    for row_index, name in enumerate(classes):
        examples = [r for r in picked if r["class"] == name]
        for k, example in enumerate(examples):
            with Image.open(example["path"]) as photo:
                shown = ImageOps.exif_transpose(photo).convert("RGB")
                shown.thumbnail((160, 160))
                axes[row_index, 2 * k].imshow(np.asarray(shown))
            axes[row_index, 2 * k].set_title(name, fontsize=7)
            said = CLASS_NAMES[int(example["probabilities"].argmax())]
            flag = " ?" if example["uncertain"] else ""
            mark = {True: "right", False: "wrong"}.get(example.get("correct"), "")
            axes[row_index, 2 * k + 1].imshow(example["pixels"], cmap="gray")
            axes[row_index, 2 * k + 1].set_title(f"{said}{flag} {mark}".strip(), fontsize=7)
    figure.suptitle("Photo → what the model saw → its answer (? = uncertain)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
