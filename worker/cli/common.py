"""What the command groups share: JSON output, job lines, option stacks, the
``[train]`` extra's guard."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from catalog.codes import JobStatus


def echo_json(payload: object) -> None:
    """One JSON object on one line (what every ``--json`` prints)."""
    click.echo(json.dumps(payload, ensure_ascii=False))


def describe(job: object) -> str:
    """One line for a job: its answer and similar SKUs, its error, or its state."""
    if job is None:
        return "unknown job"
    if job.status == JobStatus.DONE:
        skus = ", ".join(item["sku"] for item in job.similar) or "none in stock"
        flag = ", uncertain" if job.uncertain else ""
        return f"{job.name} ({job.confidence:.1%}{flag}); similar: {skus}"
    if job.status == JobStatus.FAILED:
        return f"failed: {job.error['code']}: {job.error['message']}"
    return job.status


model_option = click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, dir_okay=False),
    help="A .tflite with model_card.json beside it [default: the model the worker uses].",
)
mapping_option = click.option(
    "--mapping",
    "mapping_path",
    type=click.Path(exists=True, dir_okay=False),
    help="JSON: photo class → Fashion-MNIST class indices, null (not in the catalog) "
    'or "skip" [default: the clothing-photos mapping].',
)

set_loss_option = click.option(
    "--set-loss",
    "set_loss",
    type=click.Choice(["sum", "max"]),
    default="max",
    show_default=True,
    help="For a photo that may be any of several classes (shoes): -log of their summed "
    "probability (sum; the probability may spread over them) or of the largest one (max; "
    "the model commits to one, so its confidence is not split).",
)


def photo_repeat_option(default: int, help: str) -> Callable[[Callable], Callable]:
    """``--photo-repeat``: times each photo appears per epoch (its default differs
    between training from the start and photo-tuning)."""
    return click.option(
        "--photo-repeat", default=default, show_default=True, type=click.IntRange(min=1), help=help
    )


@contextmanager
def needs_train_extra() -> Iterator[None]:
    """Around the imports of a command that needs the ``[train]`` extra (TensorFlow,
    scikit-learn…), which the worker install lacks: a clear error, not a traceback."""
    try:
        yield
    except ImportError as exc:
        raise click.ClickException(
            f"this command needs the training extra: pip install '.[train]' ({exc})"
        ) from exc


def spread(figures: dict[str, float] | None) -> str:
    if figures is None:
        return "n/a"
    return f"{percent(figures['median'])} [{percent(figures['p10'])}, {percent(figures['p90'])}]"


def percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"
