"""``fashion catalog …``: import, export, audit, similar items, one product."""

from __future__ import annotations

import json
from pathlib import Path

import click

from worker.cli.common import echo_json
from worker.config import get_settings


@click.group()
def catalog() -> None:
    """The product catalog: import, export, audit, similar items, one product."""


@catalog.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--queue/--no-queue",
    default=True,
    show_default=True,
    help="Queue new or changed photos for classification on the bulk queue.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def catalog_import(file: str, queue: bool, as_json: bool) -> None:
    """Upsert products from a CSV or JSON-lines FILE (by sku).

    Columns: sku, name, category, price, stock_quantity, and image (a photo path
    inside FILE's folder) or image_key (an object already under products/ in
    storage). Every row stands alone: a bad row (bad value, NUL, oversized field,
    bytes that are not UTF-8) is reported with its row number and never stops the
    import; a photo that is missing, outside FILE's folder or not an accepted image
    is reported and the product is imported without one. Photos are stored under
    their content's hash: a changed photo is classified again.
    """
    from rich.progress import Progress

    from catalog.db import upgrade
    from worker.service.catalog_import import import_catalog

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    path = Path(file)
    with Progress(transient=True, disable=as_json) as progress:
        bar = progress.add_task(f"importing {path.name}", total=None)
        try:
            report = import_catalog(
                path, settings=settings, queue=queue, on_row=lambda: progress.advance(bar)
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(report.as_dict())
        return
    click.echo(
        f"inserted {report.inserted}, updated {report.updated}, "
        f"rejected {len(report.rejected)}, missing photos {len(report.missing_photos)}, "
        f"queued for classification {report.queued}"
    )
    for problem in report.rejected:
        click.echo(f"  row {problem.row}: rejected: {problem.reason}")
    for problem in report.missing_photos:
        click.echo(f"  row {problem.row}: {problem.reason}")


#: A cell starting with one of these is a formula to Excel, LibreOffice and Sheets.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula, quoted with a leading
    apostrophe (OWASP's advice against CSV injection); everything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


@catalog.command(name="export")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.option("--out", type=click.Path(dir_okay=False), help="File to write [default: stdout].")
def catalog_export(fmt: str, out: str | None) -> None:
    """Write every product, with its predicted category and confidence."""
    import csv
    import io

    from catalog.db import get_sessionmaker
    from catalog.queries import all_products

    columns = [
        "sku",
        "name",
        "category",
        "price",
        "stock_quantity",
        "image_key",
        "predicted_category",
        "predicted_confidence",
        "model_version",
    ]
    with get_sessionmaker(get_settings().resolved_database_url)() as session:
        rows = [
            {
                **{column: getattr(product, column) for column in columns[:6]},
                **_live_fields(product.live_prediction),
            }
            for product in all_products(session=session)
        ]
    buffer = io.StringIO()
    if fmt == "csv":
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(
            {column: spreadsheet_safe(value) for column, value in row.items()} for row in rows
        )
    else:
        for row in rows:
            buffer.write(json.dumps(row, default=str) + "\n")
    if out:
        Path(out).write_text(buffer.getvalue())
    else:
        click.echo(buffer.getvalue(), nl=False)


@catalog.command(name="audit")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def catalog_audit(limit: int | None, as_json: bool) -> None:
    """Products whose photo shows another category than listed: as a reviewer said
    (on the review page; listed first), else as the model predicts (most confident
    first). A product a reviewer confirmed as listed is left out."""
    from catalog.db import get_sessionmaker
    from catalog.queries import audit_mismatches

    with get_sessionmaker(get_settings().resolved_database_url)() as session:
        products = audit_mismatches(session=session, limit=limit)
    for product in products:
        live = _live_fields(product.live_prediction)
        confidence = live["predicted_confidence"]
        line = {
            "sku": product.sku,
            "name": product.name,
            "listed": product.category,
            "predicted": live["predicted_category"],
            "confidence": None if confidence is None else round(confidence, 4),
            "model_version": live["model_version"],
            "reviewed": product.reviewed_category,
        }
        if as_json:
            echo_json(line)
        elif line["reviewed"] is not None:
            click.echo(
                f"{line['sku']}: listed {line['listed']}, a reviewer says the photo shows "
                f"{line['reviewed']}"
            )
        else:
            click.echo(
                f"{line['sku']}: listed {line['listed']}, photo looks like "
                f"{line['predicted']} ({line['confidence']:.1%})"
            )
    if not products and not as_json:
        click.echo("no product's photo disagrees with its category")


@catalog.command(name="similar")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--png", type=click.Path(dir_okay=False), help="Draw the upload and its items here.")
def catalog_similar(job_id: str, as_json: bool, png: str | None) -> None:
    """The in-stock products recorded as similar to job JOB_ID's upload, best first."""
    from catalog.db import get_sessionmaker
    from catalog.queries import get_job, similar_for_job

    settings = get_settings()
    with get_sessionmaker(settings.resolved_database_url)() as session:
        similar = similar_for_job(session=session, job_id=job_id)
        job = get_job(session=session, job_id=job_id)
        keys = {}
        if similar:
            from catalog.queries import get_product

            keys = {
                item.sku: get_product(session=session, sku=item.sku).image_key for item in similar
            }
    if similar is None:
        raise click.ClickException(f"no job with id {job_id!r}")
    if png:
        _draw_similar(settings, job, similar, keys, Path(png))
    if as_json:
        echo_json(
            {
                "job_id": job_id,
                "status": job.status,
                "label": job.label_name,
                "similar": [
                    {
                        "rank": s.rank,
                        "sku": s.sku,
                        "name": s.name,
                        "category": s.category,
                        "price": str(s.price),
                        "stock_quantity": s.stock_quantity,
                        "score": s.score,
                    }
                    for s in similar
                ],
            }
        )
        return
    click.echo(f"job {job_id}: {job.status}, {job.label_name or '-'}")
    for item in similar:
        click.echo(
            f"  #{item.rank} {item.sku} {item.name} ({item.category}, "
            f"{item.price}, {item.stock_quantity} in stock) score {item.score:.3f}"
        )
    if png:
        click.echo(f"picture: {png}")


def _draw_similar(settings, job, similar, keys, path: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from worker.cli.picture import draw_similar, fetch_photos
    from worker.errors import FashionError
    from worker.pipeline.preprocess import preprocess
    from worker.storage import get_store

    store = get_store(settings)
    upload = store.get(job.image_key, max_bytes=settings.max_upload_bytes)
    try:
        model_input = Image.fromarray(
            preprocess(
                upload, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
            )
        )
    except FashionError:
        model_input = None
    draw_similar(
        upload=upload,
        model_input=model_input,
        label=job.label_name or job.status,
        similar=similar,
        photos=fetch_photos(store, keys, max_bytes=settings.max_upload_bytes),
        path=path,
    )


@catalog.command(name="show")
@click.argument("sku")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def catalog_show(sku: str, as_json: bool) -> None:
    """One product: listing, stock and what the model sees in its photo."""
    from catalog.db import get_sessionmaker
    from catalog.queries import get_product

    with get_sessionmaker(get_settings().resolved_database_url)() as session:
        product = get_product(session=session, sku=sku)
        if product is None:
            raise click.ClickException(f"no product with sku {sku!r}")
        live = product.live_prediction
        fields = {
            "sku": product.sku,
            "name": product.name,
            "category": product.category,
            "price": str(product.price),
            "stock_quantity": product.stock_quantity,
            "image_key": product.image_key,
            **_live_fields(live),
            "classification_error": None if live is None else live.error,
        }
    if as_json:
        echo_json(fields)
    else:
        for key, value in fields.items():
            click.echo(f"{key:>21}: {value}")


def _live_fields(prediction) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """What the live model version said of a product's photo (``None``s: nothing yet)."""
    return {
        "predicted_category": None if prediction is None else prediction.predicted_category,
        "predicted_confidence": None if prediction is None else prediction.confidence,
        "model_version": None if prediction is None else prediction.model_version,
    }


COMMANDS = (catalog,)
