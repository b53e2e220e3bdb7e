from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from catalog.models import CATEGORIES
from worker.pipeline.classifier import BUNDLED_MODEL, Classifier, ModelError
from worker.pipeline.preprocess import ModelInput, normalize


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(BUNDLED_MODEL)


def test_bundled_model_card_describes_the_model(classifier: Classifier) -> None:
    card = classifier.card
    for field in ("version", "architecture", "sha256", "test_accuracy", "date"):
        assert card[field], field
    assert card["classes"] == list(CATEGORIES)


def test_batches_of_any_size_agree_with_single_images(classifier, fashion_mnist) -> None:
    images = normalize(fashion_mnist.test_images[:7])
    batched = classifier.predict_proba(images)
    singles = np.concatenate([classifier.predict_proba(images[i : i + 1]) for i in range(7)])
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-5)


def test_more_interpreter_threads_give_the_same_outputs(classifier, fashion_mnist) -> None:
    images = normalize(fashion_mnist.test_images[:64])
    threaded = Classifier(BUNDLED_MODEL, num_threads=2).run(images)
    single = classifier.run(images)
    np.testing.assert_allclose(threaded.probabilities, single.probabilities, atol=1e-5)
    np.testing.assert_allclose(threaded.embeddings, single.embeddings, atol=1e-5)


def test_model_version_is_read_from_the_card_without_loading_the_model(tmp_path) -> None:
    from worker.config import Settings
    from worker.pipeline.classifier import model_version

    assert model_version(Settings()) == Classifier(BUNDLED_MODEL).version
    shutil.copy(BUNDLED_MODEL, tmp_path / "model.tflite")
    with pytest.raises(ModelError, match="cannot read the model version"):
        model_version(Settings(model_uri=tmp_path / "model.tflite"))


def test_wrong_input_shape_is_a_value_error(classifier: Classifier) -> None:
    with pytest.raises(ValueError, match="expected images of shape"):
        classifier.predict_proba(np.zeros((1, 32, 32, 1), dtype=np.float32))


def test_model_that_does_not_match_its_card_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "model.tflite"
    shutil.copy(BUNDLED_MODEL, copy)
    card = json.loads(BUNDLED_MODEL.with_name("model_card.json").read_text())
    card["sha256"] = "0" * 64
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="sha256"):
        Classifier(copy)


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        Classifier(tmp_path / "absent.tflite")


def test_photos_on_a_busy_background_are_judged_with_the_photo_threshold(
    fashion_mnist,
) -> None:
    strict_on_photos = Classifier(
        BUNDLED_MODEL, uncertain_threshold=0.0, photo_uncertain_threshold=1.0
    )
    pixels = fashion_mnist.test_images[:2]
    predictions = strict_on_photos.predict(normalize(pixels), busy_background=[False, True])
    assert [p.uncertain for p in predictions] == [False, True]
    assert [p.uncertain for p in strict_on_photos.predict(normalize(pixels))] == [False, False]
    prepared = [ModelInput(pixels[0], busy_background=True), ModelInput(pixels[1], False)]
    assert [p.uncertain for p in strict_on_photos.classify(prepared)] == [True, False]
    assert strict_on_photos.classify([]) == []
    with pytest.raises(ValueError, match="1 busy_background flags for 2 images"):
        strict_on_photos.predict(normalize(pixels), busy_background=[True])


def test_a_card_without_a_photo_threshold_uses_its_one_threshold_for_photos(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "model.tflite"
    shutil.copy(BUNDLED_MODEL, copy)
    card = json.loads(BUNDLED_MODEL.with_name("model_card.json").read_text())
    card.pop("photo_uncertain_threshold", None)
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    older = Classifier(copy)
    assert (
        older.photo_uncertain_threshold == older.uncertain_threshold == card["uncertain_threshold"]
    )

    card["photo_uncertain_threshold"] = 1.5
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="photo_uncertain_threshold outside"):
        Classifier(copy)


def test_settings_override_each_threshold() -> None:
    from worker.config import Settings
    from worker.pipeline.classifier import get_classifier

    card = Classifier(BUNDLED_MODEL).card
    default = get_classifier(Settings())
    assert default.uncertain_threshold == card["uncertain_threshold"]
    assert default.photo_uncertain_threshold == card["photo_uncertain_threshold"]
    overridden = get_classifier(Settings(uncertain_threshold=0.2, photo_uncertain_threshold=0.9))
    assert (overridden.uncertain_threshold, overridden.photo_uncertain_threshold) == (0.2, 0.9)
