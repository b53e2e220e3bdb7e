"""Evaluate a model artifact on the Fashion-MNIST test split, exactly as the worker runs it.

The ``.tflite`` goes through ``worker.pipeline.classifier.Classifier`` -- the code path
that serves customers -- so what is reported is what ships. Reports accuracy,
per-class precision/recall/F1, the confusion matrix, expected calibration error,
and with ``report_dir`` three PNGs: the confusion matrix, a reliability diagram
and a gallery of the most confident mistakes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from training.calibrate import expected_calibration_error, reliability_bins
from training.data import CLASS_NAMES, load_fashion_mnist
from worker.pipeline.classifier import Classifier
from worker.pipeline.preprocess import normalize

BATCH_SIZE = 1024
GALLERY_SIZE = 24


def predict_in_batches(classifier: Classifier, images: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [
            classifier.predict_proba(normalize(images[start : start + BATCH_SIZE]))
            for start in range(0, len(images), BATCH_SIZE)
        ]
    )


def evaluate(
    model_path: Path,
    *,
    data_dir: Path | None = None,
    report_dir: Path | None = None,
    engine: str | None = None,
) -> dict[str, Any]:
    classifier = Classifier(model_path, engine=engine)
    dataset = load_fashion_mnist(data_dir)
    labels = dataset.test_labels
    probabilities = predict_in_batches(classifier, dataset.test_images)
    predictions = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=range(len(CLASS_NAMES)), zero_division=0
    )
    matrix = confusion_matrix(labels, predictions, labels=range(len(CLASS_NAMES)))
    bins = reliability_bins(probabilities, labels)
    result: dict[str, Any] = {
        "model_version": classifier.version,
        "engine": classifier.engine,
        "model_path": str(model_path),
        "images": len(labels),
        "accuracy": round(float((predictions == labels).mean()), 4),
        "ece": round(expected_calibration_error(probabilities, labels), 4),
        "per_class": {
            name: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
                "support": int(support[i]),
            }
            for i, name in enumerate(CLASS_NAMES)
        },
        "confusion_matrix": matrix.tolist(),
        "reliability": bins,
    }
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        result["plots"] = {
            "confusion_matrix": str(plot_confusion(matrix, report_dir / "confusion_matrix.png")),
            "reliability": str(
                plot_reliability(bins, result["ece"], report_dir / "reliability.png")
            ),
            "mistakes": str(
                plot_mistakes(
                    dataset.test_images, labels, probabilities, report_dir / "mistakes.png"
                )
            ),
        }
    return result


def plot_confusion(matrix: np.ndarray, path: Path) -> Path:
    figure = Figure(figsize=(8, 7))
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=45, ha="right")
    axes.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = matrix.max() / 2
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > threshold else "black"
        axes.text(column, row, str(count), ha="center", va="center", fontsize=8, color=colour)
    axes.set_title("Confusion matrix, Fashion-MNIST test split")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def plot_reliability(bins: list[dict[str, float]], ece: float, path: Path) -> Path:
    figure = Figure(figsize=(5, 5))
    axes = figure.subplots()
    filled = [row for row in bins if row["count"]]
    centres = [(row["low"] + row["high"]) / 2 for row in filled]
    width = bins[0]["high"] - bins[0]["low"]
    axes.bar(
        centres,
        [row["accuracy"] for row in filled],
        width=width,
        edgecolor="black",
        label="accuracy",
    )
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axes.plot(
        centres, [row["confidence"] for row in filled], "o", color="red", label="mean confidence"
    )
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(f"Reliability diagram (ECE {ece:.2%})")
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def plot_mistakes(
    images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, path: Path
) -> Path:
    predictions = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predictions != labels)
    worst = wrong[np.argsort(-probabilities[wrong].max(axis=1))][:GALLERY_SIZE]
    columns = 6
    rows = max(1, int(np.ceil(len(worst) / columns)))
    figure = Figure(figsize=(columns * 1.9, rows * 2.2))
    axes = figure.subplots(rows, columns)
    for axis in np.ravel(axes):
        axis.axis("off")
    for axis, index in zip(np.ravel(axes), worst, strict=False):
        axis.imshow(images[index], cmap="gray")
        axis.set_title(
            f"true {CLASS_NAMES[labels[index]]}\nsaid {CLASS_NAMES[predictions[index]]}"
            f" {probabilities[index].max():.0%}",
            fontsize=7,
        )
    figure.suptitle("Most confident mistakes")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path
