"""``fashion finetune-photos``, ``fit-photo-threshold``, ``pack-photos`` and
``split-photos``: tuning the model for real photos (``training``, the ``[train]`` extra)."""

from __future__ import annotations

from pathlib import Path

import click

from worker.cli.common import (
    echo_json,
    mapping_option,
    model_option,
    needs_train_extra,
    percent,
    photo_repeat_option,
    set_loss_option,
    spread,
)
from worker.config import get_settings


@click.command("finetune-photos")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--photos",
    "photos_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Training photos in DIR/<class>/<image> (never the folder you report on).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@mapping_option
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--learning-rate", default=3e-4, show_default=True, type=click.FloatRange(min=0))
@photo_repeat_option(
    5, "Times each photo appears per epoch, beside the run's Fashion-MNIST images."
)
@set_loss_option
@click.option(
    "--freeze-norm",
    is_flag=True,
    help="Keep the batch-norm layers as trained (statistics and scales): for nets with "
    "many of them (resnet20), whose Fashion-MNIST accuracy otherwise drops ~0.9 points.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Use only N Fashion-MNIST images.")
def finetune_photos(
    run_dir: str,
    photos_dir: str,
    out_dir: str,
    mapping_path: str | None,
    epochs: int,
    learning_rate: float,
    photo_repeat: int,
    set_loss: str,
    freeze_norm: bool,
    limit: int | None,
) -> None:
    """Fine-tune a trained run (fashion train's --out) on real photos mixed with its
    Fashion-MNIST training images; writes a run folder for `fashion ensemble`."""
    with needs_train_extra():
        from training.photo_data import targets_for_folder
        from training.photo_finetune import finetune_on_photos
        from training.photo_folders import PhotoFolderError
    try:
        targets = targets_for_folder(Path(photos_dir), Path(mapping_path) if mapping_path else None)
        card = finetune_on_photos(
            Path(run_dir),
            Path(photos_dir),
            out_dir=Path(out_dir),
            targets=targets,
            epochs=epochs,
            learning_rate=learning_rate,
            photo_repeat=photo_repeat,
            loss=set_loss,
            freeze_norm=freeze_norm,
            limit=limit,
            data_dir=get_settings().mnist_dir,
        )
    except (ValueError, PhotoFolderError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{card['version']}: Fashion-MNIST validation {card['validation_accuracy']:.2%} "
        f"after {card['photo_finetune']['seconds']:.0f} s on "
        f"{card['photo_finetune']['photos']} photos; written to {out_dir}"
    )


@click.command("fit-photo-threshold")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@model_option
@mapping_option
@click.option(
    "--max-flagged",
    default=0.12,
    show_default=True,
    type=click.FloatRange(min=0, max=1, max_open=True),
    help="Flag budget: the largest share of in-catalog photos to flag uncertain.",
)
@click.option(
    "--repeats",
    default=200,
    show_default=True,
    type=click.IntRange(min=1),
    help="Random half-splits for the estimate on photos the threshold was not fitted on.",
)
@click.option("--write", is_flag=True, help="Store the threshold in the model card.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def fit_photo_threshold(
    folder: str,
    model_path: str | None,
    mapping_path: str | None,
    max_flagged: float,
    repeats: int,
    write: bool,
    as_json: bool,
) -> None:
    """Fit the confidence threshold below which a photo on a busy background is
    flagged uncertain (FOLDER/<class>/<image>, mapped as for `fashion evaluate
    --photos`): the highest one flagging at most --max-flagged of the in-catalog
    photos. Prints what it flags on FOLDER and, by repeated half-splits, on photos
    it was not fitted on; --write stores it in the model card."""
    from worker.pipeline.classifier import model_path as default_model_path

    with needs_train_extra():
        from training.photo_folders import PhotoFolderError, mapping_for
        from training.photo_threshold import fit_photo_threshold as fit
    try:
        result = fit(
            Path(folder),
            Path(model_path) if model_path else default_model_path(get_settings()),
            mapping=mapping_for(Path(folder), Path(mapping_path) if mapping_path else None),
            max_flagged=max_flagged,
            repeats=repeats,
            write=write,
        )
    except (PhotoFolderError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if result["warning"]:
        click.echo(f"warning: {result['warning']}", err=True)
    if as_json:
        echo_json(result)
        return
    fit_figures, cross = result["fit"], result["fit"]["cross_fit"]
    previous = result["previous_photo_uncertain_threshold"]
    click.echo(
        f"model {result['model_version']}: photo threshold {result['photo_uncertain_threshold']} "
        f"(was {'not set' if previous is None else previous}; product-image threshold "
        f"{result['uncertain_threshold']})"
    )
    click.echo(
        f"  on {fit_figures['photos']} photos of {folder}: flags "
        f"{percent(fit_figures['mapped_flagged'])} of {fit_figures['mapped_photos']} in-catalog, "
        f"{percent(fit_figures['out_of_catalog_flagged'])} of "
        f"{fit_figures['out_of_catalog_photos']} out-of-catalog; answers kept "
        f"{percent(fit_figures['accuracy_kept'])} right"
    )
    click.echo(
        f"  on unseen halves ({cross['repeats']} splits, median [p10, p90]): in-catalog flagged "
        f"{spread(cross['mapped_flagged'])}, out-of-catalog flagged "
        f"{spread(cross['out_of_catalog_flagged'])}"
    )
    click.echo(f"  written to {result['written']}" if write else "  not written (add --write)")


@click.command("pack-photos")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="The pack to write (FILE.npz).",
)
@mapping_option
def pack_photos(folder: str, out: str, mapping_path: str | None) -> None:
    """Put every photo of FOLDER (FOLDER/<class>/<image>) through the worker's
    pipeline once and write the 28×28 pixels, their classes and the folder's mapping
    to one file, which `fashion train --photos` takes in the folder's place: minutes
    of decoding saved on each training run, and what a GPU machine is sent."""
    with needs_train_extra():
        from training.photo_data import pack_photos as pack
        from training.photo_folders import PhotoFolderError
    try:
        result = pack(Path(folder), Path(out), Path(mapping_path) if mapping_path else None)
    except PhotoFolderError as exc:
        raise click.ClickException(str(exc)) from exc
    classes = ", ".join(f"{name} {count}" for name, count in result["per_class"].items())
    click.echo(f"{result['photos']} photos packed into {out} ({classes})")
    if result["unreadable"]:
        click.echo(f"  {result['unreadable']} unreadable files left out")


@click.command("split-photos")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option(
    "--held-out",
    default=0.2,
    show_default=True,
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    help="Share of each class's photos to hold out.",
)
@click.option("--seed", default=1, show_default=True, type=int)
def split_photos(folder: str, out: str, held_out: float, seed: int) -> None:
    """Split FOLDER (FOLDER/<class>/<image>) into OUT/fit/ and OUT/held-out/, class
    by class (links, not copies): train with --photos OUT/fit, then fit the photo
    threshold on OUT/held-out, photos the model never saw."""
    with needs_train_extra():
        from training.photo_folders import PhotoFolderError
        from training.photo_folders import split_photos as split
    try:
        counts = split(Path(folder), Path(out), held_out, seed)
    except PhotoFolderError as exc:
        raise click.ClickException(str(exc)) from exc
    for part, classes in counts.items():
        listed = ", ".join(f"{name} {count}" for name, count in classes.items())
        click.echo(f"{Path(out) / part}: {sum(classes.values())} photos ({listed})")


COMMANDS = (finetune_photos, fit_photo_threshold, pack_photos, split_photos)
