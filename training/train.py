"""Train one architecture on Fashion-MNIST, calibrate it, and export it for the worker.

Run as ``fashion train --arch resnet20 --out runs/r20-s1``. Two halves, so the
first can run where TensorFlow cannot (Keras on JAX on a GPU machine):

- ``fit``: carve a validation set out of the 60 k training images; fit with the
  architecture's recipe (NumPy augmentation, ``training.augment``), keeping the
  weights with the best *validation* accuracy; optionally within a time budget
  (``BudgetedCosine``); writes ``model.keras`` and ``fit.json``.
- ``finish``: fit a softmax temperature on the validation logits; measure the
  test split once, for the model card; export the LiteRT ``model.tflite``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training.architectures import RECIPES, Recipe, make_model
from training.augment import Batches
from training.calibrate import (
    calibrated_probabilities,
    choose_uncertain_threshold,
    expected_calibration_error,
    fit_temperature,
    risk_coverage,
)
from training.data import (
    NUM_CLASSES,
    FashionMnist,
    dataset_sha256,
    load_fashion_mnist,
    train_validation_split,
)
from training.photo_data import PHOTO_TARGETS, SET_LOSSES, SetLoss, load_photos
from worker.pipeline.preprocess import normalize


@dataclass(frozen=True)
class TrainingResult:
    out_dir: Path
    card: dict[str, Any]


def make_augmenter(seed: int) -> keras.Sequential:
    """Flips, shifts of up to ~3 px and random erasing as Keras layers, for the photo
    fine-tuning's tf.data pipeline (``training.photo_finetune``)."""
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
            keras.layers.RandomErasing(
                factor=0.5, scale=(0.02, 0.15), value_range=(0.0, 1.0), seed=seed
            ),
        ],
        name="augment",
    )


def make_optimizer(
    recipe: Recipe, steps_per_epoch: int, *, per_epoch_schedule: bool = False
) -> keras.optimizers.Optimizer:
    """The recipe's optimiser; its learning-rate schedule runs per step unless
    ``per_epoch_schedule`` (a ``BudgetedCosine`` callback then sets the rate)."""
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = recipe.learning_rate
    if recipe.cosine_schedule and not per_epoch_schedule:
        total_steps = recipe.epochs * steps_per_epoch
        # Short smoke runs keep at most a quarter of their steps for warm-up.
        warmup_steps = min(recipe.warmup_epochs * steps_per_epoch, total_steps // 4)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.learning_rate / 10
            if warmup_steps
            else recipe.learning_rate,
            decay_steps=total_steps - warmup_steps,
            warmup_target=recipe.learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    decay = recipe.weight_decay or None
    optimizer: keras.optimizers.Optimizer
    if recipe.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            learning_rate, momentum=recipe.momentum, nesterov=True, weight_decay=decay
        )
    elif decay:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=decay)
    else:
        return keras.optimizers.Adam(learning_rate)
    if decay:
        # Decay the weights that shape features, not the norm scales and shifts or biases.
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


