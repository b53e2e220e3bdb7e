"""Temperature scaling and expected calibration error.

A network trained with label smoothing and heavy regularisation is rarely
calibrated: its confidence is not the probability of being right. Temperature
scaling (Guo et al., 2017) divides the logits by one scalar ``T`` fitted to
minimise the negative log-likelihood on the *validation* split; accuracy is
unchanged. The test split is only ever used to report the resulting ECE.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

ECE_BINS = 15
# Results below the chosen confidence threshold are flagged uncertain; the
# threshold is the lowest at which validation accuracy on the rest reaches this.
UNCERTAIN_TARGET = 0.97


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    log_probabilities = log_softmax(logits / temperature, axis=1)
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The ``T`` in [0.05, 20] minimising validation NLL of ``softmax(logits / T)``."""
    if len(logits) != len(labels) or len(labels) == 0:
        raise ValueError("logits and labels must be non-empty and of the same length")
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(result.x))


def calibrated_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(logits / temperature, axis=1)


def reliability_bins(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Per confidence bin: its range, count, mean confidence and accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > low) & (confidence <= high)
        count = int(in_bin.sum())
        rows.append(
            {
                "low": float(low),
                "high": float(high),
                "count": count,
                "confidence": float(confidence[in_bin].mean()) if count else 0.0,
                "accuracy": float(correct[in_bin].mean()) if count else 0.0,
            }
        )
    return rows


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Σ_bins (n_bin / n) · |accuracy − mean confidence|, with equal-width bins."""
    total = len(labels)
    return float(
        sum(
            row["count"] / total * abs(row["accuracy"] - row["confidence"])
            for row in reliability_bins(probabilities, labels, bins)
        )
    )


def risk_coverage(
    probabilities: np.ndarray, labels: np.ndarray, thresholds: np.ndarray
) -> list[dict[str, float]]:
    """For each threshold: the share flagged uncertain and the accuracy on the rest."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    rows = []
    for threshold in thresholds:
        kept = confidence >= threshold
        rows.append(
            {
                "threshold": round(float(threshold), 4),
                "flagged": round(float(1 - kept.mean()), 4),
                "accuracy_on_rest": round(float(correct[kept].mean()), 4) if kept.any() else 1.0,
            }
        )
    return rows


def choose_uncertain_threshold(
    probabilities: np.ndarray, labels: np.ndarray, *, target_accuracy: float = UNCERTAIN_TARGET
) -> float:
    """The lowest confidence threshold at which the predictions kept reach ``target_accuracy``.

    Chosen on validation data: below it a result is flagged ``uncertain``.
    """
    candidates = np.round(np.arange(0.30, 1.0, 0.01), 2)
    for row in risk_coverage(probabilities, labels, candidates):
        if row["accuracy_on_rest"] >= target_accuracy:
            return row["threshold"]
    return float(candidates[-1])
