"""The photo threshold's fitting rule and its estimate on unseen photos."""

from __future__ import annotations

import numpy as np
import pytest

from training.photo_threshold import cross_fit, fit_threshold


def test_fit_threshold_is_the_highest_that_keeps_within_the_budget() -> None:
    confidences = np.array([0.305, 0.5, 0.62, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.999])
    # One in ten may be flagged: anything up to 0.50 flags only 0.305.
    assert fit_threshold(confidences, 0.1) == 0.5
    assert fit_threshold(confidences, 0.2) == 0.62
    # No budget: nothing may fall below it.
    assert fit_threshold(confidences, 0.0) == 0.3
    flagged = (confidences < fit_threshold(confidences, 0.35)).mean()
    assert flagged <= 0.35 and (confidences < fit_threshold(confidences, 0.35) + 0.01).mean() > 0.35


def test_fit_threshold_refuses_what_it_cannot_fit() -> None:
    with pytest.raises(ValueError, match="no confidences"):
        fit_threshold(np.array([]), 0.1)
    with pytest.raises(ValueError, match="max_flagged"):
        fit_threshold(np.array([0.5]), 1.0)


def test_cross_fit_measures_each_threshold_on_the_half_it_was_not_fitted_on() -> None:
    rng = np.random.default_rng(0)
    # In-catalog photos are sure of themselves, out-of-catalog ones are not.
    classes = np.array(["pants"] * 100 + ["shirt"] * 100 + ["hat"] * 50)
    mapped = classes != "hat"
    confidences = np.where(mapped, rng.uniform(0.6, 1.0, 250), rng.uniform(0.2, 0.5, 250))
    estimate = cross_fit(classes, mapped, confidences, 0.1, repeats=20)

    assert estimate["repeats"] == 20
    assert 0.6 <= estimate["threshold"]["p10"] <= estimate["threshold"]["p90"] <= 0.7
    # Unseen halves: roughly the budget of in-catalog photos, every hat.
    assert 0.03 <= estimate["mapped_flagged"]["median"] <= 0.17
    assert estimate["out_of_catalog_flagged"] == {"p10": 1.0, "median": 1.0, "p90": 1.0}

    no_hats = cross_fit(classes[mapped], mapped[mapped], confidences[mapped], 0.1, repeats=3)
    assert no_hats["out_of_catalog_flagged"] is None
