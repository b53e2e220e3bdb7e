"""``fashion train``, ``finish``, ``quantize``, ``ensemble``, ``lr-find``, ``tune``:
making the model (``training``, the ``[train]`` extra); scoring it is
``worker.cli.evaluation``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from worker.cli.common import (
    echo_json,
    mapping_option,
    needs_train_extra,
    photo_repeat_option,
    set_loss_option,
)
from worker.config import QUANTIZED_ENGINES, get_settings


@click.command()
@click.option("--arch", default="fashion-vgg", show_default=True, help="Architecture name.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override the recipe's epoch count.")
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--split-seed",
    type=int,
    help="Seed of the validation split (default: --seed); share it across ensemble members.",
)
@click.option(
    "--out", "out_dir", default="runs/latest", show_default=True, type=click.Path(file_okay=False)
)
@click.option(
    "--limit", type=click.IntRange(min=64), help="Train on this many images (smoke runs)."
)
@click.option(
    "--time-budget",
    type=click.FloatRange(min=1),
    help="Minutes to fit for: as many epochs as fit (at most --epochs or the recipe's), "
    "the cosine schedule stretched over them.",
)
@click.option(
    "--fit-only",
    is_flag=True,
    help="Stop after fitting (model.keras, fit.json): no test split read, no export; "
    "`fashion finish OUT` does the rest.",
)
@click.option(
    "--photos",
    "photos_dir",
    type=click.Path(exists=True),
    help="Also train on these real photos (DIR/<class>/<image>, or its pack from "
    "`fashion pack-photos`) from the first epoch, instead of tuning the finished run "
    "on them (never the folder you report on).",
)
@mapping_option
@photo_repeat_option(2, "With --photos: times each photo appears per epoch.")
@set_loss_option
def train(
    arch: str,
    epochs: int | None,
    seed: int,
    split_seed: int | None,
    out_dir: str,
    limit: int | None,
    time_budget: float | None,
    fit_only: bool,
    photos_dir: str | None,
    mapping_path: str | None,
    photo_repeat: int,
    set_loss: str,
) -> None:
    """Train ARCH on Fashion-MNIST; write model.keras, model.tflite and model_card.json.

    Architectures: resnet20 and resnet32 (v2, Zhong et al.'s random-erasing
    recipe), fashion-vgg (v1), small-cnn, and the earlier reports' seed-a,
    seed-b, seed-c, seed-d, each with its own recipe. The validation
    set comes from the 60 k training images and picks the best epoch and the
    softmax temperature; the 10 k test images are used once, for the model card.
    Logs every epoch to OUT/history.csv. Needs the [train] extra.
    """
    with needs_train_extra():
        from training.data import DatasetNotFoundError
        from training.photo_data import targets_for_folder
        from training.photo_folders import PhotoFolderError
        from training.train import fit
        from training.train import train as run_training
    photos: dict = {}
    if photos_dir is not None:
        try:
            targets = targets_for_folder(
                Path(photos_dir), Path(mapping_path) if mapping_path else None
            )
        except PhotoFolderError as exc:
            raise click.ClickException(str(exc)) from exc
        photos = {
            "photos": Path(photos_dir),
            "photo_targets": targets,
            "photo_repeat": photo_repeat,
            "photo_loss": set_loss,
        }
    options = {
        "arch": arch,
        "epochs": epochs,
        "seed": seed,
        "split_seed": split_seed,
        "limit": limit,
        "out_dir": Path(out_dir),
        "data_dir": get_settings().mnist_dir,
        "time_budget_s": None if time_budget is None else time_budget * 60,
        **photos,
    }
    try:
        if fit_only:
            click.echo(json.dumps(fit(**options).record, indent=2))
            return
        outcome = run_training(**options)
    except (DatasetNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(outcome.card, indent=2))


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
def finish(run: str) -> None:
    """Calibrate, test once and export a RUN fitted with `fashion train --fit-only`
    (on this machine or a GPU machine without TensorFlow): the temperature and
    uncertainty threshold from its validation images, model.tflite, model_card.json."""
    with needs_train_extra():
        from training.data import DatasetNotFoundError
        from training.train import finish as finish_run
    try:
        outcome = finish_run(Path(run), data_dir=get_settings().mnist_dir)
    except (DatasetNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(outcome.card, indent=2))


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--scheme",
    type=click.Choice(QUANTIZED_ENGINES),
    default="int8",
    show_default=True,
    help="int8: full integer, calibrated on training images (model-int8.tflite); "
    "dynamic: dynamic range, int8 weights and activations quantized per batch at run "
    "time (model-dynamic.tflite).",
)
@click.option(
    "--samples",
    default=1000,
    show_default=True,
    type=click.IntRange(min=10),
    help="Training images that calibrate the int8 ranges (--scheme int8).",
)
@click.option(
    "--make-default",
    is_flag=True,
    help="Make this engine the card's default (issue 20's rule: within 0.2 points of float "
    "on the test images and on photos, and ≥ 1.5× as fast).",
)
def quantize(run: str, scheme: str, samples: int, make_default: bool) -> None:
    """Write a quantized form of RUN's model.tflite (--scheme) and record it in its
    card with its agreement with float on the validation images. Run it on the
    shipped model folder after exporting; FASHION_MODEL_ENGINE=int8 (or dynamic)
    makes the worker use it."""
    with needs_train_extra():
        from training.data import DatasetNotFoundError
        from training.quantize import quantize_run
    try:
        entry = quantize_run(
            Path(run),
            scheme=scheme,
            samples=samples,
            data_dir=get_settings().mnist_dir,
            make_default=make_default,
        )
    except (DatasetNotFoundError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(entry, indent=2))


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def ensemble(runs: tuple[str, ...], out_dir: str) -> None:
    """Average the logits of several training RUNS (folders) into one exported model.

    Temperature and uncertainty threshold are fitted on the images that every
    run held out for validation; the test split is only reported.
    """
    with needs_train_extra():
        from training.ensemble import build_ensemble
    try:
        card = build_ensemble(
            [Path(run) for run in runs], out_dir=Path(out_dir), data_dir=get_settings().mnist_dir
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(card, indent=2))


@click.command(name="lr-find")
@click.option("--arch", default="fashion-vgg", show_default=True)
@click.option(
    "--png", default="runs/lr-find.png", show_default=True, type=click.Path(dir_okay=False)
)
@click.option("--steps", default=200, show_default=True, type=click.IntRange(min=10))
@click.option("--json", "as_json", is_flag=True)
def lr_find(arch: str, png: str, steps: int, as_json: bool) -> None:
    """Learning-rate range test: loss against an exponentially rising rate, as a PNG."""
    with needs_train_extra():
        from training.lr_find import lr_find as run_lr_find
    try:
        result = run_lr_find(
            arch=arch, png=Path(png), steps=steps, data_dir=get_settings().mnist_dir
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(result)
    else:
        click.echo(
            f"lowest loss at {result['min_loss_rate']:.1e}; suggested rate "
            f"{result['suggested_rate']:.1e} (recipe uses {result['recipe_rate']:.1e}); "
            f"plot: {result['png']}"
        )


@click.command()
@click.option("--max-trials", default=6, show_default=True, type=click.IntRange(min=1))
@click.option("--max-minutes", default=20.0, show_default=True, type=click.FloatRange(min=0.1))
@click.option("--epochs", default=2, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--limit",
    default=20_000,
    show_default=True,
    type=click.IntRange(min=64),
    help="Training images per trial.",
)
@click.option(
    "--out", "out_dir", default="runs/tune", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--json", "as_json", is_flag=True)
def tune(
    max_trials: int, max_minutes: float, epochs: int, limit: int, out_dir: str, as_json: bool
) -> None:
    """KerasTuner random search over report A's space (filters, kernel, learning rate).

    Scored on the validation split; stops after --max-trials or, between
    trials, once --max-minutes have passed.
    """
    with needs_train_extra():
        from training.tune import tune as run_tune
    result = run_tune(
        out_dir=Path(out_dir),
        max_trials=max_trials,
        max_minutes=max_minutes,
        epochs=epochs,
        limit=limit,
        data_dir=get_settings().mnist_dir,
    )
    if as_json:
        echo_json(result)
        return
    for trial in result["trials"]:
        click.echo(f"val_accuracy {trial['val_accuracy']}: {trial['hyperparameters']}")
    click.echo(f"stopped by {result['stopped_by']}")


COMMANDS = (
    train,
    finish,
    quantize,
    ensemble,
    lr_find,
    tune,
)
