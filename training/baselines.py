"""The classic machine-learning comparison from the fifth earlier report (scikit-learn).

Five models on the same split the CNNs use: k-nearest neighbours and the three
textbook Gaussian discriminant classifiers on PCA features -- shared spherical
covariance (nearest class mean), shared full covariance (LDA) and per-class
covariance (QDA) -- and a 3-layer MLP on pixels, once with the inputs scaled to
[0, 1] and once on raw 0–255 values (the report's "unnormalised inputs cost ~20
points"). Each is scored on the built-in test split and, optionally, by k-fold
cross-validation on the 60 k training images (PCA is fitted inside each fold).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import (
    LinearDiscriminantAnalysis,
    QuadraticDiscriminantAnalysis,
)
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from training.data import load_fashion_mnist

PCA_COMPONENTS = 50
SEED = 0


def _scale(images: np.ndarray) -> np.ndarray:
    return images / 255.0


def _on_pca(classifier: BaseEstimator) -> BaseEstimator:
    return make_pipeline(
        FunctionTransformer(_scale), PCA(PCA_COMPONENTS, random_state=SEED), classifier
    )


def _mlp(*, normalised: bool) -> BaseEstimator:
    mlp = MLPClassifier(
        hidden_layer_sizes=(256, 128),
        early_stopping=True,
        max_iter=40,
        random_state=SEED,
    )
    return make_pipeline(FunctionTransformer(_scale), mlp) if normalised else mlp


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    make: Callable[[], BaseEstimator]


BASELINES = (
    Baseline(
        "knn",
        f"k-nearest neighbours (k=5) on PCA-{PCA_COMPONENTS}",
        lambda: _on_pca(KNeighborsClassifier(5)),
    ),
    Baseline(
        "nearest-mean",
        f"Gaussian, shared spherical covariance (nearest mean) on PCA-{PCA_COMPONENTS}",
        lambda: _on_pca(NearestCentroid()),
    ),
    Baseline(
        "lda",
        f"Gaussian, shared full covariance (LDA) on PCA-{PCA_COMPONENTS}",
        lambda: _on_pca(LinearDiscriminantAnalysis()),
    ),
    Baseline(
        "qda",
        f"Gaussian, per-class covariance (QDA) on PCA-{PCA_COMPONENTS}",
        lambda: _on_pca(QuadraticDiscriminantAnalysis(reg_param=0.01)),
    ),
    Baseline("mlp", "3-layer MLP (256-128-10), inputs in [0, 1]", lambda: _mlp(normalised=True)),
    Baseline("mlp-raw", "the same MLP on raw 0-255 inputs", lambda: _mlp(normalised=False)),
)


def run_baselines(
    *,
    cv: int = 10,
    only: list[str] | None = None,
    data_dir: Path | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Fit each baseline on the training split, score it on the test split (and by CV)."""
    if cv == 1 or cv < 0:
        raise ValueError("cv must be 0 (no cross-validation) or at least 2")
    known = {baseline.name for baseline in BASELINES}
    unknown = set(only or []) - known
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; known: {sorted(known)}")
    dataset = load_fashion_mnist(data_dir)
    train_images = dataset.train_images.reshape(len(dataset.train_images), -1).astype(np.float32)
    test_images = dataset.test_images.reshape(len(dataset.test_images), -1).astype(np.float32)
    rows = []
    for baseline in BASELINES:
        if only and baseline.name not in only:
            continue
        if on_progress:
            on_progress(baseline.name)
        started = time.perf_counter()
        model = baseline.make().fit(train_images, dataset.train_labels)
        test_accuracy = float(model.score(test_images, dataset.test_labels))
        row: dict[str, Any] = {
            "name": baseline.name,
            "description": baseline.description,
            "test_accuracy": round(test_accuracy, 4),
            "fit_and_test_seconds": round(time.perf_counter() - started, 1),
        }
        if cv:
            folds = StratifiedKFold(cv, shuffle=True, random_state=SEED)
            scores = cross_val_score(
                baseline.make(), train_images, dataset.train_labels, cv=folds, n_jobs=1
            )
            row["cv_folds"] = cv
            row["cv_mean"] = round(float(scores.mean()), 4)
            row["cv_std"] = round(float(scores.std()), 4)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]], cnn_cards: list[dict[str, Any]] = ()) -> str:
    """Classic rows and CNN model-card rows in one table."""
    lines = [
        "| model | test accuracy | CV mean ± std |",
        "|---|---|---|",
    ]
    for row in rows:
        cv = (
            f"{row['cv_mean']:.4f} ± {row['cv_std']:.4f} ({row['cv_folds']}-fold)"
            if "cv_mean" in row
            else "–"
        )
        lines.append(f"| {row['name']}: {row['description']} | {row['test_accuracy']:.4f} | {cv} |")
    for card in cnn_cards:
        name = f"CNN {card['architecture']} (seed {card['seed']})"
        lines.append(f"| {name} | {card['test_accuracy']:.4f} | – |")
    return "\n".join(lines)
