"""``fashion evaluate`` and ``baselines``: scoring a model on the test split or on
real photos, and the classic baselines beside it (``training``, the ``[train]`` extra)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from worker.cli.common import (
    echo_json,
    mapping_option,
    model_option,
    needs_train_extra,
    percent,
)
from worker.config import ENGINES, get_settings


@click.command()
@model_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--report", "report_dir", type=click.Path(file_okay=False), help="Write PNG plots here."
)
@click.option(
    "--photos",
    "photos_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Score real photos in DIR/<class>/<image> instead of the test split.",
)
@mapping_option
@click.option(
    "--no-cutout",
    is_flag=True,
    help="With --photos: skip the foreground cut-out, to measure what it brings.",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    help="Which artifact runs (default: FASHION_MODEL_ENGINE, else the card's default_engine).",
)
def evaluate(
    model_path: str | None,
    as_json: bool,
    report_dir: str | None,
    photos_dir: str | None,
    mapping_path: str | None,
    no_cutout: bool,
    engine: str | None,
) -> None:
    """Score a model on the Fashion-MNIST test split, as the worker runs it.

    Accuracy, per-class precision/recall/F1, confusion matrix and expected
    calibration error; with --report, PNGs of the confusion matrix, the
    reliability diagram and the most confident mistakes.

    With --photos DIR: real photos through the worker's own pipeline; accuracy
    on the classes the mapping scores (per class too), their confusion, the
    share of out-of-catalog photos flagged uncertain, and with --report a PNG
    grid of examples.
    """
    with needs_train_extra():
        from training.data import DatasetNotFoundError
        from training.evaluate import evaluate as run_evaluation
    from worker.pipeline.classifier import model_path as default_model_path

    settings = get_settings()
    engine = engine or settings.model_engine
    if photos_dir is not None:
        _evaluate_photos(
            engine,
            Path(model_path) if model_path else default_model_path(settings),
            Path(photos_dir),
            Path(mapping_path) if mapping_path else None,
            Path(report_dir) if report_dir else None,
            as_json,
            cutout=not no_cutout,
        )
        return
    try:
        result = run_evaluation(
            Path(model_path) if model_path else default_model_path(settings),
            data_dir=settings.mnist_dir,
            report_dir=Path(report_dir) if report_dir else None,
            engine=engine,
        )
    except DatasetNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"model {result['model_version']}: accuracy {result['accuracy']:.2%}, "
        f"ECE {result['ece']:.2%} on {result['images']} test images"
    )
    for name, scores in result["per_class"].items():
        click.echo(
            f"  {name:<12} precision {scores['precision']:.3f}  recall "
            f"{scores['recall']:.3f}  F1 {scores['f1']:.3f}"
        )
    for name, path in result.get("plots", {}).items():
        click.echo(f"  {name}: {path}")


def _evaluate_photos(
    engine: str | None,
    model: Path,
    folder: Path,
    mapping_path: Path | None,
    report_dir: Path | None,
    as_json: bool,
    *,
    cutout: bool,
) -> None:
    from training.photo_folders import PhotoFolderError, mapping_for
    from training.photos import evaluate_photos
    from worker.pipeline.classifier import Classifier

    try:
        result = evaluate_photos(
            folder,
            Classifier(model, engine=engine),
            mapping=mapping_for(folder, mapping_path),
            report_dir=report_dir,
            cutout=cutout,
        )
    except PhotoFolderError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"model {result['model_version']}: accuracy {result['accuracy']:.1%} on "
        f"{result['scored_photos']} photos of mapped classes; uncertain: "
        f"{percent(result['uncertain_out_of_catalog'])} of {result['out_of_catalog_photos']} "
        f"out-of-catalog photos, {percent(result['uncertain_scored'])} of mapped ones"
    )
    for name, scores in result["per_class"].items():
        click.echo(
            f"  {name:<12} accuracy {scores['accuracy']:.1%}  uncertain "
            f"{scores['uncertain']:.1%}  ({scores['photos']} photos)"
        )
    for path, code in result["unreadable"].items():
        click.echo(f"  unreadable: {path}: {code}")
    for name, path in result.get("plots", {}).items():
        click.echo(f"  {name}: {path}")


@click.command("compare-photos")
@click.argument("photos_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("candidate", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--against",
    "baseline",
    type=click.Path(exists=True, dir_okay=False),
    help="The model to compare with: a .tflite with model_card.json beside it "
    "[default: the model the worker uses].",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    help="The candidate's artifact [default: its card's default_engine].",
)
@click.option(
    "--against-engine",
    type=click.Choice(ENGINES),
    help="The baseline's artifact [default: FASHION_MODEL_ENGINE for the worker's "
    "model, else the card's default_engine].",
)
@click.option(
    "--margin",
    type=click.IntRange(min=0),
    help="Non-inferiority margin, in photos: exit 1 if the candidate gets more than "
    "this many fewer mapped photos right than the baseline.",
)
@mapping_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def compare_photos(
    photos_dir: str,
    candidate: str,
    baseline: str | None,
    engine: str | None,
    against_engine: str | None,
    margin: int | None,
    mapping_path: str | None,
    as_json: bool,
) -> None:
    """Compare model CANDIDATE with the shipped one on the real photos in
    PHOTOS_DIR/<class>/<image>, photo by photo.

    Both models judge the same photos through the worker's pipeline. Prints each
    model's mapped accuracy and flag rates, how many photos only one of them gets
    right, the exact McNemar p-value and the standard error of the difference.
    On a few hundred photos, equally good models differ by several photos, so a
    release is judged by a margin fixed in advance (--margin), not by a photo.
    """
    with needs_train_extra():
        from training.photo_compare import compare_photos as run_comparison
        from training.photo_folders import PhotoFolderError, mapping_for
    from worker.pipeline.classifier import Classifier, ModelError
    from worker.pipeline.classifier import model_path as default_model_path

    settings = get_settings()
    folder = Path(photos_dir)
    try:
        if baseline is None:
            baseline_model = Classifier(
                default_model_path(settings), engine=against_engine or settings.model_engine
            )
        else:
            baseline_model = Classifier(Path(baseline), engine=against_engine)
        result = run_comparison(
            folder,
            Classifier(Path(candidate), engine=engine),
            baseline_model,
            mapping=mapping_for(folder, Path(mapping_path) if mapping_path else None),
            margin=margin,
        )
    except (ModelError, PhotoFolderError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(result)
    else:
        _print_comparison(result)
    if result["non_inferior"] is False:
        raise click.exceptions.Exit(1)


def _print_comparison(result: dict) -> None:
    count = result["scored_photos"]
    for role, model in result["models"].items():
        click.echo(
            f"{role:<9} {model['model_version']}: {model['correct']} of {count} mapped photos "
            f"right ({model['accuracy']:.2%}); uncertain: {percent(model['uncertain_scored'])} "
            f"of mapped, {percent(model['uncertain_out_of_catalog'])} of "
            f"{result['out_of_catalog_photos']} out-of-catalog"
        )
    click.echo(
        f"paired: {result['both_right']} right for both, {result['both_wrong']} wrong for "
        f"both, {result['only_candidate']} right only for the candidate, "
        f"{result['only_baseline']} only for the baseline"
    )
    click.echo(
        f"difference {result['difference_photos']:+d} photos ({result['difference']:+.2%}, "
        f"standard error {result['standard_error']:.2%}); exact McNemar p {result['mcnemar_p']}"
    )
    if result["margin_photos"] is not None:
        verdict = "non-inferior" if result["non_inferior"] else "NOT non-inferior"
        click.echo(f"margin {result['margin_photos']} photos: the candidate is {verdict}")
    for path, code in result["unreadable"].items():
        click.echo(f"  unreadable: {path}: {code}")


@click.command()
@click.option(
    "--cv",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Cross-validation folds on the training split (0: none).",
)
@click.option("--only", multiple=True, help="Run only these baselines (repeatable).")
@click.option(
    "--cards",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CNN model_card.json files to list beside the classic rows.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def baselines(cv: int, only: tuple[str, ...], cards: tuple[str, ...], as_json: bool) -> None:
    """The classic-ML comparison: kNN, nearest mean, LDA, QDA (PCA), 3-layer MLP.

    Each is trained on the training split and scored on the test split, and by
    --cv-fold cross-validation on the training split. Prints a markdown table
    (with the CNN rows from --cards) or, with --json, one object.
    """
    with needs_train_extra():
        from rich.console import Console

        from training.baselines import markdown_table, run_baselines
    console = Console(stderr=True)
    with console.status("fitting baselines") as status:
        try:
            rows = run_baselines(
                cv=cv,
                only=list(only) or None,
                data_dir=get_settings().mnist_dir,
                on_progress=lambda name: status.update(f"fitting {name} (cv={cv})"),
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    cnn_cards = [json.loads(Path(card).read_text()) for card in cards]
    if as_json:
        echo_json({"baselines": rows, "cnn": cnn_cards})
    else:
        click.echo(markdown_table(rows, cnn_cards))


COMMANDS = (evaluate, compare_photos, baselines)