class BudgetedCosine(keras.callbacks.Callback):
    """Warm-up then cosine decay, per epoch, over as many epochs as fit a time budget.

    The epoch count is fixed once, at the start of the first epoch after the warm-up
    (and not before epoch 2, so the first epoch's compilation is not counted), from
    the mean duration of the epochs since the first: ``epochs`` is only a cap. Training
    stops after the planned epoch; the cosine reaches zero there.
    """

    def __init__(
        self,
        *,
        peak: float,
        warmup_epochs: int,
        max_epochs: int,
        deadline: float = math.inf,
        first_epoch: int = 0,
    ) -> None:
        super().__init__()
        self.first_epoch = first_epoch
        self.peak = peak
        self.warmup = warmup_epochs
        self.max_epochs = max_epochs
        self.deadline = deadline
        self.plan_at = max(warmup_epochs, 3)
        # Without a deadline the cap is the plan; with one, it is fixed at ``plan_at``.
        self.planned: int | None = max_epochs if deadline == math.inf else None
        self.epoch_starts: list[float] = []

    def rate(self, epoch: int) -> float:
        if epoch < self.warmup:
            return self.peak * (epoch + 1) / self.warmup
        if self.planned is None:
            return self.peak
        progress = (epoch - self.warmup) / max(self.planned - self.warmup, 1)
        return self.peak * 0.5 * (1 + math.cos(math.pi * progress))

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        epoch -= self.first_epoch
        now = time.monotonic()
        self.epoch_starts.append(now)
        if epoch == self.plan_at and self.planned is None:
            # Epochs slow down once concurrent runs all compiled: keep a 15 % margin.
            per_epoch = 1.15 * (now - self.epoch_starts[1]) / (epoch - 1)
            fits = int((self.deadline - time.time()) / per_epoch)
            self.planned = max(epoch + 1, min(self.max_epochs, epoch + fits))
            print(f"time budget: {self.planned} epochs of ~{per_epoch:.1f} s", flush=True)
        self.model.optimizer.learning_rate = self.rate(epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        epoch -= self.first_epoch
        planned = self.planned if self.planned is not None else self.max_epochs
        if epoch + 1 >= planned or time.time() > self.deadline:
            self.model.stop_training = True


@dataclass(frozen=True)
class FitResult:
    out_dir: Path
    record: dict[str, Any]


FIT_RECORD = "fit.json"


def fit(
    *,
    arch: str,
    out_dir: Path,
    seed: int = 1,
    split_seed: int | None = None,
    epochs: int | None = None,
    limit: int | None = None,
    data_dir: Path | None = None,
    verbose: int | None = None,
    time_budget_s: float | None = None,
    photos: Path | None = None,
    photo_targets: Mapping[str, list[int] | None] | None = None,
    photo_repeat: int = 2,
    photo_loss: str = "max",
) -> FitResult:
    """Fit ``arch`` with its recipe; keep the best epoch by validation accuracy.

    Writes ``model.keras``, ``history.csv`` and ``fit.json`` (what ``finish``
    needs). Runs on any Keras backend and needs no TensorFlow: a GPU machine
    without it can fit, and this machine finishes (``scripts/train_on_device.py``).
    ``limit`` trains on the first ``limit`` training images only (smoke runs).
    ``split_seed`` picks the validation images (default: ``seed``); giving runs of
    different seeds one split keeps a common held-out set for ensembling.
    ``time_budget_s`` fits as many epochs as the budget allows (at most the
    recipe's or ``epochs``), with the cosine schedule stretched over them.
    ``photos``: a folder of real photos (``DIR/<class>/``, or its pack from
    ``fashion pack-photos``; ``photo_targets`` or the development photos' targets)
    trained on *from the start*, ``photo_repeat``
    times per epoch beside the Fashion-MNIST images, with the set loss
    (``training.photo_data``) — instead of tuning a finished run on them
    (``fashion finetune-photos``). The best epoch is still chosen on the
    Fashion-MNIST validation images alone.
    """
    if arch not in RECIPES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[arch] if epochs is None else replace(RECIPES[arch], epochs=epochs)
    if recipe.epochs < 1:
        raise ValueError("epochs must be at least 1")
    if time_budget_s is not None and time_budget_s <= 0:
        raise ValueError("the time budget must be positive")
    if photo_repeat < 1:
        raise ValueError("photo_repeat must be at least 1")
    if photo_loss not in SET_LOSSES:  # before minutes of loading photos
        raise ValueError(f"unknown set loss {photo_loss!r}; choose one of {', '.join(SET_LOSSES)}")
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    started_at = time.time()
    keras.utils.set_random_seed(seed)
    split_seed = seed if split_seed is None else split_seed
    train_images, train_labels, validation_images, validation_labels = _split(
        load_fashion_mnist(data_dir), recipe.validation_size, split_seed, limit
    )

    photo_record = None
    extra: tuple[np.ndarray, np.ndarray] | None = None
    if photos is not None:
        if recipe.label_smoothing:
            raise ValueError(f"{arch}'s recipe smooths labels: train it on photos afterwards")
        targets = PHOTO_TARGETS if photo_targets is None else dict(photo_targets)
        extra = _photo_mix(photos, targets, photo_repeat)
        photo_record = {
            "dir": str(Path(photos).resolve()),
            "photos": len(extra[0]) // photo_repeat,
            "repeat": photo_repeat,
            "set_loss": photo_loss,
            "targets": targets,
        }
    model = make_model(arch, NUM_CLASSES)
    images_per_epoch = len(train_images) + (len(extra[0]) if extra else 0)
    steps_per_epoch = math.ceil(images_per_epoch / recipe.batch_size)
    budgeted = time_budget_s is not None
    model.compile(
        optimizer=make_optimizer(recipe, steps_per_epoch, per_epoch_schedule=budgeted),
        loss=_loss(recipe, photo_record),
        metrics=["accuracy"],
    )
    schedule = None
    if budgeted:
        schedule = BudgetedCosine(
            peak=recipe.learning_rate,
            warmup_epochs=recipe.warmup_epochs,
            max_epochs=recipe.epochs,
            deadline=started_at + time_budget_s,
        )
    history, seconds = _fit_epochs(
        model,
        recipe,
        (train_images, train_labels, validation_images, validation_labels),
        out_dir=out_dir,
        seed=seed,
        schedule=schedule,
        verbose=verbose,
        extra=extra,
    )
    record = {
        "architecture": arch,
        "seed": seed,
        "split_seed": split_seed,
        "limit": limit,
        "epochs": len(history.history["loss"]),
        "planned_epochs": schedule.planned if schedule else recipe.epochs,
        "best_validation_accuracy": round(max(history.history["val_accuracy"]), 4),
        "training_seconds": seconds,
        "time_budget_s": time_budget_s,
        "train_images": len(train_images),
        "validation_images": len(validation_images),
        "photos": photo_record,
        "recipe": asdict(recipe),
        "backend": keras.backend.backend(),
        "device": _device_name(),
        "keras": keras.__version__,
    }
    (out_dir / FIT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return FitResult(out_dir, record)


def _photo_mix(
    folder: Path, targets: Mapping[str, list[int] | None], repeat: int
) -> tuple[np.ndarray, np.ndarray]:
    """A photo folder's 28×28 pixels and set targets, each photo ``repeat`` times."""
    pixels, masks = load_photos(folder, targets)
    return np.concatenate([pixels] * repeat), np.concatenate([masks] * repeat)


def _loss(recipe: Recipe, photos: dict[str, Any] | None) -> keras.losses.Loss:
    """Cross-entropy; with photos in the mix, the set loss (the same on one-hot targets)."""
    if photos is None:
        return keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
    return SetLoss(reduce=photos["set_loss"])


def _split(
    dataset: FashionMnist, validation_size: int, split_seed: int, limit: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A run's training and validation images and labels, each cut to ``limit``."""
    split = train_validation_split(
        dataset.train_images,
        dataset.train_labels,
        validation_size=validation_size,
        seed=split_seed,
    )
    if limit is None:
        return split
    return tuple(part[:limit] for part in split)  # type: ignore[return-value]


def _fit_epochs(
    model: keras.Model,
    recipe: Recipe,
    split: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    out_dir: Path,
    seed: int,
    schedule: keras.callbacks.Callback | None,
    initial_epoch: int = 0,
    best_so_far: float | None = None,
    verbose: int = 2,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[keras.callbacks.History, float]:
    """``model.fit`` with the run's logging and best-by-validation checkpoint;
    ``extra`` (pixels, target masks) joins the training images (photos)."""
    train_images, train_labels, validation_images, validation_labels = split
    images, targets = train_images, keras.utils.to_categorical(train_labels, NUM_CLASSES)
    if extra is not None:
        images = np.concatenate([images, extra[0]])
        targets = np.concatenate([targets, extra[1]])
    out_dir.mkdir(parents=True, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=initial_epoch > 0),
        # Model selection looks at the validation split only, never the test set.
        keras.callbacks.ModelCheckpoint(
            str(out_dir / "model.keras"),
            monitor="val_accuracy",
            save_best_only=True,
            initial_value_threshold=best_so_far,
        ),
    ]
    if schedule is not None:
        callbacks.append(schedule)
    if recipe.early_stopping_patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=recipe.early_stopping_patience
            )
        )
    if keras.backend.backend() == "tensorflow":
        # Keras leaves XLA off on CPU-only machines; on this one (2 cores) it makes a
        # ResNet-20 step about twice as fast (python -m training.bench_step).
        model.jit_compile = True
    started = time.perf_counter()
    history = model.fit(
        Batches(
            normalize(images),
            targets,
            batch_size=recipe.batch_size,
            policy=recipe.augmentation,
            seed=seed + initial_epoch,
        ),
        validation_data=(
            normalize(validation_images),
            keras.utils.to_categorical(validation_labels, NUM_CLASSES),
        ),
        validation_batch_size=256,
        epochs=initial_epoch + recipe.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=verbose,
    )
    return history, round(time.perf_counter() - started, 1)


def anneal(
    out_dir: Path, *, epochs: int, learning_rate: float, data_dir: Path | None = None
) -> FitResult:
    """Continue a fitted run from its checkpoint: a cosine from ``learning_rate`` to
    zero over ``epochs`` more epochs (its optimiser state kept).

    For a run whose time-budget plan ran out before its schedule did: the best
    epoch by validation over the whole run stays the checkpoint.
    """
    record = json.loads((out_dir / FIT_RECORD).read_text())
    recipe = replace(Recipe.from_dict(record["recipe"]), epochs=epochs, learning_rate=learning_rate)
    keras.utils.set_random_seed(record["seed"] + record["epochs"])
    split = _split(
        load_fashion_mnist(data_dir), recipe.validation_size, record["split_seed"], record["limit"]
    )
    photos = record.get("photos")
    extra = None
    if photos:
        extra = _photo_mix(Path(photos["dir"]), photos["targets"], photos["repeat"])
    model = keras.models.load_model(out_dir / "model.keras")
    try:
        model.optimizer.learning_rate = learning_rate
    except TypeError:  # fitted with a per-step schedule: a fresh optimiser, its state lost
        model.compile(
            optimizer=make_optimizer(recipe, 1, per_epoch_schedule=True),
            loss=_loss(recipe, photos),
            metrics=["accuracy"],
        )
    history, seconds = _fit_epochs(
        model,
        recipe,
        split,
        out_dir=out_dir,
        seed=record["seed"],
        schedule=BudgetedCosine(
            peak=learning_rate, warmup_epochs=0, max_epochs=epochs, first_epoch=record["epochs"]
        ),
        initial_epoch=record["epochs"],
        best_so_far=record["best_validation_accuracy"],
        verbose=1 if sys.stdout.isatty() else 2,
        extra=extra,
    )
    record["annealed"] = {
        "from_epoch": record["epochs"],
        "epochs": len(history.history["loss"]),
        "learning_rate": learning_rate,
        "training_seconds": seconds,
        "device": _device_name(),
    }
    record["epochs"] += len(history.history["loss"])
    record["training_seconds"] = round(record["training_seconds"] + seconds, 1)
    record["best_validation_accuracy"] = round(
        max(record["best_validation_accuracy"], *history.history["val_accuracy"]), 4
    )
    (out_dir / FIT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return FitResult(out_dir, record)


def _device_name() -> str:
    if keras.backend.backend() == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    return "cpu"


def finish(out_dir: Path, *, data_dir: Path | None = None) -> TrainingResult:
    """Calibrate a fitted run on its validation split, test it once, export it.

    Fits a softmax temperature and the uncertainty threshold on the validation
    logits; measures the test split once, for the model card; exports
    ``model.tflite``. Needs TensorFlow (the LiteRT converter).
    """
    from training.export import MODEL_FILENAME, export_tflite, logits_model, write_model_card

    record_path = out_dir / FIT_RECORD
    if not record_path.is_file():
        raise ValueError(f"{out_dir} holds no {FIT_RECORD}: fit it with `fashion train` first")
    record = json.loads(record_path.read_text())
    dataset = load_fashion_mnist(data_dir)
    _, _, validation_images, validation_labels = _split(
        dataset, record["recipe"]["validation_size"], record["split_seed"], record["limit"]
    )

    best = keras.models.load_model(out_dir / "model.keras")
    to_logits = logits_model(best)
    validation_logits = to_logits.predict(normalize(validation_images), verbose=0)
    temperature = fit_temperature(validation_logits, validation_labels)
    validation_accuracy = float((validation_logits.argmax(1) == validation_labels).mean())
    validation_probabilities = calibrated_probabilities(validation_logits, temperature)
    uncertain_threshold = choose_uncertain_threshold(validation_probabilities, validation_labels)

    # The one use of the test split: measuring the finished, calibrated model.
    test_logits = to_logits.predict(normalize(dataset.test_images), verbose=0)
    test_probabilities = calibrated_probabilities(test_logits, temperature)
    test_accuracy = float((test_probabilities.argmax(1) == dataset.test_labels).mean())
    test_ece = expected_calibration_error(test_probabilities, dataset.test_labels)
    uncalibrated_ece = expected_calibration_error(
        calibrated_probabilities(test_logits, 1.0), dataset.test_labels
    )

    export_tflite(best, out_dir / MODEL_FILENAME, temperature=temperature)
    card = write_model_card(
        out_dir,
        architecture=record["architecture"],
        params=best.count_params(),
        test_accuracy=test_accuracy,
        validation_accuracy=validation_accuracy,
        epochs=record["epochs"],
        seed=record["seed"],
        training_seconds=record["training_seconds"],
        extra={
            "split_seed": record["split_seed"],
            "temperature": round(temperature, 4),
            "uncertain_threshold": uncertain_threshold,
            "validation_risk_coverage": risk_coverage(
                validation_probabilities, validation_labels, np.arange(0.5, 1.0, 0.05)
            ),
            "test_ece": round(test_ece, 4),
            "test_ece_uncalibrated": round(uncalibrated_ece, 4),
            "train_images": record["train_images"],
            "validation_images": record["validation_images"],
            "recipe": record["recipe"],
            "photos_in_training": record.get("photos"),
            "fitted_on": {key: record[key] for key in ("backend", "device", "keras")},
            "dataset_sha256": dataset_sha256(dataset.source),
        },
    )
    return TrainingResult(out_dir, card)


def train(*, out_dir: Path, data_dir: Path | None = None, **fit_options: Any) -> TrainingResult:
    """``fit`` then ``finish``: the model card of a calibrated, exported run."""
    fit(out_dir=out_dir, data_dir=data_dir, **fit_options)
    return finish(out_dir, data_dir=data_dir)
