"""Average several trained runs into one exported model.

The members' logits are averaged; the embedding is the concatenation of the
members' unit embeddings, renormalised (so its cosine is the mean of the
members' cosines). Each run held out its own random 5 000 validation images, so
the only images *none* of the members trained on are the intersection of their
validation sets: the temperature, the uncertainty threshold and the
ensemble-versus-best-member comparison all use those, never the test split.
The test split is used once, to report.
"""

from __future__ import annotations

import json
import time
from functools import reduce
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training.calibrate import (
    calibrated_probabilities,
    choose_uncertain_threshold,
    expected_calibration_error,
    fit_temperature,
    risk_coverage,
)
from training.data import dataset_sha256, held_out_by, load_fashion_mnist, split_seed_of
from training.export import (
    CARD_FILENAME,
    MODEL_FILENAME,
    export_serving,
    features_model,
    serving_model,
    write_model_card,
)
from training.photo_data import photo_sources
from worker.pipeline.preprocess import normalize


def build_ensemble(
    run_dirs: list[Path], *, out_dir: Path, data_dir: Path | None = None
) -> dict[str, Any]:
    if len(run_dirs) < 2:
        raise ValueError("an ensemble needs at least two runs")
    cards = [json.loads((run / CARD_FILENAME).read_text()) for run in run_dirs]
    if len({card["architecture"] for card in cards}) != 1:
        raise ValueError("the runs must share one architecture")
    members = [keras.models.load_model(run / "model.keras", compile=False) for run in run_dirs]
    dataset = load_fashion_mnist(data_dir)
    held_out = reduce(
        np.intersect1d, [held_out_by(card, len(dataset.train_images)) for card in cards]
    )
    images = normalize(dataset.train_images[held_out])
    labels = dataset.train_labels[held_out]
    member_logits = [
        features_model(member).predict(images, batch_size=512, verbose=0)[0] for member in members
    ]
    logits = np.mean(member_logits, axis=0)
    member_accuracy = [float((z.argmax(1) == labels).mean()) for z in member_logits]
    ensemble_accuracy = float((logits.argmax(1) == labels).mean())
    temperature = fit_temperature(logits, labels)
    probabilities = calibrated_probabilities(logits, temperature)
    threshold = choose_uncertain_threshold(probabilities, labels)

    split_seeds = [split_seed_of(card) for card in cards]
    serving = serving_model(members, temperature=temperature)
    test_probabilities = serving.predict(normalize(dataset.test_images), batch_size=512, verbose=0)[
        "probabilities"
    ]
    test_accuracy = float((test_probabilities.argmax(1) == dataset.test_labels).mean())
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    export_serving(serving, out_dir / MODEL_FILENAME)
    return write_model_card(
        out_dir,
        architecture=f"{cards[0]['architecture']}-ensemble{len(members)}",
        params=serving.count_params(),
        test_accuracy=test_accuracy,
        validation_accuracy=ensemble_accuracy,
        epochs=cards[0]["epochs"],
        seed=cards[0]["seed"],
        training_seconds=sum(card["training_seconds"] for card in cards),
        extra={
            "members": [card["version"] for card in cards],
            "member_seeds": [card["seed"] for card in cards],
            # So fitting a photo threshold on photos a member trained on is warned about.
            "member_photo_sources": list(
                dict.fromkeys(source for card in cards for source in photo_sources(card))
            ),
            # One split for all members: the held-out images are exactly that split's.
            "split_seed": split_seeds[0] if len(set(split_seeds)) == 1 else None,
            "shared_validation_images": int(len(held_out)),
            "member_accuracy_on_shared_validation": [round(a, 4) for a in member_accuracy],
            "temperature": round(temperature, 4),
            "uncertain_threshold": threshold,
            "validation_risk_coverage": risk_coverage(
                probabilities, labels, np.arange(0.5, 1.0, 0.05)
            ),
            "test_ece": round(
                expected_calibration_error(test_probabilities, dataset.test_labels), 4
            ),
            "export_seconds": round(time.perf_counter() - started, 1),
            "recipe": cards[0]["recipe"],
            "dataset_sha256": dataset_sha256(dataset.source),
        },
    )
