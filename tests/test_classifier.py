from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from catalog.codes import family_of
from catalog.models import CATEGORIES
from worker.config import QUANTIZED_ENGINES
from worker.pipeline.classifier import (
    BUNDLED_MODEL,
    Classifier,
    ModelError,
    Outputs,
    judged_confidence,
)
from worker.pipeline.preprocess import ModelInput, normalize


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(BUNDLED_MODEL)


def test_bundled_model_card_describes_the_model(classifier: Classifier) -> None:
    card = classifier.card
    for field in ("version", "architecture", "sha256", "test_accuracy", "date"):
        assert card[field], field
    assert card["classes"] == list(CATEGORIES)


def test_the_bundled_models_embeddings_are_the_size_the_catalog_indexes(
    classifier, fashion_mnist
) -> None:
    """PostgreSQL searches similar items through HNSW indexes built for one embedding
    size (a migration per size); a model of another size would be searched by a
    sequential scan, so shipping one needs that migration first."""
    from catalog.embeddings import INDEXED_DIMENSIONS

    engines = ["float", *(engine for engine in QUANTIZED_ENGINES if engine in classifier.card)]
    assert len(engines) == 3  # the shipped model has float, int8 and dynamic artifacts
    for engine in engines:
        model = Classifier(BUNDLED_MODEL, engine=engine)
        embeddings = model.run(normalize(fashion_mnist.test_images[:4])).embeddings
        assert embeddings.shape == (4, INDEXED_DIMENSIONS), engine


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
        Classifier(copy, engine="float")  # the card's sha256 is the float artifact's


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
    older = Classifier(copy, engine="float")  # only the float artifact was copied
    assert (
        older.photo_uncertain_threshold == older.uncertain_threshold == card["uncertain_threshold"]
    )

    card["photo_uncertain_threshold"] = 1.5
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="photo_uncertain_threshold outside"):
        Classifier(copy, engine="float")


def test_settings_override_each_threshold() -> None:
    from worker.config import Settings
    from worker.pipeline.classifier import get_classifier

    card = Classifier(BUNDLED_MODEL).card
    default = get_classifier(Settings())
    assert default.uncertain_threshold == card["uncertain_threshold"]
    assert default.photo_uncertain_threshold == card["photo_uncertain_threshold"]
    overridden = get_classifier(Settings(uncertain_threshold=0.2, photo_uncertain_threshold=0.9))
    assert (overridden.uncertain_threshold, overridden.photo_uncertain_threshold) == (0.2, 0.9)


def test_footwear_is_judged_as_one_family() -> None:
    shoe = np.zeros(10)
    shoe[[5, 7, 9]] = [0.3, 0.35, 0.3]  # surely footwear, unsure which
    shoe[0] = 0.05
    top = np.zeros(10)
    top[[0, 6]] = [0.5, 0.5]  # T-shirt or shirt: tops are not a family
    bag = np.zeros(10)
    bag[8] = 1.0
    np.testing.assert_allclose(judged_confidence(np.stack([shoe, top, bag])), [0.95, 0.5, 1.0])
    assert family_of(7) == "footwear" and family_of(0) is None


def test_a_sure_family_with_an_unsure_class_is_not_uncertain(tmp_path: Path) -> None:
    classifier = Classifier(BUNDLED_MODEL, engine="float", uncertain_threshold=0.9)
    probabilities = np.zeros((2, 10), np.float32)
    probabilities[0, [5, 7, 9]] = [0.3, 0.6, 0.1]  # footwear 1.0, Sneaker 0.6
    probabilities[1, [0, 6]] = [0.6, 0.4]
    outputs = Outputs(probabilities, np.ones((2, 4), np.float32) / 2)
    classifier.run = lambda images: outputs  # type: ignore[method-assign]
    shoe, top = classifier.predict(np.zeros((2, 28, 28, 1), np.float32))
    assert (shoe.label, shoe.family, shoe.uncertain) == (7, "footwear", False)
    assert shoe.family_only
    assert (top.label, top.family, top.uncertain, top.family_only) == (0, None, True, False)


def test_the_int8_engine_is_chosen_by_setting_and_has_a_version_of_its_own(tmp_path) -> None:
    from worker.config import Settings
    from worker.pipeline.classifier import get_classifier, model_version

    card = Classifier(BUNDLED_MODEL).card
    assert card["int8"]["file"] == "model-int8.tflite"
    as_float = get_classifier(Settings(model_engine="float"))
    as_int8 = get_classifier(Settings(model_engine="int8"))
    assert (as_float.engine, as_int8.engine) == ("float", "int8")
    assert as_int8.version == as_float.version + "-int8" == card["version"] + "-int8"
    assert model_version(Settings(model_engine="int8")) == as_int8.version
    assert as_int8.path.name == "model-int8.tflite"
    default = card.get("default_engine", "float")
    assert get_classifier(Settings()).engine == default

    shutil.copy(BUNDLED_MODEL, tmp_path / "model.tflite")
    shutil.copy(BUNDLED_MODEL.with_name("model-int8.tflite"), tmp_path / "model-int8.tflite")
    card["int8"]["sha256"] = "0" * 64
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="sha256"):
        Classifier(tmp_path / "model.tflite", engine="int8")
    del card["int8"]
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="no int8 artifact"):
        Classifier(tmp_path / "model.tflite", engine="int8")
    with pytest.raises(ModelError, match="unknown model engine"):
        Classifier(tmp_path / "model.tflite", engine="fp16")


def test_the_dynamic_range_engine_is_chosen_by_setting_and_has_a_version_of_its_own(
    tmp_path,
) -> None:
    from worker.config import Settings
    from worker.pipeline.classifier import get_classifier, model_version

    card = Classifier(BUNDLED_MODEL).card
    assert card["dynamic"]["file"] == "model-dynamic.tflite"
    as_dynamic = get_classifier(Settings(model_engine="dynamic"))
    assert as_dynamic.engine == "dynamic" and as_dynamic.path.name == "model-dynamic.tflite"
    assert as_dynamic.version == card["version"] + "-dynamic"
    assert model_version(Settings(model_engine="dynamic")) == as_dynamic.version

    shutil.copy(BUNDLED_MODEL, tmp_path / "model.tflite")
    del card["dynamic"]
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="no dynamic artifact"):
        Classifier(tmp_path / "model.tflite", engine="dynamic")
