"""``fashion reviews …``: what reviewers answered on the review page (/review)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from worker.cli.common import echo_json
from worker.config import get_settings


@click.group()
def reviews() -> None:
    """Reviewers' answers from the review page: export them for the photo tools."""


@reviews.command(name="export")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Only answers given on or after this date (UTC).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def reviews_export(folder: str, since: dt.datetime | None, as_json: bool) -> None:
    """Write the reviewed photos to FOLDER/<answer>/<photo>, with FOLDER/mapping.json.

    The layout `fashion evaluate --photos FOLDER`, `fashion fit-photo-threshold
    FOLDER` and `fashion finetune-photos --photos FOLDER` read (they pick up the
    mapping by themselves): one folder per category answered and `out-of-catalog`.
    A photo goes where most of its reviewers put it; skips are not answers, an even
    split is left out. Exporting again into FOLDER rewrites, never duplicates.
    """
    from worker.review_export import export_reviews

    report = export_reviews(
        Path(folder),
        settings=get_settings(),
        since=None if since is None else since.replace(tzinfo=dt.UTC),
    )
    if as_json:
        echo_json(report.as_dict())
        return
    parts = ", ".join(f"{name} {count}" for name, count in sorted(report.written.items()))
    click.echo(
        f"exported {report.photos} reviewed photo(s) to {folder}" + (f": {parts}" if parts else "")
    )
    if report.split:
        click.echo(f"left out {report.split} photo(s) whose reviewers split evenly")
    for line in report.missing:
        click.echo(f"not exported: {line}", err=True)


COMMANDS = (reviews,)
