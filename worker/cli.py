"""The ``fashion`` command: run the worker, submit uploads, classify files, train.

Every command reads its configuration from ``FASHION_*`` environment variables
(see ``worker.config``); with none set it runs on the embedded defaults.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from worker.config import get_settings


def _echo_json(payload: object) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Classify clothing photos and offer similar in-stock items.

    Uploads are stored in object storage, queued on Celery, classified by a
    Fashion-MNIST CNN and written to the product catalog. Configure with
    FASHION_* environment variables; with none set, everything runs locally
    (SQLite, a folder, a filesystem queue).
    """


@main.command()
@click.option("--timeout", default=90.0, show_default=True, help="Seconds to wait for results.")
def demo(timeout: float) -> None:
    """Seed a sample catalog, start a worker, classify sample uploads, print results."""
    from worker.demo import run_demo

    sys.exit(run_demo(get_settings(), timeout=timeout))


@main.command()
def migrate() -> None:
    """Create or upgrade the catalog tables (Alembic) in FASHION_DATABASE_URL."""
    from catalog.db import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    click.echo("catalog schema is up to date")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "-Q", "--queues", default=None, help="Comma-separated queues [default: interactive,bulk]."
)
@click.option(
    "-c", "--concurrency", type=int, default=None, help="Worker processes [default: cores]."
)
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(queues: str | None, concurrency: int | None, loglevel: str, celery_args: tuple) -> None:
    """Run a Celery worker; extra arguments go to `celery worker` unchanged."""
    from worker.celery_app import app

    settings = get_settings()
    argv = ["worker", f"--loglevel={loglevel}"]
    argv.append(f"--queues={queues or f'{settings.interactive_queue},{settings.bulk_queue}'}")
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main([*argv, *celery_args])


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--wait/--no-wait", default=False, help="Wait for the results and print them.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait with --wait.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def submit(files: tuple[str, ...], wait: bool, timeout: float, as_json: bool) -> None:
    """Upload FILES and queue them for classification (prints job ids)."""
    from worker import client

    settings = get_settings()
    job_ids = {}
    for name in files:
        path = Path(name)
        try:
            job_ids[client.submit(path.read_bytes(), path.name, settings=settings)] = name
        except client.SubmitError as exc:
            raise click.ClickException(str(exc)) from exc
    if not wait:
        for job_id, name in job_ids.items():
            _echo_json({"file": name, "job_id": job_id}) if as_json else click.echo(
                f"{job_id}  {name}"
            )
        return
    results = client.wait(job_ids, timeout=timeout, settings=settings)
    unfinished = 0
    for job_id, name in job_ids.items():
        job = results[job_id]
        unfinished += not (job and job.finished)
        if as_json:
            _echo_json({"file": name, **(job.as_dict() if job else {"job_id": job_id})})
        else:
            click.echo(f"{name}: {_describe(job)}")
    if unfinished:
        raise click.ClickException(f"{unfinished} job(s) did not finish within {timeout:.0f} s")


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def result(job_id: str, as_json: bool) -> None:
    """Show the state of job JOB_ID and its similar in-stock items."""
    from worker import client

    job = client.result(job_id)
    if job is None:
        raise click.ClickException(f"no job with id {job_id!r}")
    click.echo(json.dumps(job.as_dict()) if as_json else _describe(job))


def _describe(job: object) -> str:
    if job is None:
        return "unknown job"
    if job.status == "done":
        skus = ", ".join(item["sku"] for item in job.similar) or "none in stock"
        return f"{job.name} ({job.confidence:.1%}); similar: {skus}"
    if job.status == "failed":
        return f"failed: {job.error['code']}: {job.error['message']}"
    return job.status


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def classify(files: tuple[str, ...], as_json: bool) -> None:
    """Classify FILES synchronously, without a broker or database.

    Prints one line per file: the label (0-9), its name and the confidence, or
    an error with a stable code. Exits 0 when every file got a line.
    """
    from worker.classify import classify_files

    for line in classify_files([Path(name) for name in files], get_settings()):
        if as_json:
            _echo_json(line)
        elif "error" in line:
            click.echo(f"{line['file']}: error {line['error']['code']}: {line['error']['message']}")
        else:
            click.echo(f"{line['file']}: {line['name']} ({line['confidence']:.1%})")


@main.command()
@click.option("--arch", default="small-cnn", show_default=True, help="Architecture name.")
@click.option("--epochs", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--out", "out_dir", default="runs/latest", show_default=True, type=click.Path(file_okay=False)
)
def train(arch: str, epochs: int, seed: int, out_dir: str) -> None:
    """Train ARCH on Fashion-MNIST and export model.tflite with its model card.

    Needs the [train] extra (TensorFlow) and the data set (see README). The
    validation set comes from the training split; the test set is used once,
    for the accuracy on the model card.
    """
    try:
        from training.data import DatasetNotFoundError
        from training.train import train as run_training
    except ImportError as exc:
        raise click.ClickException(
            f"training needs TensorFlow: pip install '.[train]' ({exc})"
        ) from exc
    try:
        outcome = run_training(
            arch=arch,
            epochs=epochs,
            seed=seed,
            out_dir=Path(out_dir),
            data_dir=get_settings().mnist_dir,
        )
    except (DatasetNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(outcome.card, indent=2))


if __name__ == "__main__":
    main()
