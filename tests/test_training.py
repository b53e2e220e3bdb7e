"""Export and model card, without a full training run (that takes minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from training.architectures import make_model
from training.export import MODEL_FILENAME, export_tflite, sha256_of, write_model_card
from worker.classifier import Classifier
from worker.preprocess import normalize


@pytest.fixture(scope="module")
def exported(tmp_path_factory, fashion_mnist) -> tuple[keras.Model, Path]:
    keras.utils.set_random_seed(0)
    model = make_model("small-cnn")
    # One quick pass over a few batches so the weights are not all at initialisation.
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(
        normalize(fashion_mnist.train_images[:512]),
        fashion_mnist.train_labels[:512],
        epochs=1,
        verbose=0,
    )
    out_dir = tmp_path_factory.mktemp("export")
    model.save(out_dir / "model.keras")
    export_tflite(model, out_dir / MODEL_FILENAME)
    write_model_card(
        out_dir,
        architecture="small-cnn",
        params=model.count_params(),
        test_accuracy=0.5,
        validation_accuracy=0.5,
        epochs=1,
        seed=0,
        training_seconds=1.0,
    )
    return model, out_dir


def test_keras_round_trip_predicts_the_same(exported, fashion_mnist) -> None:
    model, out_dir = exported
    images = normalize(fashion_mnist.train_images[1000:1032])
    reloaded = keras.models.load_model(out_dir / "model.keras")
    np.testing.assert_allclose(
        model.predict(images, verbose=0), reloaded.predict(images, verbose=0), atol=1e-6
    )


def test_litert_artifact_matches_keras(exported, fashion_mnist) -> None:
    model, out_dir = exported
    images = normalize(fashion_mnist.train_images[1000:1064])
    keras_probabilities = model.predict(images, verbose=0)
    litert_probabilities = Classifier(out_dir / MODEL_FILENAME).predict_proba(images)
    np.testing.assert_allclose(litert_probabilities, keras_probabilities, atol=1e-4)
    assert (litert_probabilities.argmax(1) == keras_probabilities.argmax(1)).all()


def test_model_card_names_the_artifact(exported) -> None:
    _, out_dir = exported
    card = json.loads((out_dir / "model_card.json").read_text())
    assert card["sha256"] == sha256_of(out_dir / MODEL_FILENAME)
    assert card["version"] == f"small-cnn-{card['sha256'][:12]}"
    assert card["architecture"] == "small-cnn" and card["date"]


def test_unknown_architecture_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        make_model("resnet-9000")
