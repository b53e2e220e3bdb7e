"""Training's code path on a smoke run (a subset, one epoch), and the architectures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from training.architectures import ARCHITECTURES, RECIPES, make_model
from training.augment import Augmentation, Batches, augment
from training.ensemble import build_ensemble
from training.export import (
    CARD_FILENAME,
    MODEL_FILENAME,
    QUANTIZED_FILENAMES,
    SERVING_FILENAME,
    serving_model,
    sha256_of,
    ship,
)
from training.photo_finetune import run_card
from training.quantize import quantize_run
from training.train import BudgetedCosine, anneal, finish, fit, train
from worker.pipeline.classifier import Classifier
from worker.pipeline.preprocess import normalize

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("smoke")
    train(arch="fashion-vgg", out_dir=out_dir, epochs=1, limit=512, verbose=0)
    return out_dir


def test_smoke_run_writes_model_card_and_artifacts(smoke_run: Path) -> None:
    card = json.loads((smoke_run / "model_card.json").read_text())
    assert card["sha256"] == sha256_of(smoke_run / MODEL_FILENAME)
    assert card["version"] == f"fashion-vgg-{card['sha256'][:12]}"
    assert card["temperature"] > 0
    assert 0 <= card["test_ece"] <= 1
    assert len(card["dataset_sha256"]) == 64
    assert card["train_images"] == 512 and card["epochs"] == 1
    assert (smoke_run / "history.csv").read_text().count("\n") == 2  # header + one epoch
    assert (smoke_run / "model.keras").is_file()


def test_litert_artifact_matches_the_calibrated_keras_model(smoke_run, fashion_mnist) -> None:
    card = json.loads((smoke_run / "model_card.json").read_text())
    keras_model = serving_model(
        keras.models.load_model(smoke_run / "model.keras"), temperature=card["temperature"]
    )
    images = normalize(fashion_mnist.train_images[:200])
    expected = keras_model.predict(images, verbose=0)
    saved_serving = keras.models.load_model(smoke_run / SERVING_FILENAME).predict(images, verbose=0)
    # The card rounds the temperature to 4 decimals; the saved serving model does not.
    np.testing.assert_allclose(saved_serving["probabilities"], expected["probabilities"], atol=1e-4)
    outputs = Classifier(smoke_run / MODEL_FILENAME).run(images)
    np.testing.assert_allclose(outputs.probabilities, expected["probabilities"], atol=1e-4)
    np.testing.assert_allclose(outputs.embeddings, expected["embedding"], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(outputs.embeddings, axis=1), 1.0, atol=1e-4)


def test_ensemble_of_two_runs_exports_a_working_model(
    smoke_run, tmp_path_factory, fashion_mnist
) -> None:
    second = tmp_path_factory.mktemp("smoke-seed-2")
    # Another seed holding out the first run's validation images (--split-seed).
    train(arch="fashion-vgg", out_dir=second, epochs=1, limit=512, seed=2, split_seed=1, verbose=0)
    out_dir = tmp_path_factory.mktemp("ensemble")
    card = build_ensemble([smoke_run, second], out_dir=out_dir)
    assert card["architecture"] == "fashion-vgg-ensemble2"
    assert card["member_seeds"] == [1, 2]
    # Only images every run held out are used for calibration: here, all 5 000.
    assert card["shared_validation_images"] == 5_000
    images = normalize(fashion_mnist.test_images[:64])
    expected = keras.models.load_model(out_dir / SERVING_FILENAME).predict(images, verbose=0)
    outputs = Classifier(out_dir / MODEL_FILENAME).run(images)
    np.testing.assert_allclose(outputs.probabilities, expected["probabilities"], atol=1e-4)
    assert outputs.embeddings.shape[1] == 2 * 256


def test_an_ensemble_records_the_photos_its_members_trained_on(smoke_run, tmp_path: Path) -> None:
    members = []
    for name, field in (("tuned", "photo_finetune"), ("mixed", "photos_in_training")):
        member = tmp_path / name
        shutil.copytree(smoke_run, member)
        card = json.loads((member / CARD_FILENAME).read_text())
        card[field] = {"dir": f"/photos/{name}"}
        (member / CARD_FILENAME).write_text(json.dumps(card))
        members.append(member)
    card = build_ensemble(members, out_dir=tmp_path / "ensemble")
    assert card["member_photo_sources"] == ["/photos/tuned", "/photos/mixed"]


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_has_the_common_head_and_a_recipe(name: str) -> None:
    model = make_model(name)
    assert model.output_shape == (None, 10)
    assert model.get_layer("logits").output.shape[-1] == 10
    assert len(model.get_layer("embedding").output.shape) == 2
    assert name in RECIPES


def test_unknown_architecture_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        make_model("resnet-9000")
    with pytest.raises(ValueError, match="unknown architecture"):
        train(arch="resnet-9000", out_dir=tmp_path)


def test_finetune_on_photos_writes_a_run_that_ensembles(smoke_run, tmp_path, fashion_mnist) -> None:
    from click.testing import CliRunner

    from tests.support.photos import write_photo_folder
    from worker.cli import main

    write_photo_folder(tmp_path / "photos", fashion_mnist)
    out = tmp_path / "tuned"
    result = CliRunner().invoke(
        main,
        ["finetune-photos", str(smoke_run), "--photos", str(tmp_path / "photos"), "--out",
         str(out), "--epochs", "1", "--limit", "256"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model_card.json").read_text())
    original = json.loads((smoke_run / "model_card.json").read_text())
    assert card["version"] == original["version"] + "-photos"
    # 3 pants, 3 shoes, 2 hats and 2 longsleeves; the damaged file is skipped.
    assert card["photo_finetune"]["photos"] == 10
    assert card["photo_finetune"]["dir"] == str((tmp_path / "photos").resolve())
    assert "test_accuracy" not in card
    assert 0.0 <= card["validation_accuracy"] <= 1.0
    assert (out / "model.keras").stat().st_size > 0


def test_the_set_loss_is_cross_entropy_for_one_class_and_rewards_any_class_of_a_set() -> None:
    import tensorflow as tf

    from training.photo_data import set_loss

    logits = tf.constant([[2.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]])
    one_hot = tf.one_hot([0], 10)
    expected = tf.keras.losses.CategoricalCrossentropy(from_logits=True)(one_hot, logits)
    assert abs(float(set_loss(one_hot, logits)[0]) - float(expected)) < 1e-5
    shoes = tf.constant([[0, 0, 0, 0, 0, 1, 0, 1, 0, 1]], tf.float32)
    p = tf.nn.softmax(logits)[0]
    assert abs(float(set_loss(shoes, logits)[0]) + float(tf.math.log(p[5] + p[7] + p[9]))) < 1e-5
    uniform = tf.ones((1, 10))
    assert abs(float(set_loss(uniform, logits)[0]) + float(tf.reduce_mean(tf.math.log(p)))) < 1e-5


def test_the_max_set_loss_scores_the_likeliest_class_of_the_set() -> None:
    import tensorflow as tf

    from training.photo_data import set_loss

    # Of the three shoe classes, 7 is the likeliest: the loss is -log p[7] alone, so it
    # exceeds the summed variant's and is lowered only by making class 7 likelier.
    logits = tf.constant([[0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 2.5, 0.0, 0.5]])
    p = tf.nn.softmax(logits)[0]
    shoes = tf.constant([[0, 0, 0, 0, 0, 1, 0, 1, 0, 1]], tf.float32)
    loss = float(set_loss(shoes, logits, reduce="max")[0])
    assert abs(loss + float(tf.math.log(p[7]))) < 1e-5
    assert loss > float(set_loss(shoes, logits, reduce="sum")[0])
    one_hot = tf.one_hot([3], 10)
    assert (
        abs(float(set_loss(one_hot, logits, reduce="max")[0]) - float(set_loss(one_hot, logits)[0]))
        < 1e-5
    )
    uniform = tf.ones((1, 10))
    assert (
        abs(
            float(set_loss(uniform, logits, reduce="max")[0])
            + float(tf.reduce_mean(tf.math.log(p)))
        )
        < 1e-5
    )
    with pytest.raises(ValueError, match="reduce must be one of"):
        set_loss(shoes, logits, reduce="mean")


def test_augmentation_keeps_shapes_and_range_and_is_reproducible() -> None:
    images = np.random.default_rng(0).random((32, 28, 28, 1), dtype=np.float32)
    policy = Augmentation(max_shift=4, erasing_probability=1.0, erasing_scale=(0.1, 0.2))
    first = augment(images, policy, np.random.default_rng(7))
    again = augment(images, policy, np.random.default_rng(7))
    np.testing.assert_array_equal(first, again)
    assert first.shape == images.shape and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert not np.array_equal(first, images)
    # A shift of 0 and no flip or erasing is the identity.
    still = augment(images, Augmentation(flip=False, max_shift=0, erasing_probability=0), None)
    np.testing.assert_array_equal(still, images)


def test_erasing_covers_the_asked_share_of_each_image() -> None:
    images = np.zeros((200, 28, 28, 1), np.float32)
    policy = Augmentation(
        flip=False, max_shift=0, erasing_probability=1.0, erasing_scale=(0.1, 0.1)
    )
    erased = augment(images, policy, np.random.default_rng(1))
    share = (erased > 0).mean(axis=(1, 2, 3))
    # Rounded rectangles of ~10 % of 784 pixels, clipped to the image.
    assert 0.05 <= np.median(share) <= 0.13


def test_batches_reshuffle_every_epoch_and_cover_every_image() -> None:
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) * np.ones((10, 28, 28, 1))
    targets = np.eye(10, dtype=np.float32)
    batches = Batches(images, targets, batch_size=4, policy=None, seed=3)
    assert len(batches) == 3
    first = np.concatenate([batches[i][1].argmax(1) for i in range(len(batches))])
    batches.on_epoch_end()
    second = np.concatenate([batches[i][1].argmax(1) for i in range(len(batches))])
    assert sorted(first) == sorted(second) == list(range(10))
    assert list(first) != list(second)
    x, y = batches[0]
    np.testing.assert_array_equal(x[:, 0, 0, 0], y.argmax(1))  # images stay with their labels


class _Model:
    stop_training = False

    class optimizer:  # noqa: N801 — stands in for the attribute Keras sets
        learning_rate = None


def test_budgeted_cosine_plans_the_epochs_that_fit_and_decays_to_zero(monkeypatch) -> None:
    clock = {"now": 0.0}
    monkeypatch.setattr("training.train.time.monotonic", lambda: clock["now"])
    monkeypatch.setattr("training.train.time.time", lambda: clock["now"])
    schedule = BudgetedCosine(peak=0.1, warmup_epochs=2, max_epochs=300, deadline=100.0)
    schedule.set_model(_Model())
    rates = []
    for epoch in range(300):
        schedule.on_epoch_begin(epoch)
        rates.append(schedule.model.optimizer.learning_rate)
        clock["now"] += 10.0 if epoch == 0 else 2.0  # the first epoch compiles
        schedule.on_epoch_end(epoch)
        if schedule.model.stop_training:
            break
    # Planned at epoch 3 from epochs 1-2 (2 s each, +15 %): 86 s left → 37 more epochs.
    assert schedule.planned == 3 + int(86 / 2.3) == len(rates)
    assert rates[:2] == [0.05, 0.1]
    assert rates[2] == 0.1 and all(a >= b for a, b in zip(rates[2:], rates[3:], strict=False))
    assert rates[-1] < 0.001


def test_fit_only_then_finish_then_anneal_then_quantize(tmp_path, fashion_mnist) -> None:
    run = tmp_path / "run"
    record = fit(arch="resnet20", out_dir=run, epochs=2, limit=256, verbose=0).record
    assert record["epochs"] == 2 and record["backend"] == "tensorflow"
    assert not (run / "model_card.json").exists()  # no test figure before finish
    assert run_card(run)["version"] == "resnet20-s1-fit"
    annealed = anneal(run, epochs=1, learning_rate=0.01).record
    assert annealed["epochs"] == 3 and annealed["annealed"]["from_epoch"] == 2
    assert (run / "history.csv").read_text().count("\n") == 4
    card = finish(run).card
    assert card["epochs"] == 3 and card["fitted_on"]["backend"] == "tensorflow"
    entry = quantize_run(run, samples=50, make_default=True)
    assert entry["sha256"] == sha256_of(run / "model-int8.tflite")
    assert entry["bytes"] < entry["float_bytes"] / 2
    int8 = Classifier(run / MODEL_FILENAME)  # the card's default engine now
    assert int8.engine == "int8" and int8.version == card["version"] + "-int8"
    images = normalize(fashion_mnist.train_images[:64])
    as_float = Classifier(run / MODEL_FILENAME, engine="float").predict_proba(images)
    np.testing.assert_allclose(int8.predict_proba(images).sum(axis=1), 1.0, atol=0.02)
    # A 3-epoch net on 256 images is near-uniform (top-2 margins ~1e-4), so its argmax
    # is a tie-break; parity is the probabilities'. The shipped model's top-1 parity
    # on the 10 k test images is tests/test_evaluate.py's.
    assert np.abs(int8.predict_proba(images) - as_float).max() <= 0.02
    dynamic = quantize_run(run, scheme="dynamic")
    assert dynamic["sha256"] == sha256_of(run / "model-dynamic.tflite")
    assert dynamic["quantization"].startswith("dynamic range")
    assert 0 <= dynamic["validation"]["dynamic_accuracy"] <= 1
    assert Classifier(run / MODEL_FILENAME).engine == "int8"  # another engine's default stays
    as_dynamic = Classifier(run / MODEL_FILENAME, engine="dynamic")
    assert as_dynamic.version == card["version"] + "-dynamic"
    assert np.abs(as_dynamic.predict_proba(images) - as_float).max() <= 0.02


def test_set_loss_on_probabilities_is_keras_cross_entropy_for_one_class() -> None:
    from training.photo_data import SetLoss

    probabilities = keras.ops.softmax(
        keras.ops.convert_to_tensor([[2.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]])
    )
    one_hot = keras.utils.to_categorical([5], 10)
    expected = keras.losses.CategoricalCrossentropy()(one_hot, probabilities)
    assert abs(float(SetLoss(reduce="max")(one_hot, probabilities)) - float(expected)) < 1e-5
    shoes = np.zeros((1, 10), np.float32)
    shoes[0, [5, 7, 9]] = 1
    p = keras.ops.convert_to_numpy(probabilities)[0]
    summed = float(SetLoss(reduce="sum")(shoes, probabilities))
    assert abs(summed + np.log(p[5] + p[7] + p[9])) < 1e-5
    with pytest.raises(ValueError, match="reduce must be one of"):
        SetLoss(reduce="mean")


def test_train_with_photos_from_the_start_then_anneal_and_finish(tmp_path, fashion_mnist) -> None:
    from click.testing import CliRunner

    from tests.support.photos import write_photo_folder
    from worker.cli import main

    write_photo_folder(tmp_path / "photos", fashion_mnist)
    run = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["train", "--arch", "resnet20", "--epochs", "1", "--limit", "256", "--out", str(run),
         "--photos", str(tmp_path / "photos"), "--photo-repeat", "3", "--fit-only"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((run / "fit.json").read_text())
    # 3 pants, 3 shoes, 2 hats and 2 longsleeves (the damaged file is skipped), 3 times each.
    assert record["photos"]["photos"] == 10 and record["photos"]["repeat"] == 3
    assert record["photos"]["targets"]["shoes"] == [5, 7, 9]
    assert record["photos"]["targets"]["hat"] is None
    # The checkpoint carries its set loss: annealing reloads it and the photos with it.
    annealed = anneal(run, epochs=1, learning_rate=0.01).record
    assert annealed["epochs"] == 2 and annealed["photos"] == record["photos"]
    card = finish(run).card
    assert card["photos_in_training"]["photos"] == 10
    assert (run / MODEL_FILENAME).stat().st_size > 0


def test_train_with_photos_refuses_a_recipe_that_smooths_labels(tmp_path, fashion_mnist) -> None:
    from click.testing import CliRunner

    from tests.support.photos import write_photo_folder
    from worker.cli import main

    write_photo_folder(tmp_path / "photos", fashion_mnist)
    result = CliRunner().invoke(
        main,
        ["train", "--arch", "fashion-vgg", "--epochs", "1", "--limit", "256",
         "--out", str(tmp_path / "run"), "--photos", str(tmp_path / "photos")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "smooths labels" in result.output
    assert not (tmp_path / "run").exists()


def test_bench_step_times_both_compilers_of_a_recipe(capsys) -> None:
    from training.bench_step import main

    main(["--arch", "small-cnn", "--steps", "2", "--rounds", "1", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["arch"] == "small-cnn" and result["backend"] == "tensorflow"
    assert result["xla_s_per_step"] > 0 and result["no_xla_s_per_step"] > 0
    ratio = result["no_xla_s_per_step"] / result["xla_s_per_step"]
    assert abs(result["speedup"] - ratio) <= 0.01 * ratio + 0.01  # both sides rounded


def test_ship_copies_a_runs_artifacts_and_removes_a_quantized_one_it_lacks(tmp_path: Path) -> None:
    run, destination = tmp_path / "run", tmp_path / "model"
    run.mkdir()
    destination.mkdir()
    for name in (MODEL_FILENAME, QUANTIZED_FILENAMES["dynamic"], SERVING_FILENAME):
        (run / name).write_bytes(name.encode())
    (run / CARD_FILENAME).write_text(json.dumps({"version": "v-new"}))
    (destination / QUANTIZED_FILENAMES["int8"]).write_bytes(b"an earlier model's int8")

    card = ship(run, destination)

    assert card == {"version": "v-new"}
    assert sorted(path.name for path in destination.iterdir()) == sorted(
        [MODEL_FILENAME, QUANTIZED_FILENAMES["dynamic"], CARD_FILENAME, "model.keras"]
    )
    assert (destination / "model.keras").read_bytes() == SERVING_FILENAME.encode()
    assert (destination / QUANTIZED_FILENAMES["dynamic"]).read_bytes() == b"model-dynamic.tflite"
