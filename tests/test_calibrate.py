from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from training.calibrate import (
    calibrated_probabilities,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)


def sample_labels(logits: np.ndarray, temperature: float, seed: int = 0) -> np.ndarray:
    """Labels drawn from softmax(logits / temperature): a model calibrated at that T."""
    rng = np.random.default_rng(seed)
    probabilities = softmax(logits / temperature, axis=1)
    cumulative = probabilities.cumsum(axis=1)
    draws = rng.random((len(logits), 1))
    return (draws > cumulative).sum(axis=1)


@pytest.fixture(scope="module")
def logits() -> np.ndarray:
    return np.random.default_rng(1).normal(scale=4.0, size=(20_000, 10))


def test_fit_temperature_recovers_the_true_temperature(logits) -> None:
    labels = sample_labels(logits, temperature=2.5)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.08)


def test_calibration_lowers_the_ece_of_an_overconfident_model(logits) -> None:
    labels = sample_labels(logits, temperature=2.5)
    before = expected_calibration_error(calibrated_probabilities(logits, 1.0), labels)
    temperature = fit_temperature(logits, labels)
    after = expected_calibration_error(calibrated_probabilities(logits, temperature), labels)
    assert before > 0.1
    assert after < 0.02


def test_reliability_bins_cover_every_prediction(logits) -> None:
    labels = sample_labels(logits, temperature=1.0)
    bins = reliability_bins(softmax(logits, axis=1), labels)
    assert len(bins) == 15
    assert sum(row["count"] for row in bins) == len(labels)


def test_fit_temperature_refuses_mismatched_inputs() -> None:
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 10)), np.zeros(2, dtype=int))
